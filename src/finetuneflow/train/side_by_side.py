"""Micro-batches side by side: a CPU step's micro-batches in threads, one core each.

With torch's threads splitting every op over two cores, each of a micro-batch's ~15k ops ends at
a barrier, and the small ones (norms, RoPE, the adapters' thin products) split badly: two threads
ran a step ~1.5x as fast as one. Two micro-batches at once, each on its own core with torch's ops
single-threaded, ran 1.62-1.75x (SmolLM2-135M, 512-token rows, bf16, AMD EPYC, 2026-12-06; see
README "Both cores"). torch runs an op on the thread that calls it when it has one thread, and
releases the GIL inside ops, so Python threads are enough. With more cores than micro-batches at
once, each thread gets its share of torch's threads (only two cores were measured).

Each thread takes its micro-batch's gradients with ``torch.autograd.grad`` (autocast is per
thread, so each enters its own); the caller then adds them into ``.grad`` in micro-batch order,
the same sums in the same order as backward's accumulation one micro-batch after another, so the
step does not depend on which thread finished first.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from finetuneflow.models.chat import Row
from finetuneflow.models.loss import rows_to_tensors


def safe(model: Any) -> bool:
    """Whether the model's steps can run side by side: no dropout module drawing masks (from the one
    shared generator, in whichever order the threads reach it: the run would depend on timing).
    The settings that rule it out (LoRA dropout, gradient checkpointing, full) are memory.auto_split's."""
    from torch import nn

    return not any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules())


class SideBySide:
    """A pool of threads kept for the whole run: the same threads keep their allocator arenas, whose
    freed pages the next step reuses (allocator.keep_freed_pages).

    Also one thread for the steps run one at a time beside a busy core (:meth:`alone`): the main
    thread has run torch's ops on every core (loading, the dtype probe, evaluation), and a thread
    whose OpenMP team once had two threads ran single-threaded work ~20% slower than a thread
    that never had (Intel Xeon, MKL's sgemm, fp32, 2026-12-07: a product, SiLU and a product again,
    median 687 against 546 ms in a fresh thread; bench/results/train_threads_intel.txt). Neither
    thread ever runs more torch threads than a busy step gives it."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="ftf-micro")
        self._alone = ThreadPoolExecutor(1, thread_name_prefix="ftf-alone")

    def alone(self, work: Callable[[], float]) -> float:
        """``work`` (a step's micro-batches one at a time) on the kept thread, with torch's threads
        as the caller has them now; exceptions (out of memory) reach the caller."""
        import torch

        threads = torch.get_num_threads()

        def run() -> float:
            torch.set_num_threads(threads)  # this thread's own setting
            return work()

        return self._alone.submit(run).result()

    def accumulate(
        self,
        parts: list[tuple[list[Row], float]],
        loss_fn: Callable[[dict[str, Any]], tuple[Any, int]],
        params: list[Any],
        scale: float,
        amp: Callable[[], AbstractContextManager[Any]],
        device: str,
    ) -> float:
        """Forward and backward of every (rows, weight) part, ``workers`` at a time, gradients of
        ``params`` (loss x weight x ``scale``) added into ``.grad``; returns the weighted loss sum.
        torch's threads are shared out: on two cores each part runs single-threaded."""
        import torch

        threads = torch.get_num_threads()
        each = max(1, threads // self.workers)

        def one(part: tuple[list[Row], float]) -> tuple[tuple[Any, ...], float]:
            torch.set_num_threads(each)  # this thread's own OpenMP setting (each thread has one)
            rows, weight = part
            with amp():
                loss_sum, _ = loss_fn(rows_to_tensors(rows, device))
            grads = torch.autograd.grad(loss_sum * (weight * scale), params, allow_unused=True)
            return grads, weight * float(loss_sum.detach())

        torch.set_num_threads(each)  # the default for threads torch has not seen yet
        try:
            results = list(self._pool.map(one, parts))
        finally:
            torch.set_num_threads(threads)
        for i, param in enumerate(params):
            for grads, _ in results:
                if grads[i] is not None:
                    param.grad = grads[i] if param.grad is None else param.grad.add_(grads[i])
        return sum(loss for _, loss in results)

    def close(self) -> None:
        self._pool.shutdown()
        self._alone.shutdown()


@dataclass
class BusyChoice:
    """Side by side or one at a time while another process keeps a core busy: which is faster
    depends on that process, so each way is tried for a step, the faster per real token is kept
    for ``keep`` steps, and then both are tried again.

    Beside a process spinning on one core, two micro-batches at once trained 1.24x as fast as one
    at a time (the scheduler shares the busy core with them, and they meet only at the step's
    end). Beside a heavier neighbour they can lose. Not used when the neighbour is another training
    of ours (train/peers.py): each would keep side by side (beside a neighbour that does, one at a
    time gets the smaller share) and each trained at ~236 tokens/s against ~257 with ``threads: 1``
    in both (README "Both cores", Zen 4, 2026-12-07); the loop runs those steps one at a time.
    """

    keep: int = 20
    tried: dict[bool, float] = field(default_factory=dict)  # side by side? -> seconds per real token
    kept: int = 0  # steps run the chosen way since both were tried

    def side(self) -> bool:
        """The way for the next busy step: True for side by side."""
        if len(self.tried) < 2:
            return True not in self.tried
        return self.tried[True] <= self.tried[False]

    def record(self, side: bool, seconds: float, tokens: int) -> None:
        """One busy step's time, run the way :meth:`side` said."""
        if len(self.tried) < 2:
            self.tried[side] = seconds / max(tokens, 1)
            return
        self.kept += 1
        if self.kept >= self.keep:  # the other process may have changed: measure both again
            self.tried.clear()
            self.kept = 0
