"""Property tests of TextTable: whatever the bytes, a clean read or a HeadstartError, never a crash.

Well-formed tables (any separator, quoting, line ending, Unicode encoding with a byte-order
mark) must be read back row for row; mangled ones (truncated, stray quotes and separators,
mixed encodings, random bytes) may be refused, but only with a DataError or ConfigError.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headstart.data import LabelledData, TextTable
from headstart.data.samples import canonical_number
from headstart.errors import HeadstartError

FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
# No digits or capitals in texts, so no line of a multi-line text can read like a row (its
# label would have to be one of LABELS); everything else that trips CSV parsers is in.
TEXT_ALPHABET = string.ascii_lowercase + " ,;|\t\"'{}[]\n\r.!?-éüß中文😀"
LABELS = ["A1", "B2", "C", "0", "7.0", "07", "2.5"]
ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "utf-32"]
SEPARATORS = [",", "\t", ";", "|"]



def _expected_labels(raw: list[str]) -> list[str]:
    """Labels as TextTable reads them: all numbers are written one way, else as they are."""
    numbers = [canonical_number(x) for x in raw]
    return [str(n) for n in numbers] if None not in numbers else raw


texts = st.text(TEXT_ALPHABET, min_size=1, max_size=25).filter(str.strip)
labels = st.lists(st.sampled_from(LABELS), min_size=2, max_size=10).filter(
    lambda raw: len(set(_expected_labels(raw))) >= 2)


@pytest.fixture(scope="module")
def table_path(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _write(folder: Path, name: str, content: bytes) -> Path:
    path = folder / name
    path.write_bytes(content)
    return path


def _delimited(rows: list[tuple[str, str]], sep: str, label_first: bool, crlf: bool, quote_all: bool) -> str:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=sep, lineterminator="\r\n" if crlf else "\n",
                        quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL)
    order = (lambda pair: pair[::-1]) if label_first else (lambda pair: pair)
    writer.writerow(order(("text", "label")))
    writer.writerows(order(row) for row in rows)
    return out.getvalue()


def _outcome(path: Path, **options) -> LabelledData | HeadstartError:
    """The table, or the HeadstartError it raised; any other exception fails the test."""
    try:
        return TextTable(path, **options)
    except HeadstartError as error:
        assert str(error).strip()
        return error


@settings(FAST, max_examples=60)
@given(data=st.data(), sep=st.sampled_from(SEPARATORS), encoding=st.sampled_from(ENCODINGS),
       extension=st.sampled_from([".csv", ".tsv", ".txt", ".dat"]), label_first=st.booleans(),
       crlf=st.booleans(), quote_all=st.booleans())
def test_well_formed_delimited_tables_are_read_row_for_row(table_path, data, sep, encoding, extension,
                                                           label_first, crlf, quote_all):
    raw_labels = data.draw(labels)
    # With "\n" line ends a lone "\r" is not quoted by csv.writer, yet every reader ends a line there.
    rows = [(text if crlf else text.replace("\r", "\n"), label)
            for text, label in zip(data.draw(st.lists(texts, min_size=len(raw_labels),
                                                      max_size=len(raw_labels))), raw_labels)]
    content = _delimited(rows, sep, label_first, crlf, quote_all).encode(encoding)
    path = _write(table_path, f"t{extension}", content)
    table = TextTable(path)
    assert len(table) == len(rows) and table.skipped == []
    assert table.items == [text.strip() for text, _ in rows]
    assert table.labels == _expected_labels(raw_labels)
    unlabelled = TextTable(path, label=None)
    assert unlabelled.items == table.items and unlabelled.labels is None


@settings(FAST, max_examples=30)
@given(data=st.data(), encoding=st.sampled_from(ENCODINGS), ascii_only=st.booleans(),
       extension=st.sampled_from([".jsonl", ".ndjson", ".txt", ".csv"]), numbers=st.booleans())
def test_well_formed_jsonl_is_read_row_for_row(table_path, data, encoding, ascii_only, extension, numbers):
    raw_labels = data.draw(labels)
    text_values = [data.draw(st.text(min_size=1, max_size=30).filter(str.strip)) for _ in raw_labels]
    lines = []
    for text, label in zip(text_values, raw_labels):
        value = json.loads(label) if numbers and canonical_number(label) and label != "07" else label
        lines.append(json.dumps({"text": text, "label": value}, ensure_ascii=ascii_only))
    path = _write(table_path, f"t{extension}", "\n".join(lines).encode(encoding))
    table = TextTable(path)
    assert len(table) == len(lines) and table.items == [t.strip() for t in text_values]
    assert len(TextTable(path, label=None)) == len(lines)


def _mutate(content: bytes, data: st.DataObject) -> bytes:
    """Truncate, splice in quotes, separators, newlines, byte-order marks or foreign bytes."""
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(content)))
        kind = data.draw(st.sampled_from(["truncate", "insert", "bom", "foreign", "bytes"]))
        if kind == "truncate":
            content = content[:at]
        elif kind == "insert":
            piece = data.draw(st.text('",\t;|\n\r{}[] ', min_size=1, max_size=4))
            content = content[:at] + piece.encode() + content[at:]
        elif kind == "bom":
            bom = data.draw(st.sampled_from([codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE,
                                             codecs.BOM_UTF32_LE]))
            content = bom + content if data.draw(st.booleans()) else content[:at] + bom + content[at:]
        elif kind == "foreign":
            codec = data.draw(st.sampled_from(["utf-16-le", "cp1252", "latin-1", "utf-32"]))
            content = content[:at] + data.draw(texts).encode(codec, errors="replace") + content[at:]
        else:
            content = content[:at] + data.draw(st.binary(min_size=1, max_size=8)) + content[at:]
    return content


options = st.fixed_dictionaries({}, optional={
    "label": st.sampled_from(["label", None]), "sep": st.sampled_from([None, ",", "\t", ";", "|"]),
    "encoding": st.sampled_from([None, "utf-8", "utf-16", "latin-1"]), "skip_bad_rows": st.booleans(),
    "strict": st.booleans(), "format": st.sampled_from([None, "csv", "tsv", "jsonl"])})


def _check(outcome: LabelledData | HeadstartError) -> None:
    if isinstance(outcome, LabelledData):
        assert len(outcome.items) == len(outcome.locations) > 0
        if outcome.labels is not None:
            assert set(outcome.labels) <= set(outcome.classes) and len(outcome.classes) >= 2
            assert len(outcome.y) == len(outcome)


@settings(FAST, max_examples=70)
@given(data=st.data(), sep=st.sampled_from(SEPARATORS), encoding=st.sampled_from(ENCODINGS),
       jsonl=st.booleans(), extension=st.sampled_from([".csv", ".tsv", ".txt", ".jsonl", ".dat"]),
       given_options=options)
def test_mangled_tables_are_read_or_refused_cleanly(table_path, data, sep, encoding, jsonl, extension,
                                                     given_options):
    rows = [(data.draw(texts), label) for label in data.draw(labels)]
    if jsonl:
        text = "\n".join(json.dumps({"text": t, "label": label}) for t, label in rows)
    else:
        text = _delimited(rows, sep, data.draw(st.booleans()), data.draw(st.booleans()), False)
    content = _mutate(text.encode(encoding), data)
    if given_options.get("format") == "jsonl":
        given_options.pop("sep", None)
    _check(_outcome(_write(table_path, f"m{extension}", content), **given_options))


@settings(FAST, max_examples=40)
@given(content=st.binary(max_size=600), extension=st.sampled_from([".csv", ".tsv", ".txt", ".jsonl", ".bin"]),
       label=st.sampled_from(["label", None]), skip=st.booleans())
def test_random_bytes_are_read_or_refused_cleanly(table_path, content, extension, label, skip):
    _check(_outcome(_write(table_path, f"r{extension}", content), label=label, skip_bad_rows=skip))
