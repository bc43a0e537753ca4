"""Remove lines that repeat across the pages of one document (running headers, footers, page numbers)."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace

from finetuneflow.records import SourceRecord

_DIGITS = re.compile(r"\d+")


def _key(line: str) -> str:
    # "Page 3 of 12" and "Page 4 of 12" are the same footer: compare with digits masked
    return _DIGITS.sub("#", " ".join(line.split()).casefold())


def strip_repeated_lines(
    records: list[SourceRecord], min_pages: int = 3, share: float = 0.5
) -> tuple[list[SourceRecord], int]:
    """Drop lines found on at least ``share`` of a document's pages (and on ``min_pages`` or more).

    Only paged text records (PDF pages) are considered; returns the new records and the number of
    lines removed.
    """
    paged = [r for r in records if r.kind == "text" and r.page is not None]
    if len(paged) < min_pages:
        return records, 0
    seen: Counter[str] = Counter()
    for rec in paged:
        seen.update({_key(line) for line in rec.text.splitlines() if line.strip()})
    need = max(min_pages, share * len(paged))
    repeated = {k for k, n in seen.items() if n >= need}
    if not repeated:
        return records, 0
    removed = 0
    out: list[SourceRecord] = []
    for rec in records:
        if rec.kind == "text" and rec.page is not None:
            kept = [ln for ln in rec.text.splitlines() if _key(ln) not in repeated or not ln.strip()]
            removed += len(rec.text.splitlines()) - len(kept)
            rec = replace(rec, text="\n".join(kept).strip())
        out.append(rec)
    return [r for r in out if r.text], removed
