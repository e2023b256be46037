"""Opening what a command names: an image folder, a table of texts or image paths, or texts typed on
the command line, as :class:`~headstart.data.LabelledData`. No torch: commands that only read data and
cached features stay light."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Union

from ..errors import ConfigError, DataError
from .images import ImageFiles, ImageFolder, ImageTable
from .reading import ReadOptions
from .samples import LabelledData
from .text import MissingColumn, TextTable

__all__ = ["DEFAULT_TEXT_COLUMN", "TEXT_SUFFIXES", "Inputs", "as_inputs", "open_data", "open_inputs", "open_texts",
           "open_unlabelled"]

Inputs = Union[LabelledData, str, os.PathLike, Sequence[Union[str, os.PathLike]]]
"""What a fitted model predicts on: data read by headstart, or texts / image paths given directly."""

TEXT_SUFFIXES = {".csv", ".tsv", ".txt", ".jsonl", ".ndjson"}
DEFAULT_TEXT_COLUMN = "text"


def open_data(path: str | Path, text_column: str = DEFAULT_TEXT_COLUMN, label_column: str | None = "label",
              strict: bool = False, reading: ReadOptions | None = None, min_classes: int = 2) -> LabelledData:
    """An image folder (one sub-folder per class), a text table, or a table of image paths (with
    ``reading.modality`` "image", or an ``image`` column and no text one); ``reading`` says how
    (modality, separator, encoding, bad rows, pixel cap) where defaults do not fit. ``min_classes``: 2
    to train on, 1 to score a model."""
    path, reading = Path(path), reading or ReadOptions()
    if path.is_dir():
        if reading.modality == "text":
            raise DataError(f"{path} is a folder, which holds images; texts come in a table (.csv, .tsv, .jsonl): "
                            "drop `--modality text` or give the table.")
        return ImageFolder(path, strict=strict, min_classes=min_classes, **reading.image_options())
    if path.suffix.lower() in TEXT_SUFFIXES:
        if reading.modality == "image":
            return ImageTable(path, image=_image_column(text_column), label=label_column, strict=strict,
                              min_classes=min_classes, **reading.image_options(), **reading.table_options())
        try:
            return TextTable(path, text=text_column, label=label_column, strict=strict, min_classes=min_classes,
                             **reading.table_options())
        except MissingColumn as missing:  # no text column but an image one: a table of image paths
            if reading.modality or text_column != DEFAULT_TEXT_COLUMN or missing.name != text_column \
                    or "image" not in missing.columns:
                raise
        return ImageTable(path, image="image", label=label_column, strict=strict, min_classes=min_classes,
                          **reading.image_options(), **reading.table_options())
    if not path.exists():
        raise DataError(f"{path} does not exist.")
    raise DataError(f"{path} is neither a folder of class folders nor a table (.csv, .tsv, .jsonl).")


def _image_column(text_column: str) -> str:
    """The column of image paths: the one `--text-column` names, or ``image`` when it was left alone."""
    return "image" if text_column == DEFAULT_TEXT_COLUMN else text_column


def open_inputs(paths: Sequence[str | Path], modality: str, text_column: str = DEFAULT_TEXT_COLUMN,
                reading: ReadOptions | None = None) -> LabelledData:
    """Unlabelled inputs to predict: image files or folders, or one table of image paths; for a text
    model one table, or the texts themselves (arguments that name no file, e.g. ``predict RUN "great phone"``)."""
    reading = reading or ReadOptions()
    if reading.modality not in (None, modality):
        raise ConfigError(f"`--modality {reading.modality}` contradicts the model, which takes {modality}s; "
                          "leave `--modality` out.")
    if modality == "image":
        if any(not str(p).strip() for p in paths):  # Path("") is ".": the folder the command runs in
            raise DataError("An empty path was given among the inputs; name image files or folders.")
        if len(paths) == 1 and Path(paths[0]).suffix.lower() in TEXT_SUFFIXES and Path(paths[0]).is_file():
            return ImageTable(paths[0], image=_image_column(text_column), label=None, **reading.image_options(),
                              **reading.table_options())
        return ImageFiles([Path(p) for p in paths], **reading.image_options())
    files = [p for p in paths if str(p).strip() and Path(p).exists()]  # a blank text is no path
    if len(paths) == 1 and files:
        return TextTable(Path(paths[0]), text=text_column, label=None, **reading.table_options())
    if files:
        raise DataError(f"{files[0]} is a file among texts; give one table (.csv, .tsv, .jsonl), or texts only.")
    tables = [p for p in paths if Path(p).suffix.lower() in TEXT_SUFFIXES]
    if tables:
        raise DataError(f"{tables[0]} does not exist; check the path to the text table.")
    return open_texts([str(p) for p in paths])


def as_inputs(data: Inputs, modality: str) -> LabelledData:
    """``data`` as a model predicts on it: as it is when headstart read it, else a text or image path,
    or a list of them, one row each in the order given (image folders given are searched, and their
    unreadable images skipped with a warning)."""
    if isinstance(data, LabelledData):
        return data
    if isinstance(data, (str, os.PathLike)):
        data = [data]
    kind = "texts" if modality == "text" else "image paths"
    if not isinstance(data, Sequence) and isinstance(data, Iterable) and not isinstance(data, (bytes, dict)):
        data = list(data)  # a numpy array or a pandas Series of texts or paths
    if not isinstance(data, Sequence):
        raise DataError(f"A {modality} model predicts on data headstart read (hs.ImageFolder, hs.ImageFiles, "
                        f"hs.TextTable) or a list of {kind}; got {type(data).__name__}.")
    if not data:
        raise DataError(f"No inputs to predict: the list of {kind} is empty.")
    wanted = str if modality == "text" else (str, os.PathLike)
    for i, item in enumerate(data):
        if not isinstance(item, wanted):
            other = " (headstart.runtime.Bundle predicts from PIL images and arrays)" if modality == "image" else ""
            raise DataError(f"Input {i} is of type {type(item).__name__}, not one of the {kind} a {modality} "
                            f"model takes{other}.")
        if not str(item).strip():
            raise DataError(f"Input {i} is empty or only spaces; give {kind} with content.")
    if modality == "text":
        return LabelledData("text", list(data), None, source="the texts given")  # each text is its own location
    # files given one by one are each a row the caller expects: a bad one stops; in a folder it is skipped, warned
    return ImageFiles(list(data), strict=not any(Path(item).is_dir() for item in data))


def open_texts(texts: Sequence[str], source: str = "the command line") -> LabelledData:
    """Texts given directly (arguments, or lines of standard input) as unlabelled data to predict."""
    texts = [text.strip() for text in texts if text.strip()]
    if not texts:
        raise DataError(f"No text to predict in {source}: give one text per argument or line.")
    return LabelledData("text", texts, None, source=source)  # each text is its own location


def open_unlabelled(path: str | Path, text_column: str = "text", modality: str | None = None,
                    reading: ReadOptions | None = None) -> LabelledData:
    """The samples of a domain without their labels: any image folder, a table's text column, or
    (modality "image") a table's image paths."""
    path, reading = Path(path), reading or ReadOptions()
    modality = modality or reading.modality or ("image" if path.is_dir() else "text")
    return open_inputs([path], modality, text_column, reading)
