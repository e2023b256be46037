"""The ``headstart`` typer app, its two consoles, and the ``command`` decorator.

A user error (bad data, unknown model, missing weights) prints one red line and exits 2;
an interruption (Ctrl-C, SIGTERM) says what was kept and exits 130; never a traceback.
"""

from __future__ import annotations

import functools
import logging
import signal
from collections.abc import Callable

import typer
from rich.console import Console
from rich.logging import RichHandler

from ..errors import HeadstartError

__all__ = ["app", "out", "err", "command", "main"]

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Transfer learning from a pre-trained model to your labelled images or texts.")
out = Console()
err = Console(stderr=True)

INTERRUPTED = ("[yellow]interrupted:[/] no finished run was written or changed; a fine-tuning run keeps its last "
               "epoch's checkpoint: continue it with `headstart fit --resume RUN`.")


def command(func: Callable | None = None, *, panel: str | None = None):
    """Register a command whose user errors print one red line (exit 2) and whose
    interruption says what was kept (exit 130), never a traceback.

    Use as ``@command`` or ``@command(panel="...")`` (the group ``headstart --help`` lists it in).
    """
    if func is None:
        return lambda f: command(f, panel=panel)

    @functools.wraps(func)
    def guarded(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except HeadstartError as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print(INTERRUPTED, highlight=False)
            raise typer.Exit(130) from None
        except OSError as exc:  # the machine's refusal (disk full, read-only, no permission), not a bug
            if exc.errno is None:
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            err.print(f"[bold red]error:[/] {where}{exc.strerror}", highlight=False, markup=True)
            raise typer.Exit(2) from None

    return app.command(rich_help_panel=panel)(guarded)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _quiet_transformers() -> None:
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def main() -> None:
    """Entry point of the console script and of ``python -m headstart``."""
    handler = RichHandler(console=err, show_time=False, show_path=False)
    handler.addFilter(lambda record: record.name != "headstart.data.skipped")  # report_skipped lists them, once
    logging.basicConfig(level=logging.WARNING, format="%(message)s", handlers=[handler])
    _quiet_transformers()
    signal.signal(signal.SIGTERM, _interrupt)  # a scheduler's stop (kill, SLURM) ends a run like Ctrl-C
    app()
