"""Our other trainings on this machine (train/peers.py): counted while they run, never after."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from finetuneflow.train.peers import SUFFIX, Trainings

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock: POSIX only")


def test_two_trainings_see_each_other_until_one_leaves(tmp_path: Path) -> None:
    with Trainings(tmp_path) as first:
        assert first.others() == 0
        with Trainings(tmp_path) as second:
            assert first.others() == second.others() == 1
        assert first.others() == 0
        assert [p.name for p in tmp_path.iterdir()] == [first.path.name]  # type: ignore[union-attr]
    assert list(tmp_path.iterdir()) == []


def test_a_killed_training_stops_counting_and_its_file_goes(tmp_path: Path) -> None:
    code = (
        "import time; from finetuneflow.train.peers import Trainings\n"
        "t = Trainings(); print('in', flush=True); time.sleep(120)"
    )
    env = {**os.environ, "FTF_TRAINERS_DIR": str(tmp_path)}
    child = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "in"
        with Trainings(tmp_path) as me:
            assert me.others() == 1
            child.send_signal(signal.SIGKILL)  # no clean-up of its own: the kernel drops the lock
            child.wait(timeout=30)
            assert me.others() == 0
            assert [p.name for p in tmp_path.glob(f"*{SUFFIX}")] == [me.path.name]  # type: ignore[union-attr]
    finally:
        child.kill()
        child.wait()


def test_a_gpu_run_or_an_unusable_folder_registers_nothing(tmp_path: Path) -> None:
    with Trainings(tmp_path) as cpu, Trainings(tmp_path, register=False) as gpu:
        assert cpu.others() == 0 and gpu.others() == 0 and gpu.path is None
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    with Trainings(blocked / "trainers") as nowhere:  # cannot be made: train on without it
        assert nowhere.path is None and nowhere.others() == 0


def test_the_folder_defaults_to_one_per_user_in_the_temporary_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    from finetuneflow.train import peers

    monkeypatch.delenv(peers.ENV, raising=False)
    assert peers.folder() == Path(tempfile.gettempdir()) / f"ftf-trainers-{os.getuid()}"
