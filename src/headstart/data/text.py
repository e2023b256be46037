"""Text tables: CSV, TSV and JSON Lines files of texts and labels.

Real text files are messy: no header row, labels first or last, stray quotes,
Windows encodings. ``TextTable`` reads the common shapes without options and points at
the exact line of every row it drops.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from headstart.data.samples import DataIssue, LabelledData, report_issues, sorted_classes
from headstart.errors import ConfigError, DataError, did_you_mean

__all__ = ["TextTable"]

logger = logging.getLogger(__name__)

FORMATS = ("csv", "tsv", "jsonl")
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".txt": "tsv",
               ".jsonl": "jsonl", ".ndjson": "jsonl"}
_MAX_LABELS = 50  # a headerless column with at most this many distinct values may be labels

# A raw row before cleaning: (1-based line, text value, label value or None).
Row = tuple[int, str, str | None]


def _format_of(path: Path, format: str | None) -> str:
    if format is not None:
        if format not in FORMATS:
            raise ConfigError(
                f"format must be one of {', '.join(FORMATS)}. Got {format!r} instead.")
        return format
    found = _EXTENSIONS.get(path.suffix.lower())
    if found is None:
        raise DataError(f"cannot tell the format of {path} from its extension; "
                        "pass `format=` (`--format`) as 'csv', 'tsv' or 'jsonl'.")
    return found


def _decode(raw: bytes, path: Path, strict: bool) -> str:
    """UTF-8 (with or without BOM); else cp1252 with a warning, or an error when strict."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        offset = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
        where = f"{path} is not valid UTF-8 at byte {exc.start + offset}"
        if strict:
            raise DataError(f"{where}; save it as UTF-8, or load without `strict` "
                            "to read it as cp1252.") from None
        logger.warning("%s; read as cp1252", where)
        return raw.decode("cp1252", errors="replace")


def _missing_column(path: Path, name: str, columns: list[str], param: str) -> DataError:
    option = f"--{param}-column"
    return DataError(
        f"{path} has no column '{name}'; columns are: {', '.join(columns)}."
        f"{did_you_mean(name, columns)} Use `{option}` (`{param}=` in Python) to pick one."
    )


def _column(name: str, columns: list[str]) -> int | None:
    """Index of ``name`` in ``columns``; a unique case-insensitive match also counts."""
    if name in columns:
        return columns.index(name)
    folded = [i for i, c in enumerate(columns) if c.casefold() == name.casefold()]
    return folded[0] if len(folded) == 1 else None


# --- CSV / TSV -----------------------------------------------------------------------------

def _records(text: str, delimiter: str, quoting: int,
             path: Path) -> Iterator[tuple[int, list[str]]]:
    """Yield (first physical line, fields) per record, skipping blank lines."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    end = 0
    try:
        for fields in reader:
            start, end = end + 1, reader.line_num
            if fields and any(f.strip() for f in fields):
                yield start, fields
    except csv.Error as exc:
        raise DataError(f"{path}:{end + 1}: cannot parse the row ({exc}).") from None


def _label_column(path: Path, records: list[tuple[int, list[str]]]) -> int:
    """Pick the label column of a headerless 2-column file: the one with few distinct values."""
    pairs = [fields for _, fields in records if len(fields) == 2]
    distinct = [len({f[i].strip() for f in pairs}) for i in (0, 1)]
    looks = [d <= _MAX_LABELS and d < len(pairs) / 2 for d in distinct]
    if not any(looks):
        raise DataError(
            f"{path} has no header row with a 'text' column, and neither of its 2 columns "
            "looks like class labels; add a header row, e.g. text,label"
        )
    if looks[0] and looks[1]:
        return 0 if distinct[0] < distinct[1] else 1
    return 0 if looks[0] else 1


def _read_delimited(path: Path, text: str, delimiter: str, text_col: str,
                    label_col: str | None) -> tuple[list[Row], list[DataIssue]]:
    first_line = next(line for line in text.split("\n") if line.strip()).rstrip("\r")
    header = [h.strip() for h in next(csv.reader([first_line], delimiter=delimiter))]
    ti = _column(text_col, header)
    defaults = text_col == "text" and label_col in ("label", None)
    if ti is None and defaults and (len(header) == 2 or (len(header) == 1 and label_col is None)):
        return _read_headerless(path, text, delimiter, label_col is not None)
    if ti is None:
        raise _missing_column(path, text_col, header, "text")
    li = None
    if label_col is not None:
        li = _column(label_col, header)
        if li is None:
            raise _missing_column(path, label_col, header, "label")
    records = list(_records(text, delimiter, csv.QUOTE_MINIMAL, path))[1:]
    return _rows_from_records(path, records, len(header), ti, li)


def _read_headerless(path: Path, text: str, delimiter: str,
                     labelled: bool) -> tuple[list[Row], list[DataIssue]]:
    # Headerless TSV files are plain sentences: quotes in them are text, not quoting.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    records = list(_records(text, delimiter, quoting, path))
    if len(records[0][1]) == 1:
        logger.info("%s: no header row; reading one text per line", path)
        return _rows_from_records(path, records, 1, 0, None)
    li = _label_column(path, records)
    first_label = records[0][1][li].strip() if len(records[0][1]) == 2 else ""
    counts = Counter(f[li].strip() for _, f in records if len(f) == 2)
    if counts[first_label] == 1 and len(counts) > 1:  # the first row is a header after all
        raise _missing_column(path, "text", [f.strip() for f in records[0][1]], "text")
    ti = 1 - li
    logger.info("%s: no header row; reading column %d as text and column %d as label "
                "(%d distinct labels)", path, ti + 1, li + 1, len(counts))
    return _rows_from_records(path, records, 2, ti, li if labelled else None)


def _rows_from_records(path: Path, records: list[tuple[int, list[str]]], width: int, ti: int,
                       li: int | None) -> tuple[list[Row], list[DataIssue]]:
    rows: list[Row] = []
    issues: list[DataIssue] = []
    for line, fields in records:
        if len(fields) != width:
            problem = f"expected {width} fields, found {len(fields)}"
            issues.append(DataIssue(f"{path}:{line}", problem))
            continue
        rows.append((line, fields[ti], None if li is None else fields[li]))
    return rows, issues


# --- JSON Lines ----------------------------------------------------------------------------

def _as_string(value: Any) -> str | None:
    """A JSON value as text: strings as they are, numbers as written, null as ''."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float, bool)):
        return json.dumps(value)
    return None


def _read_jsonl(path: Path, text: str, text_col: str,
                label_col: str | None) -> tuple[list[Row], list[DataIssue]]:
    objects: list[tuple[int, dict[str, Any]]] = []
    issues: list[DataIssue] = []
    for line, content in enumerate(text.split("\n"), start=1):
        if not content.strip():
            continue
        try:
            value = json.loads(content)
        except json.JSONDecodeError as exc:
            issues.append(DataIssue(f"{path}:{line}", f"not valid JSON ({exc.msg})"))
            continue
        if not isinstance(value, dict):
            issues.append(DataIssue(f"{path}:{line}", "not a JSON object"))
            continue
        objects.append((line, value))
    if not objects:
        raise DataError(f"{path} has no valid JSON lines; expected one object per line, "
                        'e.g. {"text": "...", "label": "..."}')
    keys = list(dict.fromkeys(k for _, obj in objects for k in obj))
    names: list[str | None] = []
    for name, param in ((text_col, "text"), (label_col, "label")):
        index = None if name is None else _column(name, keys)
        if name is not None and index is None:
            raise _missing_column(path, name, keys, param)
        names.append(None if index is None else keys[index])
    text_key, label_key = names

    rows: list[Row] = []
    for line, obj in objects:
        text_value = _as_string(obj.get(text_key))
        label_value = None if label_key is None else _as_string(obj.get(label_key))
        if text_value is None or (label_key is not None and label_value is None):
            issues.append(DataIssue(f"{path}:{line}", "text or label is not a string or number"))
            continue
        rows.append((line, text_value, label_value))
    return rows, issues


# --- the table -----------------------------------------------------------------------------

def _usable_rows(path: Path, rows: list[Row], issues: list[DataIssue]) -> tuple[list[str], list, list[str]]:
    """Texts, labels and locations of the rows with a text and (if labelled) a label; the others
    join ``issues``."""
    texts, labels, locations = [], [], []
    for line, text_value, label_value in rows:
        location = f"{path}:{line}"
        if not text_value.strip():
            issues.append(DataIssue(location, "empty text"))
        elif label_value is not None and not label_value.strip():
            issues.append(DataIssue(location, "missing label"))
        else:
            texts.append(text_value.strip())
            labels.append(None if label_value is None else label_value.strip())
            locations.append(location)
    return texts, labels, locations


def TextTable(path: str | os.PathLike[str], *, text: str = "text", label: str | None = "label",
              strict: bool = False, format: str | None = None,
              min_per_class: int = 1) -> LabelledData:
    """Read texts (and labels) from a CSV, TSV or JSONL file into :class:`LabelledData`.

    ``text`` and ``label`` name the columns (or JSON keys); ``label=None`` reads an
    unlabelled table for prediction. Headerless 2-column files are detected when both
    names are left at their defaults. Unusable rows are skipped with one warning naming
    their lines, or raise :class:`DataError` when ``strict``.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path} does not exist; check the path to the text table."
                        if not path.exists() else f"{path} is not a file.")
    kind = _format_of(path, format)
    content = _decode(path.read_bytes(), path, strict)
    if not content.strip():
        raise DataError(f"{path} is empty; expected a header row and one row per sample.")
    if kind == "jsonl":
        rows, issues = _read_jsonl(path, content, text, label)
    else:
        rows, issues = _read_delimited(path, content, "," if kind == "csv" else "\t", text, label)

    texts, labels, locations = _usable_rows(path, rows, issues)
    issues.sort(key=lambda issue: int(issue.location.rsplit(":", 1)[1]))
    report_issues(issues, str(path), "rows", strict)
    if not texts:
        raise DataError(f"{path} has no usable rows ({len(issues)} skipped).")
    if label is None:
        return LabelledData("text", texts, None, locations=locations, skipped=issues,
                            source=str(path))
    classes = sorted_classes(labels)
    if len(classes) < 2:
        raise DataError(f"{path} needs at least 2 classes, found {len(classes)}: "
                        f"{', '.join(repr(c) for c in classes)}; add rows of the other classes.")
    data = LabelledData("text", texts, labels, classes=classes, locations=locations,
                        skipped=issues, source=str(path))
    for name, count in data.class_counts().items():
        if count < min_per_class:
            raise DataError(f"class '{name}' in {path} has {count} usable rows, fewer than the "
                            f"{min_per_class} required; add rows or lower `min_per_class`.")
    logger.info("%s: %d texts in %d classes", path, len(data), len(classes))
    return data
