"""``ftf provider test``: is this provider configuration usable, and which models does it serve?"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from finetuneflow.dataset.presets import ProviderConfig
from finetuneflow.dataset.provider import Provider
from finetuneflow.errors import ConfigError, ProviderError


def check_provider(cfg: ProviderConfig) -> dict[str, Any]:
    """``ftf provider test``: list the served models, make one tiny chat round trip, time both.

    Never raises for a server problem: the answer's ``error`` says what went wrong and ``ok`` is False.
    """
    cfg = dataclasses.replace(cfg, max_retries=min(cfg.max_retries, 1), circuit_failures=0)
    report: dict[str, Any] = {
        "ok": False,
        "preset": cfg.preset,
        "base_url": cfg.resolved().base_url,
        "model": cfg.model,
        "key_source": "",
        "models": [],
        "model_found": None,
        "list_seconds": None,
        "chat_seconds": None,
        "reply": None,
        "error": None,
    }
    try:
        with Provider(cfg) as provider:
            report["key_source"] = provider.key_source or "none"
            start = time.monotonic()
            report["models"] = provider.list_models()
            report["list_seconds"] = round(time.monotonic() - start, 3)
            report["model_found"] = cfg.model in report["models"]
            if not report["model_found"]:
                served = ", ".join(report["models"][:10]) or "none"
                report["error"] = (
                    f"model {cfg.model!r} is not among the models the server lists "
                    f"({served}); set model to one of them"
                )
                return report
            answer = provider.chat([{"role": "user", "content": "Reply with the word: ok"}], max_tokens=16)
            report["chat_seconds"] = round(answer.seconds, 3)
            report["reply"] = answer.text[:200]
    except (ProviderError, ConfigError) as err:
        report["error"] = err.message if isinstance(err, ProviderError) else str(err)
        return report
    report["ok"] = True
    return report
