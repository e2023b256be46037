"""Text tables: CSV, TSV and JSON Lines files of texts and labels.

Real text files are messy: no header row, labels first or last, stray quotes, any
separator, Windows or UTF-16 encodings. ``TextTable`` reads the common shapes without
options and points at the exact line (or lines) of every row it refuses or drops.

Malformed rows. A quote left open makes a CSV parser read the following rows as part of
one field, so they vanish silently. A record is malformed, and named with its line range,
when (1) it has the wrong number of fields, (2) a quote is still open at the end of the
file, or (3) it spans several physical lines and one of the lines inside a field reads like
a complete row: parsed alone it has the table's number of fields, and every column but the
text holds a value seen in that column on the single-line rows (or a number, in a column of
numbers). A genuine multi-line text is kept, since its lines do not end in a known label;
in a one-column table only rule (2) can tell.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from headstart.data.samples import (
    DataIssue,
    LabelledData,
    canonical_number,
    report_issues,
    sorted_classes,
)
from headstart.errors import ConfigError, DataError, did_you_mean

__all__ = ["TextTable"]

logger = logging.getLogger(__name__)

FORMATS = ("csv", "tsv", "jsonl")
DELIMITERS = (",", "\t", ";", "|")
# The separator an extension or `format` suggests: it breaks ties between sniffed separators.
_HINTS = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".txt": "\t", "csv": ",", "tsv": "\t"}
_JSONL_EXTENSIONS = (".jsonl", ".ndjson")
_SEPARATOR_NAMES = {"\\t": "\t", "tab": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}
_MAX_LABELS = 50  # a headerless column with at most this many distinct values may be labels
_SNIFF_CHARS = 65536  # the separator is guessed from this much of the file...
_SNIFF_RECORDS = 200  # ...and at most this many records
_CONSISTENT = 0.75  # share of sampled records a separator must split into the same 2+ fields
_LISTED = 5  # malformed rows an error spells out
_MISSING = frozenset({"", "nan", "none", "null", "n/a"})  # label values that mean "no label"
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")  # never in text, so not cp1252 text either
_NEWLINE = re.compile(r"\r\n|\r|\n")
# Fed to the CSV parser after the last line: when a quote is still open, it lands in a field.
_EOF = "\x00\ufdd0\x00"

# A raw row before cleaning: (1-based line, text value, label value or None).
Row = tuple[int, str, str | None]
# What a reader returns: rows, malformed records, and unusable rows.
Read = tuple[list[Row], list[DataIssue], list[DataIssue]]


class _Record(NamedTuple):
    start: int  # first and last physical line
    end: int
    fields: list[str]
    unclosed: bool  # a quote was still open at the end of the file


# --- bytes to text -------------------------------------------------------------------------

def _decode_as(raw: bytes, path: Path, encoding: str, forced: bool = True) -> str:
    """``raw`` in ``encoding``: given by the user (``forced``) or by a byte-order mark."""
    try:
        codecs.lookup(encoding)
        return raw.decode(encoding)
    except LookupError:
        raise ConfigError(f"unknown text encoding {encoding!r}; pass a codec name such as "
                          "'utf-8', 'utf-16', 'cp1252' or 'latin-1'.") from None
    except (UnicodeError, ValueError) as exc:
        where = f" at byte {exc.start}" if isinstance(exc, UnicodeDecodeError) else ""
        unset = ", or leave it unset to detect it" if forced else ""
        raise DataError(f"{path} is not valid {encoding}{where}; pass its real encoding with "
                        f"`encoding=` (`--encoding`){unset}.") from None


def _legacy(raw: bytes, path: Path, offset: int, strict: bool) -> str:
    """cp1252, the usual encoding of old Windows files, when the bytes read as text in it."""
    where = f"{path} is not valid UTF-8 at byte {offset}"
    try:
        text: str | None = raw.decode("cp1252")
    except UnicodeDecodeError:  # bytes cp1252 leaves undefined
        text = None
    if text is None or _CONTROL.search(text):
        raise DataError(f"{where} nor cp1252 text, so its encoding could not be detected; pass "
                        "it with `encoding=` (`--encoding`), e.g. 'utf-16' or 'latin-1'.")
    if strict:
        raise DataError(f"{where}; save it as UTF-8, pass `encoding=` (`--encoding`), or load "
                        "without `strict` to read it as cp1252.")
    logger.warning("%s; read as cp1252", where)
    return text


def _decode(raw: bytes, path: Path, encoding: str | None, strict: bool) -> str:
    """The file's text: in ``encoding``, else by its byte-order mark, else UTF-8, else cp1252."""
    if encoding is not None:
        text = _decode_as(raw, path, encoding)
    elif raw.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        text = _decode_as(raw, path, "utf-32", forced=False)
    elif raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        text = _decode_as(raw, path, "utf-16", forced=False)
    else:
        bom = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
        try:
            text = raw[bom:].decode("utf-8")
        except UnicodeDecodeError as exc:
            text = _legacy(raw[bom:], path, exc.start + bom, strict)
    text = text.removeprefix("\ufeff")
    nul = text.find("\x00")
    if nul >= 0:
        raise DataError(f"{path}:{text.count(chr(10), 0, nul) + 1}: NUL character, so this is a "
                        "binary file or in another encoding (UTF-16 without a byte-order mark?); "
                        "pass its encoding with `encoding=` (`--encoding`).")
    return text


# --- layout: JSON Lines or which separator ---------------------------------------------------

def _separator(sep: str) -> str:
    value = _SEPARATOR_NAMES.get(sep.lower(), sep) if isinstance(sep, str) else sep
    if not isinstance(value, str) or len(value) != 1 or value in "\"\r\n" or not (
            value.isprintable() or value == "\t"):
        raise ConfigError(f"sep must be one character such as ',', ';', '|' or '\\t' (a tab). "
                          f"Got {sep!r} instead.")
    return value


def _consistency(sample: str, delimiter: str, cut: bool) -> float:
    """Share of the sample's records that ``delimiter`` splits into the most common 2+ fields;
    the last record does not count when the sample ``cut`` it short."""
    reader = csv.reader(io.StringIO(sample, newline=""), delimiter=delimiter)
    try:
        widths = [len(f) for f in itertools.islice(reader, _SNIFF_RECORDS) if any(x.strip() for x in f)]
    except csv.Error:
        return 0.0
    widths = widths[:-1] if cut and len(widths) > 1 else widths
    if not widths:
        return 0.0
    width, count = Counter(widths).most_common(1)[0]
    return count / len(widths) if width >= 2 else 0.0


def _sniff(content: str, hint: str | None) -> str | None:
    """The separator that splits the most records into the same number of fields; the
    extension's (``hint``) wins ties, and is the answer when none is consistent."""
    sample, cut = content[:_SNIFF_CHARS], len(content) > _SNIFF_CHARS
    shares = {d: _consistency(sample, d, cut) for d in DELIMITERS}
    best = max(shares.values())
    if best < _CONSISTENT:
        return hint
    tied = [d for d, share in shares.items() if share == best]
    return hint if hint in tied else tied[0]


def _layout(path: Path, content: str, format: str | None, sep: str | None) -> str | None:
    """The separator of a delimited table, or None for JSON Lines."""
    if sep is not None:
        return sep
    first = next((line for line in content.split("\n") if line.strip()), "").lstrip()
    suffix = path.suffix.lower()
    if format == "jsonl" or (format is None and (suffix in _JSONL_EXTENSIONS or first.startswith("{"))):
        return None
    found = _sniff(content, _HINTS.get(format or suffix))
    if found is None:
        raise DataError(f"cannot tell the format of {path}: no separator splits its lines evenly and "
                        "its extension is not .csv, .tsv, .txt or .jsonl; pass `format=` (`--format`) "
                        "or `sep=` (`--sep`).")
    return found


def _check_options(format: str | None, sep: str | None) -> str | None:
    """``sep`` as one character, once ``format`` and ``sep`` are valid together."""
    if format is not None and format not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}. Got {format!r} instead.")
    if sep is None:
        return None
    if format == "jsonl":
        raise ConfigError("a JSON Lines file has no separator; drop `sep=` (`--sep`) or "
                          "`format='jsonl'` (`--format jsonl`).")
    return _separator(sep)


# --- CSV / TSV -----------------------------------------------------------------------------

class MissingColumn(DataError):
    """A table lacks the column asked for; ``columns`` are the ones it has."""

    def __init__(self, message: str, name: str, columns: list[str]) -> None:
        super().__init__(message)
        self.name, self.columns = name, columns


def _missing_column(path: Path, name: str, columns: list[str], param: str) -> DataError:
    option = f"--{param}-column"
    images = " If it lists image paths, add `--modality image`." if param == "text" and "image" in columns else ""
    return MissingColumn(
        f"{path} has no column '{name}'; columns are: {', '.join(columns)}."
        f"{did_you_mean(name, columns)} Use `{option}` (`{param}=` in Python) to pick one.{images}", name, columns)


def _column(name: str, columns: list[str]) -> int | None:
    """Index of ``name`` in ``columns``; a unique case-insensitive match also counts."""
    if name in columns:
        return columns.index(name)
    folded = [i for i, c in enumerate(columns) if c.casefold() == name.casefold()]
    return folded[0] if len(folded) == 1 else None


def _where(path: Path, record: _Record) -> str:
    lines = str(record.start) if record.start == record.end else f"{record.start}-{record.end}"
    return f"{path}:{lines}"


def _records(text: str, delimiter: str, quoting: int, path: Path) -> list[_Record]:
    """Every record that is not blank, with its physical lines and whether a quote stayed open."""
    limit = len(text) + len(_EOF) + 1  # one field may be the whole file
    if csv.field_size_limit() < limit:
        csv.field_size_limit(limit)  # process-wide, so only ever raised
    lines = itertools.chain(io.StringIO(text, newline=""), [_EOF])
    reader = csv.reader(lines, delimiter=delimiter, quoting=quoting)
    records: list[_Record] = []
    end = 0
    try:
        for fields in reader:
            start, end = end + 1, reader.line_num
            if fields == [_EOF]:
                break
            unclosed = bool(fields) and fields[-1].endswith(_EOF)
            if unclosed:
                fields[-1], end = fields[-1][:-len(_EOF)], end - 1
            if any(f.strip() for f in fields):
                records.append(_Record(start, end, fields, unclosed))
    except csv.Error as exc:
        raise DataError(f"{path}:{end + 1}: cannot parse the row ({exc}).") from None
    return records


def _row_shape(records: list[_Record], width: int, ti: int, delimiter: str) -> Callable[[str], bool]:
    """A test of whether one line reads like a complete row of this table (module docstring)."""
    ordinary = [r.fields for r in records if r.start == r.end and not r.unclosed and len(r.fields) == width]
    columns = [c for c in range(width) if c != ti]
    seen = {c: {f[c].strip() for f in ordinary} for c in columns}
    numeric = {c: bool(seen[c]) and all(canonical_number(v) is not None for v in seen[c]
                                        if v.casefold() not in _MISSING) for c in columns}

    def looks_like_row(line: str) -> bool:
        fields = next(csv.reader([line], delimiter=delimiter), [])
        return bool(columns) and len(fields) == width and all(
            fields[c].strip() in seen[c] or (numeric[c] and canonical_number(fields[c]) is not None)
            for c in columns)
    return looks_like_row


def _swallowed_line(record: _Record, looks_like_row: Callable[[str], bool]) -> int | None:
    """The first line inside a multi-line field that reads like a row of its own (preferably
    one after the record's first line: that is the row the quote swallowed)."""
    found: list[int] = []
    line = record.start
    for field in record.fields:
        pieces = _NEWLINE.split(field)
        found += [line + offset for offset, piece in enumerate(pieces[:-1]) if looks_like_row(piece)]
        line += len(pieces) - 1
    later = [n for n in found if n > record.start]
    return (later or found or [None])[0]


def _problem(record: _Record, width: int, looks_like_row: Callable[[str], bool]) -> str | None:
    """Why a record is malformed, or None when it is a proper row."""
    lines = f"lines {record.start}-{record.end}"
    if record.unclosed:
        return (f"unclosed quote: this row swallowed {lines} up to the end of the file"
                if record.end > record.start else "unclosed quote")
    if len(record.fields) != width:
        found = f"expected {width} fields, found {len(record.fields)}"
        return found if record.end == record.start else f"{found} over {lines} (an unclosed quote?)"
    swallowed = None if record.end == record.start else _swallowed_line(record, looks_like_row)
    if swallowed is not None:
        return f"unclosed quote: this row swallowed {lines} (line {swallowed} reads like a row of its own)"
    return None


def _rows_from_records(path: Path, records: list[_Record], width: int, ti: int, li: int | None,
                       delimiter: str) -> Read:
    rows: list[Row] = []
    bad: list[DataIssue] = []
    looks_like_row = _row_shape(records, width, ti, delimiter)
    for record in records:
        problem = _problem(record, width, looks_like_row)
        if problem is not None:
            bad.append(DataIssue(_where(path, record), problem))
            continue
        fields = record.fields
        rows.append((record.start, fields[ti], None if li is None else fields[li]))
    return rows, bad, []


def _label_column(path: Path, records: list[_Record]) -> int:
    """Pick the label column of a headerless 2-column file: the one with few distinct values."""
    pairs = [r.fields for r in records if len(r.fields) == 2]
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


def _read_headerless(path: Path, text: str, delimiter: str, labelled: bool,
                     records: list[_Record]) -> Read:
    if delimiter == "\t":  # headerless TSV files are plain sentences: quotes in them are text
        records = _records(text, delimiter, csv.QUOTE_NONE, path)
    if len(records[0].fields) == 1:
        logger.info("%s: no header row; reading one text per line", path)
        return _rows_from_records(path, records, 1, 0, None, delimiter)
    li = _label_column(path, records)
    first = records[0].fields
    first_label = first[li].strip() if len(first) == 2 else ""
    counts = Counter(r.fields[li].strip() for r in records if len(r.fields) == 2)
    if counts[first_label] == 1 and len(counts) > 1:  # the first row is a header after all
        raise _missing_column(path, "text", [f.strip() for f in first], "text")
    ti = 1 - li
    logger.info("%s: no header row; reading column %d as text and column %d as label "
                "(%d distinct labels)", path, ti + 1, li + 1, len(counts))
    return _rows_from_records(path, records, 2, ti, li if labelled else None, delimiter)


def _read_delimited(path: Path, text: str, delimiter: str, text_col: str, label_col: str | None) -> Read:
    records = _records(text, delimiter, csv.QUOTE_MINIMAL, path)
    if not records:
        raise DataError(f"{path} has no rows; expected a header row and one row per sample.")
    header = [h.strip() for h in records[0].fields]
    ti = _column(text_col, header)
    defaults = text_col == "text" and label_col in ("label", None)
    headerless = ti is None and defaults and (len(header) == 2 or (len(header) == 1 and label_col is None))
    if records[0].end > records[0].start and not (headerless and delimiter == "\t"):
        raise DataError(f"{_where(path, records[0])}: the first row has an unclosed quote that runs "
                        f"over lines {records[0].start}-{records[0].end}; close it.")
    if headerless:
        return _read_headerless(path, text, delimiter, label_col is not None, records)
    if ti is None:
        raise _missing_column(path, text_col, header, "text")
    li = None
    if label_col is not None:
        li = _column(label_col, header)
        if li is None:
            raise _missing_column(path, label_col, header, "label")
    return _rows_from_records(path, records[1:], len(header), ti, li, delimiter)


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


def _json_objects(path: Path, text: str) -> tuple[list[tuple[int, dict[str, Any]]], list[DataIssue]]:
    """The JSON objects of the file with their lines, and the lines that are none."""
    objects: list[tuple[int, dict[str, Any]]] = []
    bad: list[DataIssue] = []
    for line, content in enumerate(text.split("\n"), start=1):
        if not content.strip():
            continue
        try:
            value = json.loads(content)
        except json.JSONDecodeError as exc:
            bad.append(DataIssue(f"{path}:{line}", f"not valid JSON ({exc.msg})"))
            continue
        except (ValueError, RecursionError):  # a number too long, nesting too deep
            bad.append(DataIssue(f"{path}:{line}", "not valid JSON (too long a number or too deep)"))
            continue
        if not isinstance(value, dict):
            bad.append(DataIssue(f"{path}:{line}", "not a JSON object"))
            continue
        objects.append((line, value))
    if not objects:
        raise DataError(f"{path} has no valid JSON lines; expected one object per line, "
                        'e.g. {"text": "...", "label": "..."}')
    return objects, bad


def _read_jsonl(path: Path, text: str, text_col: str, label_col: str | None) -> Read:
    objects, bad = _json_objects(path, text)
    keys = list(dict.fromkeys(k for _, obj in objects for k in obj))
    names: list[str | None] = []
    for name, param in ((text_col, "text"), (label_col, "label")):
        index = None if name is None else _column(name, keys)
        if name is not None and index is None:
            raise _missing_column(path, name, keys, param)
        names.append(None if index is None else keys[index])
    text_key, label_key = names

    rows: list[Row] = []
    unusable: list[DataIssue] = []
    for line, obj in objects:
        text_value = _as_string(obj.get(text_key))
        label_value = None if label_key is None else _as_string(obj.get(label_key))
        if text_value is None or (label_key is not None and label_value is None):
            unusable.append(DataIssue(f"{path}:{line}", "text or label is not a string or number"))
            continue
        rows.append((line, text_value, label_value))
    return rows, bad, unusable


# --- the table -----------------------------------------------------------------------------

def _read_rows(path: Path, text: str, label: str | None, format: str | None, sep: str | None,
               encoding: str | None, strict: bool) -> Read:
    if not path.is_file():
        raise DataError(f"{path} does not exist; check the path to the text table."
                        if not path.exists() else f"{path} is not a file.")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}.") from None
    content = _decode(raw, path, encoding, strict)
    if not content.strip():
        raise DataError(f"{path} is empty; expected a header row and one row per sample.")
    delimiter = _layout(path, content, format, sep)
    if delimiter is None:
        return _read_jsonl(path, content, text, label)
    return _read_delimited(path, content, delimiter, text, label)


def _refuse_malformed(path: Path, bad: list[DataIssue]) -> DataError:
    listed = "; ".join(str(issue) for issue in bad[:_LISTED])
    more = f"; and {len(bad) - _LISTED} more" if len(bad) > _LISTED else ""
    what = listed if len(bad) == 1 else f"{path}: {len(bad)} malformed rows: {listed}{more}"
    return DataError(f"{what}. Fix the quotes or separators there, or pass `skip_bad_rows=True` "
                     "(`--skip-bad-rows`) to skip malformed rows.")


def _usable_rows(path: Path, rows: list[Row],
                 issues: list[DataIssue]) -> tuple[list[str], list[str | None], list[str], int]:
    """Texts, labels and locations of the rows with a text and (if labelled) a label, and the
    number of missing labels; the other rows join ``issues``."""
    texts, labels, locations, missing = [], [], [], 0
    for line, text_value, label_value in rows:
        location = f"{path}:{line}"
        label_value = None if label_value is None else label_value.strip()
        if not text_value.strip():
            issues.append(DataIssue(location, "empty text"))
        elif label_value is not None and label_value.casefold() in _MISSING:
            missing += 1
            issues.append(DataIssue(location, f"missing label ({label_value})" if label_value
                                    else "missing label"))
        else:
            texts.append(text_value.strip())
            labels.append(label_value)
            locations.append(location)
    return texts, labels, locations, missing


def _read_labels(path: Path, labels: list[str], missing: int) -> tuple[list[str], dict[str, Any]]:
    """One class per number: when every label is a number, "7", "7.0" and "07" are class "7".
    Also returns how the labels were read, for the run to record."""
    numbers = {raw: canonical_number(raw) for raw in set(labels)}
    numeric = bool(numbers) and None not in numbers.values()
    merged = {raw: str(number) for raw, number in sorted(numbers.items()) if numeric and raw != number}
    if merged:
        labels = [str(numbers[raw]) for raw in labels]
        shown = ", ".join(f"'{raw}' as '{number}'" for raw, number in list(merged.items())[:_LISTED])
        logger.info("%s: labels are numbers; read %s%s", path, shown, " ..." if len(merged) > _LISTED else "")
    return labels, {"numeric": numeric, "merged": merged, "missing": missing}


def _labelled(path: Path, texts: list[str], labels: list[str], locations: list[str],
              issues: list[DataIssue], missing: int, min_per_class: int, min_classes: int) -> LabelledData:
    labels, reading = _read_labels(path, labels, missing)
    classes = sorted_classes(labels)
    if len(classes) < min_classes:
        raise DataError(f"{path} needs at least {min_classes} classes, found {len(classes)}: "
                        f"{', '.join(repr(c) for c in classes)}; add rows of the other classes.")
    data = LabelledData("text", texts, labels, classes=classes, locations=locations,
                        skipped=issues, source=str(path), label_reading=reading)
    for name, count in data.class_counts().items():
        if count < min_per_class:
            raise DataError(f"class '{name}' in {path} has {count} usable rows, fewer than the "
                            f"{min_per_class} required; add rows or lower `min_per_class`.")
    logger.info("%s: %d texts in %d classes", path, len(data), len(classes))
    return data


def _first_line(issue: DataIssue) -> int:
    return int(issue.location.rsplit(":", 1)[1].split("-")[0])


def TextTable(path: str | os.PathLike[str], *, text: str = "text", label: str | None = "label",
              strict: bool = False, format: str | None = None, min_per_class: int = 1,
              sep: str | None = None, encoding: str | None = None,
              skip_bad_rows: bool = False, min_classes: int = 2) -> LabelledData:
    """Read texts (and labels) from a CSV, TSV or JSONL file into :class:`LabelledData`.

    ``text`` and ``label`` name the columns (or JSON keys); ``label=None`` reads an
    unlabelled table for prediction. Headerless 2-column files are detected when both
    names are left at their defaults. The separator (``,`` tab ``;`` ``|``) is guessed from
    the content, the extension or ``format`` breaking ties; ``sep`` forces it. The encoding
    is UTF-8, UTF-16/32 with a byte-order mark, or cp1252; ``encoding`` forces it.
    Malformed rows (see the module docstring) raise :class:`DataError` unless
    ``skip_bad_rows``; unusable rows (empty text, missing label such as ``NaN``) are skipped.
    Skipped rows get one warning naming their lines, or raise when ``strict``. Labels that
    are all numbers are read as numbers, so "7" and "7.0" are one class; ``label_reading``
    of the result records how. ``min_classes``: 2 to train on; 1 to score a model on texts of one class.
    """
    path = Path(path).expanduser()
    sep = _check_options(format, sep)
    rows, bad, issues = _read_rows(path, text, label, format, sep, encoding, strict)
    if bad and not skip_bad_rows:
        raise _refuse_malformed(path, bad)
    issues.extend(bad)
    texts, labels, locations, missing = _usable_rows(path, rows, issues)
    issues.sort(key=_first_line)
    report_issues(issues, str(path), "rows", strict)
    if not texts:
        raise DataError(f"{path} has no usable rows ({len(issues)} skipped).")
    if label is None:
        return LabelledData("text", texts, None, locations=locations, skipped=issues,
                            source=str(path))
    return _labelled(path, texts, [str(x) for x in labels], locations, issues, missing, min_per_class,
                     min_classes)
