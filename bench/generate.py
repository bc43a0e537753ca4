"""Dataset generation throughput against a server with fixed latency and a capacity limit.

A loopback OpenAI-compatible server (``tests/llm_server.py``) answers every chat request after a
fixed latency, serving at most ``--capacity`` requests at once (more get 429). The answers come from
the scripted teacher of the tests (grounded pairs from the chunk in the prompt). In one process:

1. the peer: a sequential client, one chunk after another through the same provider client with
   concurrency 1 (what a plain ``for chunk in chunks: client.chat(...)`` loop does);
2. ours: :func:`finetuneflow.dataset.generate.generate` with concurrency = capacity.

Printed per side: examples/s, the share of the server's capacity kept busy, the most requests in
flight and the requests refused for being over capacity. Target (printed, never asserted): ours
uses >= 90% of capacity with no request beyond the configured concurrency.

    python bench/generate.py [--chunks 64] [--latency 0.2] [--capacity 4]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from dataset.teacher import teacher  # noqa: E402
from llm_server import ScriptedServer  # noqa: E402

from finetuneflow.dataset.generate import AnswerCache, ChunkIn, GenerateConfig, Generated, generate  # noqa: E402
from finetuneflow.dataset.presets import ProviderConfig  # noqa: E402
from finetuneflow.dataset.provider import Provider  # noqa: E402
from finetuneflow.events import Emitter  # noqa: E402

TARGET_UTILIZATION = 0.9
SENTENCE = "The {n}th relay of the Larkhollow pump restarts the flow within {s} seconds after a fault."


def make_chunks(count: int) -> list[ChunkIn]:
    text = " ".join(SENTENCE.format(n=i + 2, s=5 + i) for i in range(6))
    return [ChunkIn(i + 1, f"doc{i % 8}.md", f"Chunk {i}. {text}", 120) for i in range(count)]


def run(srv: ScriptedServer, chunks: list[ChunkIn], concurrency: int) -> tuple[float, int, float, int]:
    """Seconds, examples kept, capacity used and most requests in flight of one generation pass."""
    srv.reset_stats()
    cfg = ProviderConfig(preset="custom", base_url=srv.url, model="test-model", concurrency=concurrency)
    kept: list[int] = []

    def collect(result: Generated) -> None:
        kept.append(len(result.pairs))

    with Provider(cfg) as provider:
        start = time.perf_counter()
        stopped = generate(
            chunks, AnswerCache(provider, cfg.model, {}), GenerateConfig(), collect, Emitter("bench", None)
        )
        seconds = time.perf_counter() - start
        if stopped:
            raise SystemExit(f"generation stopped: {stopped}")
        in_flight = provider.max_in_flight
    return seconds, sum(kept), srv.utilization(seconds), in_flight


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per request")
    parser.add_argument("--capacity", type=int, default=4, help="requests the server serves at once")
    args = parser.parse_args()
    chunks = make_chunks(args.chunks)
    print(f"{args.chunks} chunks, server latency {args.latency}s, capacity {args.capacity}")
    with ScriptedServer(teacher, latency_s=args.latency, capacity=args.capacity) as srv:
        results = {}
        for name, concurrency in (("sequential", 1), ("ours", args.capacity)):
            seconds, examples, used, in_flight = run(srv, chunks, concurrency)
            results[name] = (seconds, examples, used)
            print(
                f"{name:<11} {seconds:7.2f} s {examples / seconds:8.1f} examples/s  capacity used {used:6.1%}"
                f"  max in flight {in_flight} (limit {concurrency})  over capacity {srv.over_capacity}"
            )
            if srv.over_capacity or in_flight > concurrency:
                print(f"  {name}: requests beyond the configured concurrency!")
    ratio = results["ours"][1] / results["ours"][0] / (results["sequential"][1] / results["sequential"][0])
    used = results["ours"][2]
    print(
        f"throughput ratio ours/sequential: {ratio:.2f}x; capacity used {used:.1%}; "
        f"target >= {TARGET_UTILIZATION:.0%}: " + ("met" if used >= TARGET_UTILIZATION else "NOT met")
    )


if __name__ == "__main__":
    main()
