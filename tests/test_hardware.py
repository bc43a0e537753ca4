import torch

from finetuneflow import hardware


def test_precision_choices() -> None:
    assert hardware.autocast_dtype("cpu", "fp32") is None
    assert hardware.autocast_dtype("cpu", "bf16") is torch.bfloat16
    assert hardware.autocast_dtype("cpu", "fp16") is torch.float16
    # auto on a CPU follows the CPU's native bf16 support
    expected = torch.bfloat16 if hardware.cpu_has_bf16() else None
    assert hardware.autocast_dtype("cpu", "auto") is expected


def test_threads_setting() -> None:
    before = torch.get_num_threads()
    try:
        assert hardware.setup_threads(1) == 1 and torch.get_num_threads() == 1
        assert hardware.setup_threads(0) == hardware.available_cores()
    finally:
        torch.set_num_threads(before)
