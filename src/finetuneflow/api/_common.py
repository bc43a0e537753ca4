"""What every API module shares: a project's id, results made plain JSON."""

from __future__ import annotations

import json
from typing import Any

from finetuneflow.state import session_scope
from finetuneflow.state.repo import find_project


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types (what job rows and REST bodies hold)."""
    return json.loads(json.dumps(value, default=str))


def project_id(project: str) -> int:
    """The id of an existing project. Raises LookupError naming the fix when there is none."""
    with session_scope() as s:
        return find_project(s, project).id
