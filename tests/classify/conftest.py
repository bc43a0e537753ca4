"""Classification tests share the box: tiny tensors gain nothing from more than one thread."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def one_thread() -> None:
    import torch

    torch.set_num_threads(1)  # the box is shared; tiny tensors gain nothing from more
