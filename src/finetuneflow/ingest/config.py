"""The ingest step's settings (read by the step and by its worker processes)."""

from __future__ import annotations

from dataclasses import dataclass

from finetuneflow.config import setting
from finetuneflow.ingest.limits import Limits
from finetuneflow.text.dedup import DedupConfig


@dataclass
class IngestConfig:
    """How files are read, chunked, cleaned and deduplicated."""

    tokenizer: str = setting("smollm2-135m-instruct", "Model whose tokenizer counts chunk tokens.")
    max_tokens: int = setting(512, "Largest chunk, in tokens of that tokenizer.")
    overlap: int = setting(50, "Tokens repeated between consecutive chunks of a document.")
    max_file_mb: float = setting(1024.0, "Files larger than this are refused (with a message), not read.")
    max_record_mb: float = setting(
        64.0,
        "One record larger than this is refused: a JSON string, item or document read whole, a JSONL "
        "or CSV line, a file of a type read whole (PDF, DOCX, HTML, code...). Text is streamed.",
    )
    max_depth: int = setting(100, "JSON nested deeper than this (lists and objects) is refused.")
    reread: bool = setting(
        False,
        "Read unchanged files again too (after raising max_depth or max_record_mb, or installing "
        "OCR, for the parts a file skipped); off: a re-run reads only new and changed files.",
    )
    segment_mb: float = setting(
        1.0,
        "Larger files are read, cleaned and tokenized in pieces of this size (memory stays flat); "
        "smaller ones are read whole, many files per worker task.",
    )
    min_chars: int = setting(20, "Chunks shorter than this many characters are dropped (and recorded).")
    dedup: bool = setting(True, "Drop exact and near-duplicate chunks within the project (recorded).")
    near_threshold: float = setting(
        0.8, "Jaccard similarity (character 5-grams) that counts as near-duplicate."
    )
    num_perm: int = setting(128, "MinHash slots per signature for near-duplicate detection.")
    shingle: int = setting(5, "Character n-gram length for near-duplicate detection.")
    scrub_pii: bool = setting(
        False, "Replace e-mails, phones, IPs, IBANs, cards, keys with typed placeholders."
    )
    domain: str = setting("", "Only ingest collections of this domain ('' = everything).")
    workers: int = setting(0, "Processes reading files in parallel (0 = all cores, 1 = in-process).")

    def problems(self) -> list[str]:
        out = []
        if self.max_tokens < 16:
            out.append("max_tokens: must be >= 16")
        if not 0 <= self.overlap < self.max_tokens // 2:
            out.append("overlap: must be >= 0 and less than half of max_tokens")
        if min(self.max_file_mb, self.max_record_mb, self.segment_mb) <= 0:
            out.append("max_file_mb, max_record_mb, segment_mb: must be > 0")
        if self.max_depth < 2:
            out.append("max_depth: must be >= 2")
        if self.min_chars < 0 or self.workers < 0:
            out.append("min_chars, workers: must be >= 0")
        out += self.dedup_config().problems()
        return out

    def limits(self) -> Limits:
        """The limits the readers apply."""
        return Limits(self.max_depth, self.max_record_mb, int(self.segment_mb * 2**20))

    def dedup_config(self) -> DedupConfig:
        return DedupConfig(num_perm=self.num_perm, shingle=self.shingle, threshold=self.near_threshold)
