"""The Python API: one function per pipeline step, each a thin wrapper over the step's core.

Chat has a session (``open_chat``: multi-turn, streamed, memories in the prompt, every exchange
logged with its rating and correction) besides the one-shot ``chat``; ``dataset_from_chats`` turns
the corrected and well-rated answers into examples for the next build and train.

The memory of a project (``teach``, ``recall``, ``correct``, ``forget``, ``purge``,
``list_memories``, ``memory_history``, ``memory_status``, ``memory_sync``, ``remember_exchange``) holds
taught facts, document chunks, chats and corrections; chat recalls from it into the prompt, and
``recall(project, query, k)`` is what a server's retriever calls.

Classification has its own three, on a labelled CSV (``text,label``): ``train_classifier``,
``resume_classifier`` and ``predict``; its runs are listed and exported like the others.

``open_server`` serves a base model and the tuned models of chosen runs (continuously batched, by
model name) for ``ftf serve``'s OpenAI-compatible routes.

Wrappers resolve a project's folders and database rows, record a job, and call the pure step
function; the CLI (and later the REST routes and the worker) call these same functions::

    from finetuneflow import api
    api.ingest(["examples/quickstart/data"], project="demo")
    api.build_dataset("demo")
    run = api.train("demo")
    api.evaluate("demo", run["run_id"])
    api.export("demo", run["run_id"])
    print(api.chat("demo", "What does error E21 mean?", run["run_id"]))
"""

from finetuneflow.api._common import forget_unstarted_run
from finetuneflow.api.chat import ChatSettings, chat, exchange_log, open_chat
from finetuneflow.api.classify import predict, resume_classifier, train_classifier
from finetuneflow.api.data import build_dataset, dataset_from_chats, generate_dataset, ingest, ingest_report
from finetuneflow.api.memory import (
    correct,
    forget,
    list_memories,
    memory_history,
    memory_status,
    memory_sync,
    purge,
    recall,
    remember_exchange,
    teach,
)
from finetuneflow.api.projects import delete_project
from finetuneflow.api.runs import delete_run, evaluate, export, latest_run, list_runs, run_dir
from finetuneflow.api.serving import open_server
from finetuneflow.api.training import resume, train

__all__ = [
    "ChatSettings",
    "build_dataset",
    "chat",
    "correct",
    "dataset_from_chats",
    "delete_project",
    "delete_run",
    "exchange_log",
    "evaluate",
    "export",
    "forget_unstarted_run",
    "forget",
    "generate_dataset",
    "ingest",
    "ingest_report",
    "latest_run",
    "list_memories",
    "list_runs",
    "memory_history",
    "memory_status",
    "memory_sync",
    "open_chat",
    "open_server",
    "predict",
    "purge",
    "recall",
    "remember_exchange",
    "resume",
    "resume_classifier",
    "run_dir",
    "teach",
    "train",
    "train_classifier",
]
