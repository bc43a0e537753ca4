"""What a queued job runs: one plain function per step, from the JSON its job row holds to the
same :mod:`finetuneflow.api` call the CLI makes in the foreground. Nothing here knows Celery."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from finetuneflow import api, paths
from finetuneflow.config import from_dict
from finetuneflow.state import runs as rf

Runner = Callable[[str, dict[str, Any]], Any]


def run_ingest(project: str, args: dict[str, Any]) -> Any:
    from finetuneflow.ingest.config import IngestConfig

    report = api.ingest(args["inputs"], project, from_dict(IngestConfig, args.get("config")))
    return {"counts": report.counts()}


def run_build(project: str, args: dict[str, Any]) -> Any:
    from finetuneflow.dataset.convert import DatasetConfig

    manifest = api.build_dataset(project, from_dict(DatasetConfig, args.get("config")))
    return {"path": manifest.get("path"), "counts": manifest.get("counts")}


def run_generate(project: str, args: dict[str, Any]) -> Any:
    from finetuneflow.dataset.convert import DatasetConfig
    from finetuneflow.dataset.generate import GenerateConfig
    from finetuneflow.dataset.presets import ProviderConfig

    out = api.generate_dataset(
        project, from_dict(ProviderConfig, args["provider"]), from_dict(GenerateConfig, args.get("generate")),
        from_dict(DatasetConfig, args.get("config")), preview=bool(args.get("preview")),
        build=bool(args.get("build", True)),
    )  # fmt: skip
    manifest = out.get("manifest") or {}
    return {"generation": out["generation"].to_json(), "counts": manifest.get("counts")}


def run_train(project: str, args: dict[str, Any]) -> Any:
    """Train run ``args["run_id"]`` (chosen when the job was queued). A job run again after its
    worker died finds the run folder started and resumes it from its newest checkpoint; one whose
    run had already finished returns that run's summary (one run folder, one result)."""
    from finetuneflow.train.config import TrainConfig

    run_id = args["run_id"]
    folder = rf.run_folder(paths.project_dir(project), run_id)
    if (folder / rf.SUMMARY).exists():
        return {"run_id": run_id, **rf.read_json(folder / rf.SUMMARY)}
    if (folder / rf.CONFIG).exists():
        return api.resume(project, run_id)
    api.forget_unstarted_run(run_id, folder)  # an earlier attempt killed while its model loaded
    return api.train(project, args.get("dataset", "default"), from_dict(TrainConfig, args.get("config")),
                     run_id=run_id)  # fmt: skip


def run_evaluate(project: str, args: dict[str, Any]) -> Any:
    """Evaluate run ``args["run_id"]``; the comparison is stored in the run folder (the result
    holds the verdict and losses, the whole of it is read from there)."""
    from finetuneflow.dataset.presets import ProviderConfig
    from finetuneflow.evaluate.step import EvalConfig

    judge = args.get("judge")
    result = api.evaluate(project, args["run_id"], from_dict(EvalConfig, args.get("config")),
                          judge=from_dict(ProviderConfig, judge) if judge else None)  # fmt: skip
    return {"run_id": args["run_id"], "verdict": (result.get("verdict") or {}).get("verdict"),
            "losses": result.get("losses")}  # fmt: skip


def run_export(project: str, args: dict[str, Any]) -> Any:
    """Export run ``args["run_id"]`` into the project's exports/<run-id>/ (each format verified)."""
    from finetuneflow.export.step import ExportConfig

    out = api.export(project, args["run_id"], from_dict(ExportConfig, args.get("config")))
    return {"run_id": args["run_id"], "formats": {k: v for k, v in out.items() if k != "path"}}


RUNNERS: dict[str, Runner] = {
    "ingest": run_ingest,
    "dataset": run_build,
    "generate": run_generate,
    "train": run_train,
    "evaluate": run_evaluate,
    "export": run_export,
}
# Every other step runs on "default" (data work, in parallel). Evaluation and export load the base
# model and the tuned weights and run them for minutes: on the one-at-a-time "train" queue they
# never hold a second model in memory beside a training run (a laptop has room for one), and a
# team adds capacity for all model work the same way, with `ftf worker --queues train`.
QUEUES = {"train": "train", "evaluate": "train", "export": "train"}
