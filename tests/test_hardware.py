import pytest
import torch

from finetuneflow import hardware


def test_precision_choices() -> None:
    assert hardware.autocast_dtype("cpu", "fp32") is None
    assert hardware.autocast_dtype("cpu", "bf16") is torch.bfloat16
    assert hardware.autocast_dtype("cpu", "fp16") is torch.float16
    # auto on a CPU follows the CPU's native bf16 support
    expected = torch.bfloat16 if hardware.cpu_prefers_bf16() else None
    assert hardware.autocast_dtype("cpu", "auto") is expected


def test_threads_setting() -> None:
    before = torch.get_num_threads()
    try:
        assert hardware.setup_threads(1) == 1 and torch.get_num_threads() == 1
        assert hardware.setup_threads(0) == hardware.available_cores()
    finally:
        torch.set_num_threads(before)


def test_threads_leave_the_cores_others_keep_busy() -> None:
    assert hardware.threads_for(2, 0.2) == 2
    assert hardware.threads_for(2, 0.6) == 1  # a core more than half busy is taken
    assert hardware.threads_for(2, 5.0) == 1  # never fewer than one
    assert hardware.threads_for(8, 2.4) == 6


def test_settling_beside_other_trainings_of_ours_takes_a_share_before_they_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    monkeypatch.setattr(hardware.CoreShare, "others_busy", lambda self: 0.0)  # they are still loading
    before = torch.get_num_threads()
    try:
        assert hardware.CoreShare(2).settle(0.0) == 2
        assert hardware.CoreShare(2).settle(0.0, ours=1) == torch.get_num_threads() == 1
        assert hardware.CoreShare(8).settle(0.0, ours=3) == 2
        assert hardware.CoreShare(2).settle(0.0, ours=5) == 1  # never fewer than one
    finally:
        torch.set_num_threads(before)


def test_core_share_sees_another_process_spinning() -> None:
    import subprocess
    import sys
    import time

    if hardware._cpu_jiffies() is None:
        pytest.skip("no /proc/stat on this system: the share stays at its starting threads")
    share = hardware.CoreShare(hardware.available_cores(), every_s=0.5)
    assert share.others_busy() is None  # too soon to tell
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1.0)
        busy = share.others_busy()
    finally:
        spinner.kill()
    assert busy is not None and busy >= 0.7  # the spinner's core at least (other load only adds)


def test_evaluation_threads_leave_a_spinning_core_and_events_still_arrive() -> None:
    import subprocess
    import sys

    import torch

    from finetuneflow.evaluate.step import _adapting
    from finetuneflow.events import Emitter, Event

    cores = hardware.available_cores()
    if hardware._cpu_jiffies() is None or cores < 2:
        pytest.skip("needs /proc/stat and two cores: one to spin, one left free")
    before = torch.get_num_threads()
    seen: list[Event] = []
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        torch.set_num_threads(cores)
        emit = Emitter("evaluate", _adapting(hardware.CoreShare(cores, every_s=0.5), seen.append))
        assert torch.get_num_threads() <= cores - 1  # settled before the first answer
        emit("answers", 1, 2, message="a batch")
    finally:
        spinner.kill()
        torch.set_num_threads(before)
    assert [e.stage for e in seen] == ["answers"]


def test_the_bf16_probe_leaves_the_global_random_state_alone() -> None:
    # it ran after a run's torch.manual_seed: the first run of a process then drew other LoRA
    # weights than the next one with the same seed (a killed run's resume disagreed with its twin)
    hardware.cpu_bf16_speedup.cache_clear()
    torch.manual_seed(0)
    before = torch.get_rng_state()
    hardware.cpu_bf16_speedup()
    assert torch.equal(torch.get_rng_state(), before)
