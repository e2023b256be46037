"""How data files are read, where the defaults do not fit: what the samples are, a table's separator
and encoding, whether malformed rows are skipped, and the largest image accepted.

One config for every command that reads data, so ``--modality``, ``--sep``, ``--encoding``,
``--skip-bad-rows`` and ``--max-pixels`` mean the same everywhere and a resumed run reads
its data the way it first did.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from headstart.config import Config, at_least, one_of, option
from headstart.contract import DEFAULT_MAX_PIXELS

__all__ = ["ReadOptions"]


@dataclass
class ReadOptions(Config):
    """Options of reading tables and image folders (every field has a working default)."""

    owner: ClassVar[str] = "data reading"

    modality: str | None = option(None, "What the samples are: image or text (default: a folder holds images, a "
                                  "table texts). `image` reads a table of image paths (absolute, or relative to the "
                                  "table's folder) from the column `--text-column` names, default `image`.",
                                  one_of(None, "image", "text"))
    sep: str | None = option(None, "Column separator of a table: one character, or tab, comma, semicolon, pipe "
                             "(default: sniffed from the content).")
    encoding: str | None = option(None, "Encoding of a table, e.g. cp1252, latin-1, shift_jis (default: UTF-8, or "
                                  "UTF-16/32 by their byte-order mark).")
    skip_bad_rows: bool = option(False, "Skip malformed table rows (an unclosed quote, a wrong number of fields), "
                                 "listing them, instead of stopping with an error.")
    max_pixels: int = option(DEFAULT_MAX_PIXELS, "Largest image accepted, in pixels (width x height); larger "
                             "files are skipped as likely decompression bombs. 0: no limit.", at_least(0, int))

    def table_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~headstart.data.TextTable`."""
        return {"sep": self.sep, "encoding": self.encoding, "skip_bad_rows": self.skip_bad_rows}

    def image_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~headstart.data.ImageFolder` and ``ImageFiles``."""
        return {"max_pixels": self.max_pixels or None}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
