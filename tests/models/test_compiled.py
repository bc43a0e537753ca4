"""Compiled kernels (models/compiled.py): the compiled RMSNorm computes the eager norm's numbers,
forward and backward; a compile that fails warns once and the eager function answers."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch

from finetuneflow.models import compiled, norm_fused


def _norm_and_grad(x: Any, weight: Any, grad: Any) -> tuple[Any, Any]:
    x = x.detach().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = norm_fused._function().apply(x, weight, 1e-5)
    out.backward(grad)
    return out.detach(), x.grad


def test_the_compiled_norm_gives_the_eager_norms_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(compiled.ENV, "1")
    torch.manual_seed(0)
    x = torch.randn(3, 100, 64, dtype=torch.bfloat16) * 3  # a shape of its own: compiled for this test
    weight = torch.rand(64) + 0.5  # fp32, as a LoRA base keeps its norms
    grad = torch.randn(3, 100, 64, dtype=torch.bfloat16)
    monkeypatch.setattr(compiled, "MIN_ELEMENTS", 1 << 62)
    eager = _norm_and_grad(x, weight, grad)
    monkeypatch.setattr(compiled, "MIN_ELEMENTS", 0)
    fused = _norm_and_grad(x, weight, grad)
    kernels = norm_fused._function().kernels
    assert all(k.compiled is not None and not k.failed for k in kernels), "the compiled path did not run"
    for name, a, b in zip(("output", "input gradient"), eager, fused, strict=True):
        assert a.dtype == b.dtype == torch.bfloat16, name
        # one bf16 rounding apart at most: the same fp32 maths, summed in another order
        torch.testing.assert_close(b.float(), a.float(), rtol=2**-7, atol=1e-3, msg=name)


def test_a_kernel_that_cannot_compile_warns_once_and_runs_eagerly(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_compiler(fn: Any, **_: Any) -> Any:
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore detail")

    calls = []

    def double(x: Any) -> Any:
        calls.append(1)
        return x * 2

    monkeypatch.setenv(compiled.ENV, "1")
    monkeypatch.setattr(torch, "compile", no_compiler)
    kernel = compiled.Kernel(double)
    with caplog.at_level(logging.WARNING, logger=compiled.__name__):
        assert torch.equal(kernel(torch.ones(3)), torch.full((3,), 2.0))
        assert torch.equal(kernel(torch.ones(2)), torch.full((2,), 2.0))
    assert kernel.failed and len(calls) == 2
    warned = [r.getMessage() for r in caplog.records]
    cause = "RuntimeError: InvalidCxxCompiler: No working C++ compiler found"  # its first line only
    assert warned == [f"compiling double failed ({cause}); it runs uncompiled"]


@pytest.mark.parametrize("setting", [None, "0", "yes"])
def test_only_ftf_compile_1_compiles(monkeypatch: pytest.MonkeyPatch, setting: str | None) -> None:
    if setting is None:
        monkeypatch.delenv(compiled.ENV, raising=False)  # off by default: see models/compiled.py
    else:
        monkeypatch.setenv(compiled.ENV, setting)
    monkeypatch.setattr(torch, "compile", lambda *a, **k: pytest.fail(f"compiled with FTF_COMPILE={setting}"))
    kernel = compiled.Kernel(torch.neg)
    assert torch.equal(kernel(torch.ones(2)), -torch.ones(2)) and kernel.compiled is None


def test_only_large_cpu_tensors_go_to_compiled_kernels() -> None:
    assert not compiled.use(torch.empty(512, 64))  # the tests' tiny models stay eager
    assert compiled.use(torch.empty(512, 576))  # a 512-token row of SmolLM2-135M
    assert not compiled.use(torch.empty(512, 576, device="meta"))


@pytest.mark.parametrize("setting", [None, "failed"])
def test_without_a_compiled_kernel_the_norm_runs_its_in_place_passes(
    monkeypatch: pytest.MonkeyPatch, setting: str | None
) -> None:
    # with compiling off (the default) or failed, the norm ran the kernels' pure functions
    # uncompiled: the same numbers, 3.4x slower than its in-place passes (RMSNorm 221 -> 435 ms of
    # a Zen 5 step)
    kernels = norm_fused._function().kernels
    if setting is None:
        monkeypatch.delenv(compiled.ENV, raising=False)
    else:
        monkeypatch.setenv(compiled.ENV, "1")
    for kernel in kernels:
        monkeypatch.setattr(kernel, "failed", setting == "failed")
        monkeypatch.setattr(kernel, "fn", lambda *_: pytest.fail("the uncompiled kernel ran"))
    x = torch.randn(2, 512, 576, dtype=torch.bfloat16)  # large enough for a kernel (compiled.use)
    assert compiled.use(x)
    out, grad = _norm_and_grad(x, torch.rand(576) + 0.5, torch.randn_like(x))
    assert out.shape == grad.shape == x.shape and torch.isfinite(grad.float()).all()
