"""The ``headstart`` command: parse options, call the Python API, show the results.

One typer app (``app``) in :mod:`.app`; each command group registers itself on import:
:mod:`.fit` (fit, compare), :mod:`.tune`, :mod:`.adapt` (adapt, shift), :mod:`.inspect`
(models, rank, evaluate, predict, report, demo), :mod:`.audit` and :mod:`.export` (export-merged). The
options of the strategies and adaptation methods are generated from their configs
(:mod:`.options`). Nothing here computes anything the library does not; the library never
imports this package.
"""

from . import adapt, audit, auto, export, fit, inspect, tune  # noqa: F401 - importing a command module registers its commands
from . import serve  # noqa: F401 - registers `headstart serve`
from . import pretrain  # noqa: F401 - registers `headstart pretrain`
from .app import app, main

__all__ = ["app", "main"]
