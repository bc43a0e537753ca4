"""One rank of a data-parallel run: ``torchrun ... ddp_worker.py DATASET RUN_DIR CONFIG_JSON [resume]``."""

import json
import sys
from pathlib import Path

from finetuneflow.config import from_dict
from finetuneflow.train.config import TrainConfig
from finetuneflow.train.step import train

if __name__ == "__main__":
    cfg = from_dict(TrainConfig, json.loads(sys.argv[3]))
    train(Path(sys.argv[1]), Path(sys.argv[2]), cfg, resume=sys.argv[4:] == ["resume"])
