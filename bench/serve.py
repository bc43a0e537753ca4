"""`ftf serve` under 8 concurrent clients: continuous batching against one-at-a-time generation.

One process, one loaded model, two servers over real HTTP (uvicorn on a thread, the official
``openai`` client streaming every answer):

1. the peer: the same server with ``batch_size 1``: one request generates at a time and the others
   queue behind it, as in a server that serializes generation behind a lock;
2. ours: continuous batching (``batch_size 8``): requests join the running batch between steps.

Each of ``--clients`` threads sends ``--requests`` different questions one after another (greedy,
``--max-tokens`` each). Printed per side: requests/s, the mean and p90 time to first token, and the
ratios ours/peer. Greedy answers must be the same text on both sides (checked and printed).

    python bench/serve.py [--model smollm2-135m-instruct] [--clients 8] [--requests 2] [--max-tokens 48]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from finetuneflow.api.serving import ModelServer, Served, ServingSettings, load_served
from finetuneflow.serve.config import ServeConfig
from finetuneflow.serve.run import start_background

TOPICS = ["the printer cover", "a paper jam", "toner", "the fuser", "Wi-Fi setup", "duplex printing",
          "error E21", "the scanner glass", "firmware updates", "energy saving", "tray 2", "ink smears",
          "a grinding noise", "label printing", "driver install", "colour calibration"]  # fmt: skip


def client_run(url: str, model: str, questions: list[str], max_tokens: int) -> list[tuple[float, str]]:
    """(time to first token, answer) of each question, asked one after another, streamed."""
    from openai import OpenAI

    client = OpenAI(base_url=url, api_key="bench", max_retries=0, timeout=600)
    out = []
    for q in questions:
        start = time.perf_counter()
        first, pieces = None, []
        stream = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": q}], max_tokens=max_tokens,
            temperature=0, stream=True,
        )  # fmt: skip
        for chunk in stream:
            text = chunk.choices[0].delta.content if chunk.choices else None
            if text:
                first = first if first is not None else time.perf_counter() - start
                pieces.append(text)
        out.append((first if first is not None else time.perf_counter() - start, "".join(pieces)))
    return out


def measure(served: Served, batch: int, args: argparse.Namespace) -> dict[str, Any]:
    server = ModelServer(served, ServingSettings(batch_size=batch, max_tokens=args.max_tokens))
    background = start_background(server, ServeConfig(port=0))
    name = next(iter(served.adapters))
    jobs = [
        [f"In two sentences, what should I know about {TOPICS[(c * args.requests + r) % len(TOPICS)]}?"
         for r in range(args.requests)]
        for c in range(args.clients)
    ]  # fmt: skip
    try:
        start = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            results = list(pool.map(lambda qs: client_run(background.url, name, qs, args.max_tokens), jobs))
        seconds = time.perf_counter() - start
    finally:
        background.stop()
        server.close()
    flat = [r for rs in results for r in rs]
    ttft = sorted(t for t, _ in flat)
    return {
        "req_s": len(flat) / seconds,
        "seconds": seconds,
        "ttft_mean": statistics.mean(ttft),
        "ttft_p90": ttft[int(0.9 * (len(ttft) - 1))],
        "answers": [a for _, a in flat],
    }


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--model", default="smollm2-135m-instruct", help="base model (name or folder)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=2, help="questions per client, one after another")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    served = load_served("bench", base=args.model, device="cpu")
    print(f"model {args.model}, {args.clients} clients x {args.requests} requests, "
          f"max_tokens {args.max_tokens}, torch threads {args.threads}")  # fmt: skip
    peer = measure(served, 1, args)
    ours = measure(served, args.clients, args)
    for label, r in (("peer: one at a time (batch 1)", peer), ("ours: continuous batching", ours)):
        print(f"{label:32s} {r['req_s']:6.2f} req/s  TTFT mean {r['ttft_mean']:6.2f} s  "
              f"p90 {r['ttft_p90']:6.2f} s  ({r['seconds']:.1f} s)")  # fmt: skip
    same = sum(a == b for a, b in zip(peer["answers"], ours["answers"], strict=True))
    print(f"ratio ours/peer: {ours['req_s'] / peer['req_s']:.2f}x req/s; "
          f"TTFT mean 1/{peer['ttft_mean'] / ours['ttft_mean']:.1f} of the peer's")  # fmt: skip
    print(f"same greedy answer on both sides: {same}/{len(peer['answers'])}")
    sys.exit(0)


if __name__ == "__main__":
    main()
