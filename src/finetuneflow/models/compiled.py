"""Small pure tensor functions compiled by ``torch.compile`` (inductor's C++ backend) on a CPU,
with the plain function as the fallback.

Eager PyTorch runs a reduction-and-elementwise function such as RMSNorm as one op per line, each a
pass over the (tokens x hidden) tensor, and on a CPU each bf16 op widens every element to fp32 and
back. Inductor fuses such a function into one loop. RMSNorm's forward and backward at 1,024 tokens
x 576 (SmolLM2-135M), bf16, one thread, on a 2-core Intel Xeon with AMX (2026-12-07): 0.28 and
0.36 ms compiled against 0.95 and ~2.2 ms for the eager passes of the fused autograd function
(models/norm_fused.py); in the training step ~0.5 s less norm and cast time, the step 0.965-0.979
of the eager one (``bench/train.py --profile 2 --ab compiled``; an upper bound: that eager arm ran
``normed`` uncompiled, ~1% slower than the norm's in-place passes in a Zen 5 step, see
``Kernel.applies``). Whole decoder layers were tried
and not kept (250 s of compiling, docs/ARCHITECTURE.md); one small function compiles in 3.5-6 s
(16.5 s for the norm's two with an empty inductor cache), once per process and thread count
(dynamo guards on torch's threads), with dynamic token counts. SwiGLU compiled ran slower than
eager here, so it is not.

Compiling needs a C++ compiler at run time. Where that (or anything in the compile) fails, the
function warns once and runs eagerly from then on: the same maths, the step a little slower.
Off by default, on with ``FTF_COMPILE=1``: the compile's 3.5-6 s land in the first step, and in
``bench/train.py``'s 4-step runs (the same host, the same hour, ``--scaling``) ours ran 540.5 and
903.3 tokens/s on one thread and by default with it against 549.7 and 997.4 without: the per-step
gain pays only after ~15 steps, and two threads side by side compile one after the other. For long
runs (the knowledge recipe's many epochs) it is worth turning on. Tensors on a GPU, and small ones
(under ``MIN_ELEMENTS``, e.g. the tests' tiny models), always run eagerly.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

MIN_ELEMENTS = 1 << 18  # ~262k: a 512-token row of a 512-wide model
ENV = "FTF_COMPILE"

log = logging.getLogger(__name__)


class Kernel:
    """``fn`` compiled on first use where that applies (:func:`use`), else ``fn`` itself."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.compiled: Callable[..., Any] | None = None
        self.failed = False

    def applies(self, x: Any) -> bool:
        """Whether work on ``x`` should come here: compiling is on (``FTF_COMPILE=1``), has not
        failed, and ``x`` is large and on a CPU (:func:`use`). Where it does not, the caller runs its
        own eager passes, which may be faster than ``fn`` uncompiled (RMSNorm's in-place passes ran
        3.4x as fast as its pure function: 0.74 against 2.57 ms forward and backward at 1,024 x 576,
        bf16, one thread, Zen 5, 2026-12-07)."""
        return not self.failed and os.environ.get(ENV, "0") == "1" and use(x)

    def __call__(self, *args: Any) -> Any:
        if self.failed or os.environ.get(ENV, "0") != "1":
            return self.fn(*args)
        try:
            if self.compiled is None:
                import torch

                self.compiled = torch.compile(self.fn, dynamic=True)
            return self.compiled(*args)
        except Exception as error:  # no compiler, an inductor bug: the eager maths, once warned
            self.failed = True
            first = (str(error).splitlines() or [""])[0][:200]
            log.warning("compiling %s failed (%s: %s); it runs uncompiled", self.fn.__name__,
                        type(error).__name__, first)  # fmt: skip
            return self.fn(*args)


def use(x: Any) -> bool:
    """Whether work on ``x`` goes to a compiled kernel: a CPU tensor of ``MIN_ELEMENTS`` or more."""
    return bool(x.device.type == "cpu" and x.numel() >= MIN_ELEMENTS)
