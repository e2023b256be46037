"""Text tables: CSV/TSV/JSONL shapes, headerless files, encodings and row problems."""

from __future__ import annotations

import codecs
import csv
import logging
import pickle

import pytest
import torch

from headstart.data import TextCollate, TextTable, stratified_split
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


def test_jsonl_bad_line_is_an_error_or_skipped_with_its_line_number(make_text_table, caplog):
    path = make_text_table("r.jsonl", '{"text": "fine", "label": 1}\n\n{broken\n'
                                      '{"text": "meh", "label": 0}\n')
    with pytest.raises(DataError, match=r"r\.jsonl:3: not valid JSON .*--skip-bad-rows"):
        TextTable(path)
    with caplog.at_level(logging.WARNING, logger="headstart"):
        data = TextTable(path, skip_bad_rows=True)
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
    with pytest.raises(DataError, match=r"reviews\.csv:5: expected 2 fields, found 3\. Fix"):
        TextTable(path)
    with caplog.at_level(logging.WARNING, logger="headstart"):
        data = TextTable(path, skip_bad_rows=True)
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
    with pytest.raises(DataError, match=r"cannot tell the format of .*r\.dat.*`sep=`"):
        TextTable(make_text_table("r.dat", "text\nfirst text\nsecond text\n"), label=None)
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


def test_unknown_extension_is_read_by_its_separator(make_text_table):
    data = TextTable(make_text_table("r.dat", "text,label\na,x\nb,y\n"))
    assert data.items == ["a", "b"] and data.labels == ["x", "y"]


# --- malformed rows --------------------------------------------------------------------------

SWALLOWED = ('text,label\na,pos\nb,neg\n"oops, no closing quote,pos\nc,neg\nd,pos\n'
             '"quoted",neg\ne,pos\n')


def test_unclosed_quote_that_swallows_rows_is_an_error_naming_the_lines(make_text_table):
    path = make_text_table("reviews.csv", SWALLOWED)
    with pytest.raises(DataError) as error:
        TextTable(path)
    assert str(error.value).startswith(
        f"{path}:4-7: unclosed quote: this row swallowed lines 4-7 (line 5 reads like a row of its "
        "own). Fix the quotes or separators there, or pass `skip_bad_rows=True` (`--skip-bad-rows`)")


def test_skip_bad_rows_skips_malformed_rows_with_one_warning(make_text_table, caplog):
    path = make_text_table("reviews.csv", SWALLOWED + "f,neg,extra\n,pos\n")
    with caplog.at_level(logging.WARNING, logger="headstart"):
        data = TextTable(path, skip_bad_rows=True)
    assert data.items == ["a", "b", "e"]
    assert [i.location for i in data.skipped] == [f"{path}:4-7", f"{path}:9", f"{path}:10"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"{path}:4-7" in warnings[0] and f"{path}:9" in warnings[0]
    with pytest.raises(DataError, match=r"3 unusable rows: .*reviews\.csv:4-7: unclosed quote"):
        TextTable(path, skip_bad_rows=True, strict=True)


def test_quote_left_open_to_the_end_of_the_file_is_an_error(make_text_table):
    path = make_text_table("reviews.csv", 'text,label\na,pos\nb,neg\n"oops,pos\nc,neg\nd,pos\n')
    with pytest.raises(DataError, match=r"reviews\.csv:4-6: unclosed quote: this row swallowed "
                                        r"lines 4-6 up to the end of the file"):
        TextTable(path)
    last = make_text_table("last.csv", 'text,label\na,pos\nb,neg\n"oops,pos')
    with pytest.raises(DataError, match=r"last\.csv:4: unclosed quote\. Fix"):
        TextTable(last)


def test_many_malformed_rows_are_counted_and_listed(make_text_table):
    path = make_text_table("r.csv", "text,label\n" + "".join(f"t{i},a,b\nu{i},b\n" for i in range(8)))
    with pytest.raises(DataError, match=r"r\.csv: 8 malformed rows: .*r\.csv:2: expected 2 fields, "
                                        r"found 3; .*; and 3 more\. Fix"):
        TextTable(path)


def test_genuine_multi_line_quoted_text_is_read(make_text_table):
    path = make_text_table("r.csv", 'text,label\n"first line\nsecond line, with a comma\n'
                                    'ends here",pos\nplain,neg\n"two\r\nlines",neg\n')
    data = TextTable(path)
    assert data.items == ["first line\nsecond line, with a comma\nends here", "plain", "two\r\nlines"]
    assert data.locations == [f"{path}:2", f"{path}:5", f"{path}:6"]


def test_a_field_count_off_over_several_lines_points_at_the_quote(make_text_table):
    path = make_text_table("r.csv", 'text,label\na,pos\n"oops,pos\nb,neg\n"x, y",neg\nc,pos\n')
    with pytest.raises(DataError, match=r"r\.csv:3-5: expected 2 fields, found 3 over lines 3-5 "
                                        r"\(an unclosed quote\?\)"):
        TextTable(path)


def test_header_with_an_unclosed_quote_is_an_error(make_text_table):
    path = make_text_table("r.csv", '"text,label\na,pos\nb,neg\n"c",pos\n')
    with pytest.raises(DataError, match=r"r\.csv:1-4: the first row has an unclosed quote that runs "
                                        r"over lines 1-4; close it\."):
        TextTable(path)


def test_a_text_longer_than_the_csv_field_size_limit_is_read(make_text_table):
    long = "word " * 40_000  # 200,000 characters, over csv's default limit of 131,072
    before = csv.field_size_limit()
    data = TextTable(make_text_table("long.dat", f'text,label\n"{long}",a\nshort,b\n'))
    assert data.items[0] == long.strip() and len(data) == 2
    assert csv.field_size_limit() >= before
    csv.field_size_limit(10**9)
    TextTable(make_text_table("again.csv", f'text,label\n"{long}",a\nshort,b\n'))
    assert csv.field_size_limit() == 10**9  # never lowered
    csv.field_size_limit(before)


# --- separators and formats ------------------------------------------------------------------

def test_separator_is_sniffed_from_the_content_not_the_extension(make_text_table):
    tsv = TextTable(make_text_table("tabs.csv", "text\tlabel\nhello, world\tpos\nbye\tneg\n"))
    assert tsv.items == ["hello, world", "bye"] and tsv.classes == ["neg", "pos"]
    semicolons = TextTable(make_text_table("s.txt", "text;label\nhi, you;a\nho;b\n"))
    assert semicolons.items == ["hi, you", "ho"]
    pipes = TextTable(make_text_table("p.csv", 'text|label\n"a|b, c"|x\nd;e|y\n'))
    assert pipes.items == ["a|b, c", "d;e"] and pipes.labels == ["x", "y"]


def test_extension_breaks_a_tie_between_separators(make_text_table):
    content = "text,a\tlabel,b\nhello,1\tpos,2\nbye,3\tneg,4\n"  # both split every line evenly
    as_tsv = TextTable(make_text_table("t.tsv", content), text="text,a", label="label,b")
    assert as_tsv.items == ["hello,1", "bye,3"]
    as_csv = TextTable(make_text_table("t.csv", content), text="text", label="b")
    assert as_csv.items == ["hello", "bye"] and as_csv.labels == ["2", "4"]
    as_format = TextTable(make_text_table("t.dat", content), format="tsv", text="text,a", label="label,b")
    assert as_format.items == ["hello,1", "bye,3"]


def test_sep_forces_the_separator(make_text_table):
    path = make_text_table("r.csv", "text;x,label\nhello;1,a\nbye;2,b\nmore;3,a\n")
    assert TextTable(path, text="text;x").labels == ["a", "b", "a"]
    forced = TextTable(path, sep=";", text="text", label="x,label")
    assert forced.items == ["hello", "bye", "more"] and forced.labels == ["1,a", "2,b", "3,a"]
    tabs = make_text_table("t.csv", "text\tlabel\nhi, a, b\tx\nho\ty\n")
    assert TextTable(tabs, sep="\\t").items == TextTable(tabs, sep="tab").items == ["hi, a, b", "ho"]


def test_bad_sep_and_sep_with_jsonl_are_config_errors(make_text_table):
    path = make_text_table("r.csv", "text,label\na,x\nb,y\n")
    for bad in (",,", '"', "\n", ""):
        with pytest.raises(ConfigError, match="sep must be one character"):
            TextTable(path, sep=bad)
    with pytest.raises(ConfigError, match="a JSON Lines file has no separator"):
        TextTable(path, sep=",", format="jsonl")


def test_jsonl_is_recognised_by_its_content(make_text_table):
    data = TextTable(make_text_table("r.txt", '\n{"text": "a", "label": "x"}\n'
                                              '{"text": "b", "label": "y"}\n'))
    assert data.items == ["a", "b"] and data.locations[0].endswith(":2")


# --- encodings -------------------------------------------------------------------------------

TABLE = "text,label\ncafé crème,a\nnaïve,b\n"


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-be", "utf-8-sig"])
def test_unicode_files_with_a_byte_order_mark_are_read(make_text_table, codec):
    content = TABLE.encode(codec)
    if codec in ("utf-16-le", "utf-16-be", "utf-32-be"):
        bom = {"utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE,
               "utf-32-be": codecs.BOM_UTF32_BE}[codec]
        content = bom + content
    data = TextTable(make_text_table("u.csv", content))
    assert data.items == ["café crème", "naïve"] and data.labels == ["a", "b"]


def test_utf16_without_a_byte_order_mark_and_nul_bytes_are_errors(make_text_table):
    ascii_only = "text,label\ncafe,a\nnaive,b\n"
    with pytest.raises(DataError, match=r"u\.csv:1: NUL character.*UTF-16.*`encoding=` \(`--encoding`\)"):
        TextTable(make_text_table("u.csv", ascii_only.encode("utf-16-le")))
    with pytest.raises(DataError, match=r"w\.csv is not valid UTF-8 .*could not be detected.*'utf-16'"):
        TextTable(make_text_table("w.csv", TABLE.encode("utf-16-le")))
    with pytest.raises(DataError, match=r"n\.csv:3: NUL character"):
        TextTable(make_text_table("n.csv", b"text,label\na,x\nb\x00c,y\n"))
    assert TextTable(make_text_table("le.csv", TABLE.encode("utf-16-le")),
                     encoding="utf-16-le").items == ["café crème", "naïve"]
    broken = codecs.BOM_UTF16_LE + "text,label\n".encode("utf-16-le") + b"\x00\xd8a\x00"
    with pytest.raises(DataError, match=r"x\.csv is not valid utf-16 at byte 24; pass its real "
                                        r"encoding with `encoding=` \(`--encoding`\)\.$"):
        TextTable(make_text_table("x.csv", broken))


def test_bytes_in_no_detectable_encoding_are_an_error(make_text_table):
    with pytest.raises(DataError, match=r"b\.csv is not valid UTF-8 at byte 0 nor cp1252 text, so "
                                        r"its encoding could not be detected; .*`--encoding`"):
        TextTable(make_text_table("b.csv", bytes([0x81, 0x8D]) + TABLE.encode()))
    with pytest.raises(DataError, match="could not be detected"):
        TextTable(make_text_table("c.csv", b"text,label\n\xff\x01\x02,a\nb,c\n"))


def test_encoding_option_forces_the_codec(make_text_table):
    path = make_text_table("l.csv", TABLE.encode("latin-1"))
    assert TextTable(path, encoding="latin-1").items == ["café crème", "naïve"]
    with pytest.raises(ConfigError, match="unknown text encoding 'klingon'"):
        TextTable(path, encoding="klingon")
    with pytest.raises(ConfigError, match="unknown text encoding 'base64'"):
        TextTable(path, encoding="base64")
    with pytest.raises(DataError, match=r"l\.csv is not valid ascii at byte 14; .*`--encoding`"):
        TextTable(path, encoding="ascii")


# --- labels ----------------------------------------------------------------------------------

def test_labels_that_are_the_same_number_are_one_class(make_text_table):
    labels = ["0", "0.0", "00", "+0", "-0", "7", "7.0", "07.00", "1.5", "1.50", "10"]
    path = make_text_table("n.csv", "text,label\n" + "".join(f"t{i},{x}\n" for i, x in enumerate(labels)))
    data = TextTable(path)
    assert data.classes == ["0", "1.5", "7", "10"]
    assert data.labels == ["0"] * 5 + ["7"] * 3 + ["1.5", "1.5", "10"]
    assert data.label_reading == {"numeric": True, "missing": 0, "merged": {
        "+0": "0", "-0": "0", "0.0": "0", "00": "0", "07.00": "7", "1.50": "1.5", "7.0": "7"}}


def test_labels_are_left_as_written_when_some_are_not_numbers(make_text_table):
    path = make_text_table("m.csv", "text,label\na,7\nb,7.0\nc,seven\n")
    data = TextTable(path)
    assert data.classes == ["7", "7.0", "seven"]
    assert data.label_reading == {"numeric": False, "merged": {}, "missing": 0}


def test_missing_value_markers_are_missing_labels_not_classes(make_text_table, caplog):
    markers = ["NaN", "nan", "None", "null", "NULL", "N/A", ""]
    path = make_text_table("m.csv", "text,label\nx,1\ny,2.0\n" + "".join(f"t{i},{m}\n" for i, m in enumerate(markers)))
    with caplog.at_level(logging.WARNING, logger="headstart"):
        data = TextTable(path)
    assert data.classes == ["1", "2"] and len(data) == 2
    assert [str(i) for i in data.skipped][:2] == [f"{path}:4: missing label (NaN)", f"{path}:5: missing label (nan)"]
    assert str(data.skipped[-1]) == f"{path}:10: missing label"
    assert data.label_reading == {"numeric": True, "merged": {"2.0": "2"}, "missing": 7}
    assert f"{path}:9: missing label (N/A)" in caplog.text


def test_json_null_label_is_missing(make_text_table):
    path = make_text_table("r.jsonl", '{"text": "a", "label": null}\n{"text": "b", "label": 1}\n'
                                      '{"text": "c", "label": 2.0}\n{"text": "d", "label": "NaN"}\n')
    data = TextTable(path)
    assert data.labels == ["1", "2"]
    assert [str(i) for i in data.skipped] == [f"{path}:1: missing label", f"{path}:4: missing label (NaN)"]


def test_label_reading_is_kept_by_subsets_splits_and_summary(make_text_table):
    path = make_text_table("r.csv", "text,label\n" + "".join(f"t{i},{i % 2}.0\n" for i in range(10)))
    data = TextTable(path)
    reading = {"numeric": True, "merged": {"0.0": "0", "1.0": "1"}, "missing": 0}
    train, test = data.split(test=0.4)
    assert data.label_reading == train.label_reading == test.label_reading == reading
    assert data.with_classes(["0", "1", "2"]).label_reading == reading
    assert data.summary()["label_reading"] == reading
    assert TextTable(path, label=None).label_reading is None


def test_errors_name_classes_by_their_names(make_text_table):
    path = make_text_table("r.csv", "text,label\n" + "".join(f"t{i},{x}\n" for i, x in enumerate(
        ["0", "0.0", "7", "7.0", "9", "9", "9", "9", "12.0"])))
    data = TextTable(path)
    assert data.classes == ["0", "7", "9", "12"]
    with pytest.raises(DataError, match="class '12' has 1 sample: too few"):
        data.split(test=0.3)
    with pytest.raises(DataError, match=r"class '12' in .*r\.csv has 1 usable rows, fewer than the 2"):
        TextTable(path, min_per_class=2)
    with pytest.raises(DataError, match="the class with index 3 .pass `class_names=`"):
        stratified_split(data.y, [0.3], 0)


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
