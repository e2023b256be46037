"""Text tables: CSV/TSV/JSONL shapes, headerless files, encodings and row problems."""

from __future__ import annotations

import logging
import pickle

import pytest
import torch

from headstart.data import TextCollate, TextTable
from headstart.errors import ConfigError, DataError

AMAZON_STYLE = (
    'So there is no way to plug it in here.\t0\n'
    'Good case, "Excellent value.\t1\n'
    'Great for the jawbone.\t1\n'
    'Tied to charger for conversations lasting more than 45 minutes.\t0\n'
    'The mic is great.\t1\n'
    'I have to jiggle the plug to get it to line up right.\t0\n'
)
SMS_STYLE = (
    "ham\tGo until jurong point, crazy..\n"
    "ham\tOk lar... Joking wif u oni...\n"
    "spam\tFree entry in 2 a wkly comp to win FA Cup final tkts\n"
    "ham\tU dun say so early hor...\n"
    "spam\tWINNER!! As a valued network customer you have been selected\n"
    "ham\tNah I don't think he goes to usf\n"
)


def test_csv_reads_quoted_commas_and_newlines_with_physical_line_numbers(make_text_table):
    path = make_text_table("reviews.csv", 'text,label\n"Good, cheap",pos\n'
                                          '"two\nlines",neg\nplain,pos\n')
    data = TextTable(path)
    assert data.modality == "text"
    assert data.items == ["Good, cheap", "two\nlines", "plain"]
    assert data.labels == ["pos", "neg", "pos"] and data.classes == ["neg", "pos"]
    assert data.locations == [f"{path}:2", f"{path}:3", f"{path}:5"]


def test_tsv_with_header_is_read(make_text_table):
    data = TextTable(make_text_table("r.tsv", "label\ttext\n1\tnice\n0\tbad, really\n"))
    assert data.items == ["nice", "bad, really"] and data.labels == ["1", "0"]


def test_jsonl_bad_line_is_skipped_with_its_line_number(make_text_table, caplog):
    path = make_text_table("r.jsonl", '{"text": "fine", "label": 1}\n\n{broken\n'
                                      '{"text": "meh", "label": 0}\n')
    with caplog.at_level(logging.WARNING, logger="headstart"):
        data = TextTable(path)
    assert data.items == ["fine", "meh"] and data.labels == ["1", "0"]
    assert data.locations == [f"{path}:1", f"{path}:4"]
    assert [str(i) for i in data.skipped] == [f"{path}:3: not valid JSON (Expecting property "
                                              "name enclosed in double quotes)"]
    assert f"{path}:3" in caplog.text


def test_headerless_amazon_style_tsv_keeps_stray_quotes(make_text_table, caplog):
    with caplog.at_level(logging.INFO, logger="headstart"):
        data = TextTable(make_text_table("amazon.txt", AMAZON_STYLE))
    assert len(data) == 6 and data.classes == ["0", "1"]
    assert data.items[1] == 'Good case, "Excellent value.'
    assert data.labels[:3] == ["0", "1", "1"]
    assert "no header row" in caplog.text


def test_headerless_label_first_tsv_is_detected(make_text_table):
    data = TextTable(make_text_table("SMSSpamCollection.tsv", SMS_STYLE))
    assert data.classes == ["ham", "spam"]
    assert data.items[0] == "Go until jurong point, crazy.."
    assert data.class_counts() == {"ham": 4, "spam": 2}


def test_two_column_file_with_other_header_names_asks_for_the_column(make_text_table):
    path = make_text_table("s.csv", "sentence,label\n" + "".join(
        f"text number {i},{i % 2}\n" for i in range(8)))
    with pytest.raises(DataError, match="has no column 'text'; columns are: sentence, label"):
        TextTable(path)
    assert TextTable(path, text="sentence").labels[:2] == ["0", "1"]


def test_custom_column_names_and_case_insensitive_match(make_text_table):
    path = make_text_table("r.csv", "id,Review,Stars\n1,great,5\n2,awful,1\n")
    data = TextTable(path, text="review", label="stars")
    assert data.items == ["great", "awful"] and data.classes == ["1", "5"]


def test_missing_text_column_lists_columns_and_suggests_the_closest(make_text_table):
    path = make_text_table("reviews.csv", "text,label\nhi,a\nho,b\n")
    with pytest.raises(DataError) as error:
        TextTable(path, text="txt")
    assert (f"{path} has no column 'txt'; columns are: text, label. Did you mean 'text'? "
            "Use `--text-column`") in str(error.value)


def test_missing_label_column_is_an_error(make_text_table):
    path = make_text_table("reviews.csv", "text,label\nhi,a\nho,b\n")
    with pytest.raises(DataError, match="no column 'lable'.*Did you mean 'label'.*--label-column"):
        TextTable(path, label="lable")
    with pytest.raises(DataError, match="has no column 'stars'; columns are: text, label"):
        TextTable(make_text_table("r.jsonl", '{"text": "a", "label": "b"}\n'), label="stars")


def test_empty_text_missing_label_and_bad_rows_are_reported_by_line(make_text_table, caplog):
    path = make_text_table("reviews.csv", "text,label\ngood,pos\n   ,neg\nbad,\n"
                                          "one,two,three\nfine,neg\n")
    with caplog.at_level(logging.WARNING, logger="headstart"):
        data = TextTable(path)
    assert data.items == ["good", "fine"]
    assert [str(i) for i in data.skipped] == [
        f"{path}:3: empty text", f"{path}:4: missing label",
        f"{path}:5: expected 2 fields, found 3"]
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_strict_raises_on_skipped_rows(make_text_table):
    path = make_text_table("reviews.csv", "text,label\ngood,pos\n,neg\nok,neg\n")
    with pytest.raises(DataError, match=r"reviews\.csv:3: empty text"):
        TextTable(path, strict=True)


def test_cp1252_file_is_read_with_a_warning(make_text_table, caplog):
    path = make_text_table("old.csv", "text,label\ncafé crème,a\nplain,b\n".encode("cp1252"))
    with caplog.at_level(logging.WARNING, logger="headstart"):
        data = TextTable(path)
    assert data.items[0] == "café crème"
    assert "not valid UTF-8 at byte 14; read as cp1252" in caplog.text
    with pytest.raises(DataError, match="not valid UTF-8 at byte 14"):
        TextTable(path, strict=True)


def test_utf8_bom_is_accepted(make_text_table):
    data = TextTable(make_text_table("bom.csv", "\ufefftext,label\nhi,a\nho,b\n"))
    assert data.items == ["hi", "ho"]


def test_unlabelled_table_for_prediction(make_text_table):
    data = TextTable(make_text_table("new.csv", "text\nfirst\nsecond\n"), label=None)
    assert data.items == ["first", "second"] and data.labels is None and data.classes == []
    lines = TextTable(make_text_table("lines.txt", "just a sentence\nanother one\n"), label=None)
    assert lines.items == ["just a sentence", "another one"]


def test_empty_file_single_class_and_unknown_format_are_errors(make_text_table):
    with pytest.raises(DataError, match="is empty"):
        TextTable(make_text_table("e.csv", "\n\n"))
    with pytest.raises(DataError, match="needs at least 2 classes, found 1: 'pos'"):
        TextTable(make_text_table("one.csv", "text,label\na,pos\nb,pos\n"))
    with pytest.raises(DataError, match="cannot tell the format"):
        TextTable(make_text_table("r.dat", "text,label\na,x\nb,y\n"))
    with pytest.raises(ConfigError, match="format must be one of"):
        TextTable(make_text_table("r.csv", "text,label\na,x\nb,y\n"), format="xml")


def test_format_option_overrides_the_extension(make_text_table):
    data = TextTable(make_text_table("r.dat", '{"text": "a", "label": "x"}\n'
                                              '{"text": "b", "label": "y"}\n'), format="jsonl")
    assert data.labels == ["x", "y"]


def test_min_per_class_is_enforced(make_text_table):
    path = make_text_table("r.csv", "text,label\na,x\nb,x\nc,y\n")
    with pytest.raises(DataError, match="class 'y' .* has 1 usable rows, fewer than the 2"):
        TextTable(path, min_per_class=2)


# --- TextCollate -----------------------------------------------------------------------------


class FakeTokenizer:
    """Stands in for a Hugging Face tokenizer: records its arguments, returns lengths."""

    def __call__(self, texts, padding, truncation, max_length, return_tensors):
        assert padding is True and truncation is True and return_tensors == "pt"
        lengths = [min(len(t.split()), max_length) for t in texts]
        ids = torch.zeros(len(texts), max(lengths), dtype=torch.int64)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def test_text_collate_tokenizes_a_batch_and_pickles():
    collate = pickle.loads(pickle.dumps(TextCollate(FakeTokenizer(), max_length=3)))
    batch = collate(["a b", "a b c d e"])
    assert isinstance(batch, dict) and batch["input_ids"].shape == (2, 3)
    encoded, labels = collate([("a", 1), ("b c", 0)])
    assert encoded["input_ids"].shape == (2, 2) and labels.tolist() == [1, 0]
