"""A process killed (SIGKILL, no cleanup) between the database write and the index write of a
``teach`` loses nothing it acknowledged, and the next open repairs the index."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from finetuneflow.memory.config import MemoryConfig
from finetuneflow.memory.store import Memory
from memory.conftest import HASH

# Teach facts one by one, printing each id once teach returned (acknowledged); the fourth save of the
# index file (the first is the open's) kills the process after the third record was committed,
# before the index was written.
CHILD = f"""
import os, signal
from finetuneflow.memory import index
from finetuneflow.memory.config import MemoryConfig
from finetuneflow.memory.store import Memory

saves = [0]
real_save = index.VectorIndex.save

def save(self):
    saves[0] += 1
    if saves[0] == 4:
        os.kill(os.getpid(), signal.SIGKILL)
    real_save(self)

index.VectorIndex.save = save
memory = Memory("p", MemoryConfig(embedder="{HASH}"))
for n in range(5):
    item = memory.teach(f"Fact number {{n}}: the valve {{n}} is red.")
    print(item["id"], flush=True)
"""


def test_a_killed_teach_loses_nothing_acknowledged(ftf_home: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    acknowledged = [int(line) for line in child.stdout.split()]
    assert len(acknowledged) == 2  # the third teach was killed
    memory = Memory("p", MemoryConfig(embedder=HASH))
    assert memory.repaired == {"missing": 1, "extra": 0}  # committed, never indexed
    held = {item["id"] for item in memory.listing()}
    assert set(acknowledged) <= held and len(held) == 3
    assert memory.index.ids() == held and memory.status()["index"]["ok"]
    assert memory.recall("valve 2 red", k=1)[0]["text"].startswith("Fact number 2")
