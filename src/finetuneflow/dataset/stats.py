"""What a dataset build kept, what it dropped and why: counted, checked and shown.

Nothing is dropped silently. :func:`compute_stats` checks that every stage of the build funnel accounts
for its drops (``in - kept`` equals the rejected items of that stage) and refuses the numbers otherwise;
:func:`write_rejected` puts every drop, with its reason, in ``rejected.jsonl``; :func:`format_stats` and
:func:`plot_token_histogram` show the result to a person.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from finetuneflow.state.datasets import write_jsonl

REJECTED = "rejected.jsonl"
TOKEN_KEYS = ("count", "min", "p50", "p90", "p99", "max", "mean", "over_limit")


@dataclass
class DatasetStats:
    """The numbers of one build; every field is plain JSON (see :meth:`to_json`)."""

    counts: dict[str, dict[str, int]]
    """split -> kind ('chat' | 'text') -> rows."""
    stages: dict[str, dict[str, int]]
    """Funnel in build order: stage -> {"in", "kept", "rejected"}."""
    rejections: dict[str, dict[str, int]]
    """stage -> reason -> count, stages in funnel order, reasons most frequent first."""
    tokens: dict[str, dict[str, Any]]
    """split -> {"count", "min", "p50", "p90", "p99", "max", "mean", "over_limit"}; None when empty."""
    token_limit: int | None
    """The limit ``over_limit`` counts against (lengths strictly above it); None = not counted."""
    coverage: dict[str, dict[str, Any]]
    """source -> {"chunks", "chunks_with_examples" (None = unknown), "examples": {split: n}}."""
    documents_without_examples: list[str]
    """Listed documents that produced no example in any split, sorted."""
    unlisted_sources: list[str]
    """Sources of kept rows that are not among the listed documents (e.g. imported chats), sorted."""
    totals: dict[str, int]
    """examples, rejected, documents, documents_without_examples, tokens."""

    def to_json(self) -> dict[str, Any]:
        """A ``json.dumps``-able dict of every field."""
        return asdict(self)


def percentile(values: Sequence[int], q: float) -> int | None:
    """Nearest-rank percentile: the smallest value with at least ``q``% of values <= it; None when empty.

    Always one of the values (a token length stays an integer); ``q=0`` gives the minimum.

    Raises:
        ValueError: ``q`` outside [0, 100].
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q={q}: must be in [0, 100]")
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def token_summary(lengths: Sequence[int], limit: int | None = None) -> dict[str, Any]:
    """count, min, p50, p90, p99, max, mean (2 decimals) and over_limit of one split's token lengths."""
    n = len(lengths)
    return {
        "count": n,
        "min": min(lengths) if n else None,
        "p50": percentile(lengths, 50),
        "p90": percentile(lengths, 90),
        "p99": percentile(lengths, 99),
        "max": max(lengths) if n else None,
        "mean": round(sum(lengths) / n, 2) if n else None,
        "over_limit": sum(1 for x in lengths if limit is not None and x > limit),
    }


def _kind(row: dict[str, Any]) -> str:
    if "messages" in row:
        return "chat"
    if "text" in row:
        return "text"
    raise ValueError(f"row {row.get('id')!r}: neither 'messages' nor 'text'; not a dataset row")


def _rejections(rejected: list[dict[str, Any]]) -> dict[str, Counter[str]]:
    out: dict[str, Counter[str]] = {}
    for i, item in enumerate(rejected):
        if not item.get("stage") or not item.get("reason"):
            raise ValueError(f"rejected item {i}: needs a 'stage' and a 'reason', got keys {sorted(item)}")
        out.setdefault(str(item["stage"]), Counter())[str(item["reason"])] += 1
    return out


def _funnel(
    funnel: list[tuple[str, int, int]], reasons: dict[str, Counter[str]]
) -> dict[str, dict[str, int]]:
    """Each stage's drops must equal its rejected items, else something was dropped without a trace."""
    stages: dict[str, dict[str, int]] = {}
    for stage, n_in, kept in funnel:
        if stage in stages:
            raise ValueError(f"funnel stage {stage!r} appears twice")
        if not 0 <= kept <= n_in:
            raise ValueError(f"funnel stage {stage!r}: kept={kept} must be in [0, in={n_in}]")
        n_rejected = sum(reasons.get(stage, Counter()).values())
        if n_in - kept != n_rejected:
            raise ValueError(
                f"funnel stage {stage!r}: in {n_in} - kept {kept} = {n_in - kept} dropped, but {n_rejected} "
                "rejected items name this stage; some items were dropped without a record"
            )
        stages[stage] = {"in": n_in, "kept": kept, "rejected": n_rejected}
    unknown = sorted(set(reasons) - set(stages))
    if unknown:
        raise ValueError(f"rejected items name stages missing from the funnel: {', '.join(unknown)}")
    return stages


def _check_lengths(splits: Mapping[str, list[dict[str, Any]]], token_lengths: Mapping[str, Any]) -> None:
    for split in sorted(set(splits) | set(token_lengths)):
        rows, lengths = len(splits.get(split, [])), len(token_lengths.get(split, []))
        if rows != lengths:
            raise ValueError(
                f"split {split!r}: {rows} rows but {lengths} token lengths; give one length per kept row"
            )


def _coverage(
    splits: Mapping[str, list[dict[str, Any]]],
    documents: Mapping[str, int],
    chunk_hits: Mapping[str, set[int]] | None,
) -> dict[str, dict[str, Any]]:
    per_source = {
        split: Counter(str(row.get("source", "")) for row in rows) for split, rows in splits.items()
    }
    coverage: dict[str, dict[str, Any]] = {}
    for source, n_chunks in sorted(documents.items()):
        hits: int | None = None
        if chunk_hits is not None:
            ids = chunk_hits.get(source, set())
            bad = sorted(i for i in ids if not 0 <= i < n_chunks)
            if bad:
                raise ValueError(f"chunk_hits[{source!r}]: chunk ids {bad[:5]} outside [0, {n_chunks})")
            hits = len(ids)
        coverage[source] = {
            "chunks": n_chunks,
            "chunks_with_examples": hits,
            "examples": {split: counts[source] for split, counts in per_source.items()},
        }
    if chunk_hits is not None and set(chunk_hits) - set(documents):
        raise ValueError(f"chunk_hits names unknown documents: {sorted(set(chunk_hits) - set(documents))}")
    return coverage


def compute_stats(
    splits: dict[str, list[dict[str, Any]]],
    rejected: list[dict[str, Any]],
    token_lengths: dict[str, list[int]],
    documents: dict[str, int],
    chunk_hits: dict[str, set[int]] | None,
    funnel: list[tuple[str, int, int]],
    *,
    token_limit: int | None = None,
) -> DatasetStats:
    """The numbers of a finished build.

    Args:
        splits: split name -> kept rows (chat and text rows together).
        rejected: every dropped item, each with at least ``stage`` and ``reason``.
        token_lengths: split name -> the token length of each row of that split (same count, any order).
        documents: source -> number of chunks it was cut into.
        chunk_hits: source -> ids (0-based, < chunks) of chunks that gave at least one kept example;
            None when unknown (coverage then reports ``chunks_with_examples: None``).
        funnel: (stage, in, kept) in build order.
        token_limit: count lengths strictly above this per split (``over_limit``).

    Raises:
        ValueError: a stage's ``in - kept`` differs from its rejected items (the message names the stage),
            rejected items name a stage not in the funnel, a split's token lengths do not match its rows,
            a rejected item lacks stage or reason, a row is neither chat nor text, or chunk ids are invalid.
    """
    reasons = _rejections(rejected)
    stages = _funnel(funnel, reasons)
    _check_lengths(splits, token_lengths)
    counts = {split: {"chat": 0, "text": 0} for split in splits}
    for split, rows in splits.items():
        for row in rows:
            counts[split][_kind(row)] += 1
    coverage = _coverage(splits, documents, chunk_hits)
    empty = [s for s, c in coverage.items() if not sum(c["examples"].values())]
    sources = {str(row.get("source", "")) for rows in splits.values() for row in rows}
    return DatasetStats(
        counts=counts,
        stages=stages,
        rejections={s: dict(reasons[s].most_common()) for s in stages if s in reasons},
        tokens={split: token_summary(token_lengths.get(split, []), token_limit) for split in splits},
        token_limit=token_limit,
        coverage=coverage,
        documents_without_examples=empty,
        unlisted_sources=sorted(sources - set(documents)),
        totals={
            "examples": sum(len(rows) for rows in splits.values()),
            "rejected": len(rejected),
            "documents": len(documents),
            "documents_without_examples": len(empty),
            "tokens": sum(sum(lengths) for lengths in token_lengths.values()),
        },
    )


def write_rejected(path: Path, rejected: list[dict[str, Any]]) -> int:
    """Write every rejected item to ``path`` (normally ``<dataset>/rejected.jsonl``) atomically; the count."""
    return write_jsonl(path, rejected)


def plot_token_histogram(
    lengths_by_split: Mapping[str, Sequence[int]], path: Path, limit: int | None = None
) -> Path:
    """Overlaid histograms of token lengths per split as a PNG (headless; empty splits allowed).

    The legend gives each split's count; a dashed line marks ``limit`` with how many lie above it.
    Written atomically; returns ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    everything = [x for lengths in lengths_by_split.values() for x in lengths]
    top = max([*everything, limit or 0, 1])
    # shared bins so the splits compare bar for bar; ~40 bins over the range
    width = max(1, math.ceil(top / 40))
    bins = list(range(0, top + 2 * width, width))
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for split, lengths in lengths_by_split.items():
        ax.hist(list(lengths), bins=bins, alpha=0.55, label=f"{split} (n={len(lengths)})")
    if limit is not None:
        over = sum(1 for x in everything if x > limit)
        ax.axvline(limit, color="#C44E52", linestyle="--", label=f"limit {limit} ({over} over)")
    if not everything:
        ax.text(0.5, 0.5, "no examples", transform=ax.transAxes, ha="center", va="center", color="gray")
    ax.set_xlabel("tokens per example")
    ax.set_ylabel("examples")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Token lengths per split")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".png.tmp")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    tmp.replace(path)
    return path


def format_stats(stats: DatasetStats, top: int = 5, max_docs: int = 5) -> str:
    """A short plain-text report for the CLI: funnel, top ``top`` rejection reasons, examples per split,
    token lengths and the first ``max_docs`` documents without examples."""
    lines = ["Funnel", f"  {'stage':<14}{'in':>8}{'kept':>8}{'rejected':>10}"]
    for stage, c in stats.stages.items():
        lines.append(f"  {stage:<14}{c['in']:>8}{c['kept']:>8}{c['rejected']:>10}")
    ranked = sorted(
        ((n, stage, reason) for stage, rs in stats.rejections.items() for reason, n in rs.items()),
        key=lambda t: -t[0],  # stable: ties stay in funnel order
    )
    if ranked:
        lines += ["", f"Top rejection reasons ({stats.totals['rejected']} rejected in all)"]
        lines += [f"  {n:>6}  {stage:<12}{reason}" for n, stage, reason in ranked[:top]]
    lines += ["", f"Examples ({stats.totals['examples']})"]
    lines += [f"  {split:<8}{c['chat']:>6} chat{c['text']:>6} text" for split, c in stats.counts.items()]
    over = f"{'>' + str(stats.token_limit):>8}" if stats.token_limit is not None else ""
    lines += [
        "",
        "Token lengths",
        "  " + f"{'split':<8}" + "".join(f"{k:>8}" for k in TOKEN_KEYS[:-1]) + over,
    ]
    for split, s in stats.tokens.items():
        row = "".join(f"{'-' if s[k] is None else s[k]:>8}" for k in TOKEN_KEYS[:-1])
        lines.append(f"  {split:<8}{row}" + (f"{s['over_limit']:>8}" if over else ""))
    missing = stats.documents_without_examples
    if missing:
        more = f", ... (+{len(missing) - max_docs} more)" if len(missing) > max_docs else ""
        lines += [
            "",
            f"Documents without examples: {len(missing)} of {stats.totals['documents']}",
            "  " + ", ".join(missing[:max_docs]) + more,
        ]
    if stats.unlisted_sources:
        lines += ["", "Sources not among the documents: " + ", ".join(stats.unlisted_sources[:max_docs])]
    return "\n".join(lines)
