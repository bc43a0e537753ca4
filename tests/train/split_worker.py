"""One rank deciding the micro-batches while rank 0 fails: ``torchrun ... split_worker.py``.

Rank 0 gets a prepared dataset whose model folder is None, so reading its config.json raises a
TypeError (not one of the errors split_step falls back on); each rank prints what it raised."""

from types import SimpleNamespace

from finetuneflow.train import distributed as dd
from finetuneflow.train.config import TrainConfig
from finetuneflow.train.step import split_step

if __name__ == "__main__":
    dist = dd.init("cpu")
    prep = SimpleNamespace(train_rows=[], model_dir=None)
    try:
        split_step(TrainConfig(batch_size=0), prep, "cpu", 1, dist)  # type: ignore[arg-type]
        print(f"rank {dist.rank}: no error", flush=True)
    except Exception as exc:
        print(f"rank {dist.rank}: {type(exc).__name__}: {exc}", flush=True)
    dd.close(dist)
