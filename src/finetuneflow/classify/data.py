"""Labelled CSV in, checked examples out: the data half of sequence classification.

A file is read whole (classification sets are small next to the model), decoded like every other
text file (:func:`finetuneflow.text.clean.decode_bytes`), its delimiter sniffed, and every bad row
reported at once with its row number, so a user fixes the sheet in one pass.
"""

from __future__ import annotations

import csv
import io
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from finetuneflow.classify.config import ClassifyConfig
from finetuneflow.errors import ClassifyDataError, ReaderError
from finetuneflow.text.clean import decode_bytes

DELIMITERS = ",\t;|"
MAX_LISTED = 10  # bad rows named in one error; more are counted


@dataclass(frozen=True)
class Example:
    """One labelled text; ``row`` is its row in the file (the header is row 1, as in a spreadsheet)."""

    text: str
    label: str
    row: int


@dataclass
class LabelledFile:
    """A parsed CSV plus what was detected while reading it (recorded in the run's manifest)."""

    path: Path
    examples: list[Example]
    encoding: str
    delimiter: str
    skipped_blank: int = 0
    columns: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Examples per label, labels sorted by name."""
        return dict(sorted(Counter(e.label for e in self.examples).items()))


def read_labelled_csv(path: Path, text_column: str = "text", label_column: str = "label") -> LabelledFile:
    """Read a CSV/TSV with a header row naming ``text_column`` and ``label_column``.

    Fully blank rows are skipped (and counted); a row whose text or label is empty is an error.

    Raises:
        ClassifyDataError: unreadable or binary file, no header with both columns, or bad rows.
    """
    try:
        text, encoding = decode_bytes(path.read_bytes())
    except OSError as err:
        raise ClassifyDataError(f"cannot read {path}: {err}") from None
    except ReaderError as err:  # binary or damaged text
        raise ClassifyDataError(f"{path}: {err}") from None
    if not text.strip():
        raise ClassifyDataError(f"{path} is empty; it needs a header row and labelled rows")
    delimiter, header = _pick_delimiter(text, path, text_column, label_column)
    text_at, label_at = _column(header, text_column), _column(header, label_column)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    next(reader)  # the header, already checked
    examples: list[Example] = []
    problems: list[str] = []
    blank, line = 0, reader.line_num
    for cells in reader:
        row, line = line + 1, reader.line_num  # a quoted field may span lines: the row starts here
        if not any(c.strip() for c in cells):
            blank += 1
            continue
        value = cells[text_at] if text_at < len(cells) else ""
        label = cells[label_at].strip() if label_at < len(cells) else ""
        missing = [name for name, v in ((text_column, value.strip()), (label_column, label)) if not v]
        if missing:
            problems.append(f"row {row}: {' and '.join(missing)} is empty")
        else:
            examples.append(Example(value, label, row))
    if problems:
        raise ClassifyDataError(_listing(path, problems, "rows without text or label; fill or delete them"))
    if not examples:
        raise ClassifyDataError(f"{path} has a header but no labelled rows")
    return LabelledFile(path, examples, encoding, delimiter, blank, header)


def _pick_delimiter(text: str, path: Path, text_column: str, label_column: str) -> tuple[str, list[str]]:
    """The delimiter whose header row holds both columns: csv.Sniffer's guess first, then the others.

    The sniffer guesses from character frequencies, so a TSV whose texts are full of commas can fool
    it; the header is the ground truth that settles it.
    """
    sample = text[:65536]
    try:
        guesses = [csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter]
    except csv.Error:  # one column, or too little text to tell
        guesses = []
    guesses += [d for d in DELIMITERS if d not in guesses]
    first_header: list[str] = []
    for delimiter in guesses:
        header = [
            h.strip().lstrip("\ufeff") for h in next(csv.reader(io.StringIO(sample), delimiter=delimiter))
        ]
        first_header = first_header or header
        if _column(header, text_column) >= 0 and _column(header, label_column) >= 0:
            return delimiter, header
    raise ClassifyDataError(
        f"{path}: the first row must be a header naming the columns '{text_column}' and '{label_column}' "
        f"(comma, tab, ';' or '|' separated); it reads {first_header[:8]}. Add a header row, or set "
        "text_column / label_column to the names your file uses."
    )


def _column(header: list[str], name: str) -> int:
    """Index of ``name`` in the header: exact match first, then ignoring case; -1 if absent."""
    if name in header:
        return header.index(name)
    lowered = [h.lower() for h in header]
    return lowered.index(name.lower()) if name.lower() in lowered else -1


def _listing(path: Path, problems: list[str], fix: str) -> str:
    shown = "\n".join(f"  {p}" for p in problems[:MAX_LISTED])
    more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    return f"{path}: {len(problems)} {fix}:\n{shown}{more}"


def label_names(train: list[Example], min_per_class: int = 2) -> list[str]:
    """The labels sorted by name (so ids are stable across runs and machines); id = list index.

    Raises:
        ClassifyDataError: fewer than two classes, or a class with fewer than ``min_per_class``
            examples (it could not be on both sides of a split, nor be learned).
    """
    counts = Counter(e.label for e in train)
    if len(counts) < 2:
        only = next(iter(counts), "")
        raise ClassifyDataError(
            f"classification needs at least 2 classes; every row is labelled {only!r}. "
            "Add examples of the other classes."
        )
    rare = [
        f"class {label!r} has {n} example (row {next(e.row for e in train if e.label == label)})"
        for label, n in sorted(counts.items())
        if n < min_per_class
    ]
    if rare:
        raise ClassifyDataError(
            f"every class needs at least {min_per_class} examples, so it can be both trained on and "
            "evaluated: " + "; ".join(rare) + ". Add examples, or merge or delete the class."
        )
    return sorted(counts)


def check_eval_labels(eval_examples: list[Example], names: list[str], path: Path) -> None:
    """Raise ClassifyDataError if the eval file holds a label the training file never shows."""
    known = set(names)
    unknown = [f"row {e.row}: label {e.label!r}" for e in eval_examples if e.label not in known]
    if unknown:
        raise ClassifyDataError(
            _listing(path, unknown, f"eval rows with labels not in the training file (known: {names})")
        )


def stratified_split(
    examples: list[Example], eval_fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """Split each class on its own, so both sides keep the class proportions; seeded, deterministic.

    Each class puts round(n * eval_fraction) examples in eval, at least 1 and at most n - 1, so every
    class is trained on and measured. Both sides keep the file's order (shuffling is the loop's job).
    """
    rng = random.Random(seed)
    eval_rows: set[int] = set()
    by_label: dict[str, list[Example]] = {}
    for e in examples:
        by_label.setdefault(e.label, []).append(e)
    for label in sorted(by_label):  # fixed class order: the rng draws the same numbers every time
        members = by_label[label]
        n_eval = min(len(members) - 1, max(1, round(len(members) * eval_fraction)))
        eval_rows.update(e.row for e in rng.sample(members, n_eval))
    train = [e for e in examples if e.row not in eval_rows]
    held = [e for e in examples if e.row in eval_rows]
    return train, held


@dataclass
class ClassifyData:
    """The examples of both sides, checked, with the label names (id = index) and the files read."""

    train: list[Example]
    eval: list[Example]
    names: list[str]
    files: dict[str, LabelledFile]  # "train_csv" and, when given, "eval_csv"

    def counts(self, side: list[Example]) -> dict[str, int]:
        """Examples per class of one side, in label-id order."""
        return {n: sum(1 for e in side if e.label == n) for n in self.names}


def load_data(csv_path: Path, cfg: ClassifyConfig, eval_csv: Path | None = None) -> ClassifyData:
    """Read the CSV(s), map labels, and split stratified unless an eval CSV is given.

    Raises:
        ClassifyDataError: bad rows, fewer than 2 classes, a class with 1 example, unknown eval labels.
    """
    train_file = read_labelled_csv(csv_path, cfg.text_column, cfg.label_column)
    files = {"train_csv": train_file}
    names = label_names(train_file.examples)
    if eval_csv is not None:
        eval_file = read_labelled_csv(eval_csv, cfg.text_column, cfg.label_column)
        check_eval_labels(eval_file.examples, names, eval_csv)
        files["eval_csv"] = eval_file
        return ClassifyData(train_file.examples, eval_file.examples, names, files)
    if cfg.eval_fraction <= 0:
        raise ClassifyDataError(
            "eval_fraction is 0 and no eval CSV was given: nothing to measure accuracy on. "
            "Set eval_fraction (e.g. 0.2) or pass an eval CSV."
        )
    train, held = stratified_split(train_file.examples, cfg.eval_fraction, cfg.seed)
    return ClassifyData(train, held, names, files)
