"""The ``headstart`` typer app, its two consoles, and the ``command`` decorator.

A user error (bad data, unknown model, missing weights) prints one red line and exits 2;
an interruption (Ctrl-C, SIGTERM) says what was kept and exits 130; never a traceback.
Under a launcher (torchrun, ``--nproc``) rank 0 alone prints: the other ranks meet the same
user errors and say nothing, and only what is theirs alone (a lost peer, a crash) reaches stderr.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console
from rich.logging import RichHandler
from typer.core import TyperCommand, TyperGroup

from ..errors import HeadstartError

__all__ = ["app", "out", "err", "command", "main", "other_rank", "resume_hint", "LAUNCHABLE", "DATA", "MODEL",
           "STRATEGY", "OUTPUT", "COMPUTE", "READING"]

# The groups of options in every command's --help, in this order. Any other group (the options of
# strategies or adaptation methods, tune's search, serve's limits) comes between Strategy and Output.
DATA, READING, MODEL, STRATEGY, OUTPUT, COMPUTE = ("Data", "Reading tables and images", "Model", "Strategy", "Output",
                                                  "Compute")
_FIRST_PANELS, _LAST_PANELS = (DATA, READING, MODEL, STRATEGY), (OUTPUT, COMPUTE)
# The groups of commands in `headstart --help`, in this order (any other after them).
COMMAND_PANELS = ("Start here", "Train", "Inspect", "Deploy")


def _panel_rank(param) -> int:
    panel = getattr(param, "rich_help_panel", None)
    if panel in _FIRST_PANELS:
        return _FIRST_PANELS.index(panel)
    return len(_FIRST_PANELS) + 1 + _LAST_PANELS.index(panel) if panel in _LAST_PANELS else len(_FIRST_PANELS)


def _without_flag_types(params) -> None:
    """A flag takes no value: show none (typer would print `--json <bool>`, `--help <bool>`)."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""


class GroupedCommand(TyperCommand):
    """A command whose --help lists the options group by group, in the same order in every command
    (arguments keep their order: they are parsed by position), and no value type for a flag."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        arguments = [p for p in self.params if p.param_type_name == "argument"]
        self.params = arguments + sorted((p for p in self.params if p.param_type_name != "argument"), key=_panel_rank)

    def format_help(self, ctx, formatter) -> None:
        _without_flag_types(self.get_params(ctx))
        return super().format_help(ctx, formatter)


class CommandGroups(TyperGroup):
    """``headstart`` itself: its commands listed by group in the order of ``COMMAND_PANELS``."""

    def list_commands(self, ctx) -> list[str]:
        def rank(name: str) -> int:
            panel = getattr(self.commands[name], "rich_help_panel", None)
            return COMMAND_PANELS.index(panel) if panel in COMMAND_PANELS else len(COMMAND_PANELS)
        return sorted(super().list_commands(ctx), key=rank)

    def format_help(self, ctx, formatter) -> None:
        _without_flag_types(self.get_params(ctx))
        return super().format_help(ctx, formatter)


app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, cls=CommandGroups,
                  help="Transfer learning from a pre-trained model to your labelled images or texts.")
out = Console()
err = Console(stderr=True)

# Commands that run as one job of several processes under torchrun or --nproc.
LAUNCHABLE = ("fit", "rank", "adapt", "shift", "pretrain")
LOST_PEER = ("another process of this distributed job stopped ({}); the job ends here. A fine-tuning run keeps "
             "its last epoch's checkpoint: continue it with `headstart fit --resume RUN`.")

INTERRUPTED = "[yellow]interrupted:[/] no finished run was written or changed"


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
            _check_launchable(func.__name__)
            return func(*args, **kwargs)
        except HeadstartError as exc:
            _record_for_launcher(exc)
            if not other_rank():
                err.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            if not other_rank():
                err.print(INTERRUPTED + _kept(func.__name__, kwargs), highlight=False)
            raise typer.Exit(130) from None
        except RuntimeError as exc:  # torch.distributed's errors when a peer is gone are RuntimeErrors
            if not _lost_peer(exc):
                raise
            if not os.environ.get("HEADSTART_LAUNCHER"):  # --nproc's launcher names the process that stopped
                reason = str(exc).strip().splitlines()[0][:120]
                print(f"error: rank {os.environ.get('RANK')}: {LOST_PEER.format(reason)}", file=sys.stderr)
            raise typer.Exit(3) from None
        except OSError as exc:  # the machine's refusal (disk full, read-only, no permission), not a bug
            if exc.errno is None:
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            err.print(f"[bold red]error:[/] {where}{exc.strerror}", highlight=False, markup=True)
            raise typer.Exit(2) from None

    return app.command(rich_help_panel=panel, cls=GroupedCommand)(guarded)


def resume_hint(command: str, out_dir: Path | None, nproc: int = 1) -> str:
    """What a failed or interrupted ``fit`` or ``pretrain`` kept: its last checkpoint, if it wrote one."""
    from ..workflows import CHECKPOINT, work_dir

    if out_dir is None or not (work_dir(out_dir) / CHECKPOINT).is_file():
        return ""
    processes = f" --nproc {nproc}" if nproc > 1 else ""
    return f"Its last checkpoint is kept: continue with `headstart {command} --resume {out_dir}{processes}`."


def _kept(command: str, arguments: dict) -> str:
    """What an interrupted ``fit`` or ``pretrain`` kept to resume from: its last epoch's checkpoint, if any."""
    run = arguments.get("resume") or arguments.get("out_dir")
    hint = resume_hint(command, run) if command in ("fit", "pretrain") else ""
    return f"; {hint[0].lower()}{hint[1:]}" if hint else "."


def other_rank() -> bool:
    """Whether this process is a rank other than 0 of a launched job (which prints nothing of its own)."""
    return os.environ.get("RANK", "0") != "0"


def _record_for_launcher(exc: HeadstartError) -> None:
    """Leave a user error where a launcher reads it (torchrun's error file), so that one met by a rank
    other than 0 alone is said too, once, by the launcher (see ``cli/launch.py``)."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump({"message": str(exc), "timestamp": int(time.time())}, handle)


def _launched() -> bool:
    """Whether a launcher started this process as one of several (read without importing torch)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def _check_launchable(name: str) -> None:
    if _launched() and name not in LAUNCHABLE:
        raise HeadstartError(f"`headstart {name}` runs in one process; under torchrun or --nproc only "
                             f"{', '.join(LAUNCHABLE)} do.")


def _lost_peer(exc: RuntimeError) -> bool:
    """Whether a distributed collective failed because another rank is gone (gloo, nccl, the store)."""
    text = str(exc)
    return _launched() and any(
        sign in text for sign in ("Connection closed by peer", "Connection reset by peer", "Broken pipe",
                                  "NCCL communicator was aborted", "failed to recv", "Socket Timeout",
                                  "DistNetworkError", "Connection refused"))


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _drop_interrupted_cleanup(unraisable) -> None:
    """Keep a launched rank quiet when the launcher's SIGTERM lands in a finaliser while it exits
    (the launcher says why the job stopped); anything else is printed as Python would."""
    if not issubclass(unraisable.exc_type, KeyboardInterrupt):
        sys.__unraisablehook__(unraisable)


def _quiet_transformers() -> None:
    """Errors only and no progress bars from transformers and the Hugging Face hub, set where they read it
    when (and if) a command imports them: importing transformers here would cost every command seconds."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:  # imported already (the CLI run in-process): it read them before
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()


def main() -> None:
    """Entry point of the console script and of ``python -m headstart``."""
    handler = RichHandler(console=err, show_time=False, show_path=False)
    handler.addFilter(lambda record: record.name != "headstart.data.skipped")  # report_skipped lists them, once
    logging.basicConfig(level=logging.ERROR if other_rank() else logging.WARNING, format="%(message)s",
                        handlers=[handler])
    if other_rank():  # rank 0 prints results and progress; the others would repeat them
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
        out.quiet = err.quiet = True
    _quiet_transformers()
    if _launched():
        sys.unraisablehook = _drop_interrupted_cleanup
    signal.signal(signal.SIGTERM, _interrupt)  # a scheduler's stop (kill, SLURM) ends a run like Ctrl-C
    _refuse_empty_arguments(sys.argv)
    app()


def _refuse_empty_arguments(argv: list[str]) -> None:
    """Stop at an empty argument: as a path it would mean the current folder (``Path("")`` is ``.``), so
    `headstart audit "$DATA"` with DATA unset would audit wherever it runs. A space stays a value (`--sep " "`)."""
    if "" in argv[1:]:
        after = argv[argv.index("", 1) - 1]
        err.print(f"[bold red]error:[/] the argument after `{after}` is empty (''): a shell variable left unset? "
                  "Give it a value, or leave it out.", highlight=False, markup=True)
        raise SystemExit(2)
