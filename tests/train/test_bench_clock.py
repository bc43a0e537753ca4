"""The matrix-product clock of ``bench/train.py --profile``: it must see the backward pass's
products as well as the forward's, and count their FLOPs from the right operands."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from train_profile import _clock_mode, clock_rows  # noqa: E402  (bench/ is not a package)


def test_the_clock_times_forward_and_backward_products_with_their_flops() -> None:
    x = torch.randn(4, 3, requires_grad=True)
    w = torch.randn(3, 5)
    clock = _clock_mode()()
    with clock:
        (x @ w).sum().backward()
        torch.zeros(4, 5).addmm_(torch.randn(4, 2), torch.randn(2, 5))
        torch.baddbmm(torch.zeros(2, 4, 6), torch.randn(2, 4, 3), torch.randn(2, 3, 6))
        torch.relu(x)  # not a product: passes through uncounted
    assert clock.flop["mm (4, 3)x(3, 5)"] == 2 * 4 * 3 * 5  # forward
    assert clock.flop["mm (4, 5)x(5, 3)"] == 2 * 4 * 5 * 3  # backward: the gradient of x
    assert clock.flop["addmm_ (4, 2)x(2, 5)"] == 2 * 4 * 2 * 5  # the accumulated input is not a factor
    assert clock.flop["baddbmm (2, 4, 3)x(2, 3, 6)"] == 2 * 2 * 4 * 3 * 6
    assert sum(clock.calls.values()) == 4
    assert all(s > 0 for s in clock.seconds.values())


def test_clock_rows_keep_the_longest_and_sum_the_rest() -> None:
    clock = _clock_mode()()
    for i, seconds in enumerate([3.0, 1.0, 2.0, 0.5]):
        key = f"mm shape{i}"
        clock.seconds[key], clock.calls[key], clock.flop[key] = seconds, i + 1, 10 * (i + 1)
    rows = clock_rows(clock, top=2)
    assert [r[0] for r in rows] == ["mm shape0", "mm shape2", "(2 other shapes)"]
    assert rows[-1][1:] == (2 + 4, 1.5, 20 + 40)
