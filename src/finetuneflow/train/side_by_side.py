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
    freed pages the next step reuses (allocator.keep_freed_pages)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="ftf-micro")

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
