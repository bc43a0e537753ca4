"""Typed, validated configuration shared by every step.

Each step's settings are a dataclass whose fields carry their documentation in ``metadata["help"]``
(see :func:`setting`). :func:`from_dict` builds one from plain data (a YAML/JSON file, a REST body,
CLI flags), rejecting unknown keys and collecting *every* problem before raising one
:class:`ConfigError`, so a user fixes a config in one pass instead of one error at a time.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from typing import Any, TypeVar, Union, get_args, get_origin

from finetuneflow.errors import ConfigError

T = TypeVar("T")

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # what a setting naming an environment variable may hold


def setting(default: Any, help: str) -> Any:  # noqa: A002 - 'help' reads best at call sites
    """A dataclass field with its documentation attached (shown by ``ftf ... --help`` and the docs)."""
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def section(cls: type, help: str) -> Any:  # noqa: A002
    """A field holding a nested settings dataclass (given as a dict in files): defaults to ``cls()``.

    Its value problems are reported by the parent's ``problems()``, prefixed ``name.``.
    """
    return dataclasses.field(default_factory=cls, metadata={"help": help})


def field_help(cls: type) -> dict[str, str]:
    """Field name -> help text of a settings dataclass."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


def _type_ok(value: Any, hint: Any) -> bool:
    origin = get_origin(hint)
    if hint is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_type_ok(value, h) for h in get_args(hint))
    if origin is typing.Literal:
        return value in get_args(hint)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        return isinstance(value, list | tuple)
    if origin is dict:
        return isinstance(value, dict)
    if _is_section(hint):
        return isinstance(value, dict | hint)
    return isinstance(value, hint) if isinstance(hint, type) else True


def from_dict(cls: type[T], data: dict[str, Any] | None, what: str | None = None, check: bool = True) -> T:
    """Build settings ``cls`` from ``data``; unknown keys, wrong types and invalid values all
    reported at once. A field typed as another settings dataclass is a section: it takes a dict,
    and its errors are named ``section.key``. ``check=False`` skips the value checks.

    Raises:
        ConfigError: listing every problem with its key and a fix.
    """
    data = dict(data or {})
    what = what or cls.__name__
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    errors: list[str] = []
    for key in data:
        if key not in names:
            near = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else f" (known keys: {', '.join(names)})"
            errors.append(f"{key}: unknown key{hint}")
    for name in names:
        if name in data and not _type_ok(data[name], hints[name]):
            errors.append(f"{name}: expected {_type_name(hints[name])}, got {data[name]!r}")
    for name in names:  # a nested section (a settings dataclass) arrives as a plain dict
        if name in data and _is_section(hints[name]) and isinstance(data[name], dict):
            try:
                data[name] = from_dict(hints[name], data[name], what, check=False)  # parent checks
            except ConfigError as err:
                errors += [f"{name}.{e}" for e in err.errors]
    if errors:
        raise ConfigError(errors, what)
    obj = cls(**data)
    validate = getattr(obj, "problems", None) if check else None
    problems = validate() if callable(validate) else []
    if problems:
        raise ConfigError(problems, what)
    return obj


def _is_section(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def _type_name(hint: Any) -> str:
    if get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    return getattr(hint, "__name__", str(hint))


def to_dict(obj: Any) -> dict[str, Any]:
    """Settings dataclass -> plain JSON-ready dict (the resolved config a run folder records)."""
    return dataclasses.asdict(obj)
