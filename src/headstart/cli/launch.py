"""``--nproc N``: run a command as N processes on this machine with torchrun's own launcher.

The command runs again, without ``--nproc``, under ``torch.distributed``'s elastic launcher (what
``torchrun --standalone --nproc-per-node N`` starts); rank 0 prints. When a process dies, the
launcher stops the others, and this says once which one stopped and how, instead of torchrun's
report. For several machines, use torchrun itself (see the README).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import uuid
from collections.abc import Callable

import typer

from .app import err

__all__ = ["launch", "strip_nproc"]


def strip_nproc(argv: list[str]) -> list[str]:
    """The command line without ``--nproc N`` / ``--nproc=N``."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            kept.append(arg)
    return kept


def launch(nproc: int, after_failure: Callable[[], str] = lambda: "") -> None:
    """Run this command line as ``nproc`` processes; exit as the job did. ``after_failure`` says what
    was kept (a checkpoint to resume) when a process died."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    cores = os.cpu_count() or 1
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores // nproc)))  # the processes share the cores
    os.environ["HEADSTART_LAUNCHER"] = "1"
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # its report is replaced below
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=uuid.uuid4().hex,
                          rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", max_restarts=0, monitor_interval=0.2)
    try:
        elastic_launch(config, sys.executable)("-m", "headstart", *strip_nproc(sys.argv[1:]))
    except SignalException:  # Ctrl-C or a scheduler's stop: rank 0 has said what was kept
        raise typer.Exit(130) from None
    except ChildFailedError as failed:
        _report(failed.failures, after_failure)


def _report(failures: dict, after_failure: Callable[[], str]) -> None:
    """Say once why the job stopped (``failures``: rank -> ProcessFailure), and exit as it did."""
    by_code = {code: sorted(rank for rank, f in failures.items() if f.exitcode == code) for code in (2, 130)}
    if by_code[2]:  # a user error: rank 0 printed it, unless only other ranks met it
        if by_code[2][0] != 0:
            err.print(f"[bold red]error:[/] rank {by_code[2][0]}: {failures[by_code[2][0]].message}",
                      highlight=False, markup=True)
        raise typer.Exit(2)
    # the cause, not its echoes: the launcher stops the others (SIGTERM, which a rank busy computing takes as
    # an interruption: 130) or they lose their peer (3)
    causes = {r: f for r, f in failures.items() if f.exitcode not in (-signal.SIGTERM, -signal.SIGINT, 3, 130)}
    if not causes and by_code[130]:  # an interruption: rank 0 said what was kept
        raise typer.Exit(130)
    rank, failure = min((causes or failures).items(), key=lambda item: (item[1].timestamp, item[0]))
    err.print(f"[bold red]error:[/] {_describe(rank, failure.exitcode, failure.pid)}; the job stopped. "
              f"{after_failure()}".rstrip(), highlight=False, markup=True)
    raise typer.Exit(1)


def _describe(rank: int, exitcode: int, pid: int) -> str:
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"the process of rank {rank} (pid {pid}) was killed by {name}"
    return f"the process of rank {rank} (pid {pid}) failed with exit code {exitcode} (its message is above)"
