"""A reproducible sweep of bad inputs and faults against the `headstart` CLI, counting outcomes.

Issue 15 ("Unbreakable"): bad inputs and faults, tried as a new user would. Every case gets its own
folder (a copy of tiny data, a warm feature cache and baseline runs made once: a linear probe, a
2-epoch finetune, a text run, a lora run, an interrupted finetune), sets up its fault, runs one or
more commands and is classified by its own check; the worst outcome wins, in this order:

  hang           a command ran past the per-command timeout (--timeout, 120 s)
  data loss      a file that existed before (the data, the weights, a folder's content, a previous
                 run when the command failed) is gone or changed
  traceback      raw Python reached the user: "Traceback (most recent call last)", a raw
                 `file.py:N: SomeWarning:` line, or an exit code other than 0/2 with no message
  silent wrong   exit 0 but the case's check fails (NaN, wrong classes or counts, collapsed accuracy,
                 a tampered file accepted, an invalid option accepted, 0700 run folders, a warning
                 printed twice), or junk left behind after any exit: *.tmp, *.old-*, or a
                 .NAME.unfinished folder that holds no checkpoint to resume
  unclear error  non-zero exit, no traceback, but the message is longer than 3 lines or does not name
                 what the case says it must (the file or option at fault; "a|b": either)
  clear error    non-zero exit, a message of at most 3 lines that names what it must
  handled        exit 0 and the case's check passes
  skipped        the case cannot be set up here (no mount namespace, a baseline this tree cannot
                 make); not counted in `cases`

The message is stderr (else stdout) without progress lines, log warnings, data summaries, usage
lines, box borders and indented lines (a YAML excerpt, a list of files), counted from the first
line that says "error" (else all of it); children get COLUMNS=200, so lines do not wrap.

Run:  python bench/fault_sweep.py [--src PATH] [--only NAME,NAME] [--json OUT] [--fresh] [--keep]

`--src` is the `src` folder of the headstart tree under test (default: this repo's), e.g. an older
commit: `git archive b4d4935 | tar -x -C /tmp/before`, then `--src /tmp/before/src`. By default a
command is a fork of this process, which has imported headstart from --src (and torch, timm,
transformers) once, running `headstart/__main__.py` as `PYTHONPATH=<src> python -m headstart` does:
about 6 s less per command. `--fresh` starts a new interpreter per command instead. Disk-full and
read-only cases mount a tiny tmpfs or a read-only bind in a private mount namespace (skipped where
`unshare` fails); the file-size-limit cases set RLIMIT_FSIZE with SIGXFSZ ignored (writes fail
with EFBIG).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUTCOMES = ["handled", "clear error", "unclear error", "traceback", "silent wrong", "data loss", "hang", "skipped"]
SEVERITY = ["skipped", "handled", "clear error", "unclear error", "silent wrong", "traceback", "data loss", "hang"]
IMAGE_MODEL = ["--model", "timm:test_efficientnet", "--weights", "w.safetensors"]
TEXT_MODEL = ["--model", "hf:bert"]
COLOURS = ["blue", "green", "red"]
SENTIMENT = ["neg", "pos"]
SETUP_FAILED = 97
PRELOAD = ["headstart.cli", "transformers", "transformers.models.bert.modeling_bert", "sklearn.linear_model",
           "matplotlib.pyplot", "safetensors.torch", "PIL.Image", "yaml"]


# -- the child: one headstart command with its limits, mounts and files ---------------------------
def child_main(spec: dict) -> None:
    """Set up the child's files, limits and mounts, run the CLI as `python -m headstart`, exit."""
    import resource

    _redirect(spec["stdout"], spec["stderr"])
    os.chdir(spec["cwd"])
    os.environ.update(spec["env"])
    os.umask(0o022)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as at a terminal, even under nohup
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        if spec.get("namespace"):
            _private_mounts()
        for command in spec.get("setup", []):
            subprocess.run(command, shell=True, check=True, stdout=subprocess.DEVNULL)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"sweep: setup failed: {exc}", file=sys.stderr)
        os._exit(SETUP_FAILED)
    if spec.get("fsize") is not None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (spec["fsize"], resource.RLIM_INFINITY))
    if spec.get("die_after"):
        _die_after_replace(spec["die_after"])
    code = _run_headstart(spec["args"], spec["src"])
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    for command in spec.get("after", []):
        subprocess.run(command, shell=True, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if spec.get("rss"):
        Path(spec["rss"]).write_text(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
    sys.stdout.flush(), sys.stderr.flush()
    if code == "SIGINT":  # as CPython does after an uncaught KeyboardInterrupt
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code)


def _redirect(stdout: str, stderr: str) -> None:
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                            (2, stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
        handle = os.open(path, flags, 0o644)
        os.dup2(handle, fd)
        os.close(handle)


def _private_mounts() -> None:
    import ctypes

    if ctypes.CDLL(None, use_errno=True).unshare(0x00020000) != 0:  # CLONE_NEWNS
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)


def _die_after_replace(name: str) -> None:
    """Simulate a kill -9 right after a file called `name` is renamed into place (a checkpoint)."""
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        real(src, dst, *args, **kwargs)
        if os.path.basename(os.fspath(dst)) == name:
            sys.stdout.flush(), sys.stderr.flush()
            os._exit(137)
    os.replace = replace


def _run_headstart(args: list[str], src: str):
    """Run headstart/__main__.py as `python -m headstart ARGS` would; return the exit code."""
    import atexit
    import runpy

    sys.path[:0] = [os.getcwd(), src]
    sys.argv = ["headstart", *args]
    try:
        runpy.run_module("headstart", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
        if not isinstance(exc.code, (int, type(None))):
            print(exc.code, file=sys.stderr)
    except KeyboardInterrupt:
        sys.excepthook(*sys.exc_info())
        code = "SIGINT"
    except BaseException:  # noqa: BLE001 - what the interpreter does with an uncaught exception
        sys.excepthook(*sys.exc_info())
        code = 1
    with suppress(Exception):
        atexit._run_exitfuncs()
    return code


# -- starting and waiting for children ------------------------------------------------------------
@dataclass
class Result:
    rc: int
    out: str
    err: str
    secs: float
    timed_out: bool = False

    @property
    def text(self) -> str:
        return self.out + "\n" + self.err


class Proc:
    """One started command: a fork of this (preloaded) process, or a fresh interpreter."""

    def __init__(self, spec: dict, fresh: bool) -> None:
        self.spec, self.started, self.rc = spec, time.monotonic(), None
        if fresh:
            path = Path(spec["stdout"]).with_suffix(".spec.json")
            path.write_text(json.dumps(spec))
            self.popen = subprocess.Popen([sys.executable, __file__, "--child", str(path)], start_new_session=True)
            self.pid = self.popen.pid
            return
        self.popen = None
        sys.stdout.flush(), sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            try:
                os.setpgid(0, 0)
                child_main(spec)
            finally:
                os._exit(98)
        self.pid = pid
        with suppress(OSError):  # also done in the child: whichever runs first
            os.setpgid(pid, pid)

    def poll(self) -> int | None:
        if self.popen is not None:
            return self.popen.poll()
        if self.rc is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            self.rc = os.waitstatus_to_exitcode(status) if pid else None
        return self.rc

    def wait(self, timeout: float) -> Result:
        timed_out = False
        while (rc := self.poll()) is None:
            if time.monotonic() - self.started > timeout:
                self.signal(signal.SIGKILL)
                timed_out = True
            time.sleep(0.02)
        read = lambda key: Path(self.spec[key]).read_text(errors="replace")
        return Result(rc, read("stdout"), read("stderr"), round(time.monotonic() - self.started, 1), timed_out)

    def signal(self, sig: int) -> None:
        with suppress(ProcessLookupError):
            os.killpg(self.pid, sig)


# -- what the user sees: messages, raw Python, junk, snapshots ------------------------------------
BOX = "╭╮╰╯│─┏┓┗┛┃━┡┩╇┳┻┼├┤└┘┌┐┬┴"
NOISE = re.compile(r"^(warning|usage:|try '|\S+: \d+ (image|text) samples|\S*\s*features: \d+/\d+|"
                   r"epoch \d+|feature cache)|it/s\]|\d+%\|", re.IGNORECASE)


def message_lines(res: Result) -> list[str]:
    """The error message the user reads (see the module docstring)."""
    for text in (res.err, res.out):
        lines = [_unboxed(ln.split("\r")[-1].rstrip()) for ln in text.splitlines()]
        lines = [ln for ln in lines if ln.strip() and not ln[0].isspace() and not NOISE.search(ln)]
        start = next((i for i, ln in enumerate(lines) if "error" in ln.lower()), 0)
        if lines[start:]:
            return lines[start:]
    return []


def _unboxed(line: str) -> str:
    """A line inside a box (a usage error panel) without its borders; other lines as they are."""
    return line.strip(BOX + " ") if line.lstrip()[:1] in BOX else line


def raw_python(text: str) -> str | None:
    """The raw Python the user saw, if any: a traceback's last line, or a raw warning line."""
    if "Traceback (most recent call last)" in text:
        tail = text.split("Traceback (most recent call last)")[-1].splitlines()
        last = [ln for ln in tail if ln.strip() and not ln[0].isspace()]
        return "traceback: " + (last[-1] if last else "?")[:110]
    warning = re.search(r"^\S+\.py:\d+: (\w*Warning: .*)$", text, re.MULTILINE)
    return f"raw warning: {warning.group(1)[:110]}" if warning else None


def snapshot(path: Path) -> dict[str, str]:
    """Every file under path (or path itself) with its sha256; links by target."""
    if path.is_symlink() or path.is_file():
        return {"": _digest(path)}
    found = {}
    for folder, dirs, files in os.walk(path):
        for name in dirs + files:
            full = Path(folder, name)
            if full.is_symlink() or full.is_file():
                found[str(full.relative_to(path))] = _digest(full)
    return found


def _digest(path: Path) -> str:
    if path.is_symlink():
        return "-> " + os.readlink(path)
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        return f"unreadable {exc.errno}"


def compare(name: str, before: dict[str, str], after: dict[str, str]) -> str | None:
    gone = [k for k in before if k not in after]
    changed = [k for k in before if k in after and after[k] != before[k]]
    if gone or changed:
        what = (gone or changed)[0] or name
        return f"{name}: {len(gone)} file(s) gone, {len(changed)} changed (e.g. {what})"
    return None


def junk(root: Path) -> set[str]:
    """Leftovers a failure must not leave: temp files, old copies, unfinished folders with nothing to resume."""
    found = set()
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            full = Path(folder, name)
            if name.endswith(".tmp") or ".old-" in name or \
                    (name.endswith(".unfinished") and full.is_dir() and not (full / "checkpoint.pt").exists()):
                found.add(str(full.relative_to(root)))
    return found


@dataclass
class Verdict:
    outcome: str
    detail: str


# -- a case's folder and commands -----------------------------------------------------------------
@dataclass
class Settings:
    src: Path
    base: Path
    root: Path
    fresh: bool
    namespaces: bool
    timeout: float
    keep: bool = False


@dataclass
class Ctx:
    settings: Settings
    name: str
    kept: dict[str, dict] = field(default_factory=dict)
    keep_unless_ok: set[str] = field(default_factory=set)
    count: int = 0

    def __post_init__(self) -> None:
        self.dir = self.settings.root / "cases" / self.name
        shutil.copytree(self.settings.base, self.dir, symlinks=True)
        self.junk_before: set[str] = set()

    def p(self, rel: str) -> Path:
        return self.dir / rel

    def keep(self, *rels: str, unless_ok: bool = False) -> None:
        """Remember paths whose loss (after the command) counts as data loss (`unless_ok`: if it failed)."""
        for rel in rels:
            self.kept[rel] = snapshot(self.p(rel))
            if unless_ok:
                self.keep_unless_ok.add(rel)

    def spec(self, args: list[str], **extra) -> dict:
        self.count += 1
        if self.count == 1:  # the case has set its inputs up: what exists now must survive
            self.keep(*[r for r in ("img", "rev.csv", "w.safetensors", "bert") if r not in self.kept])
            self.junk_before = junk(self.dir)
        logs = self.settings.root / "logs" / f"{self.name}.{self.count}"
        env = {"HEADSTART_CACHE": str(self.p("cache")), "COLUMNS": "200", "PYTHONPATH": str(self.settings.src),
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **extra.pop("env", {})}
        return {"args": [str(a) for a in args], "cwd": extra.pop("cwd", str(self.dir)), "env": env,
                "src": str(self.settings.src), "stdout": f"{logs}.out", "stderr": f"{logs}.err", **extra}

    def start(self, *args, **extra) -> Proc:
        return Proc(self.spec(list(args), **extra), self.settings.fresh)

    def cli(self, *args, **extra) -> Result:
        return self.start(*args, **extra).wait(self.settings.timeout)

    def fit_args(self, *extra_args: str, data: str = "img", out: str | None = "run", text: bool = False) -> list[str]:
        """`fit DATA` with the tiny model (unless extra_args choose one) and `--workers 0` (unless given)."""
        model = [] if "--model" in extra_args else TEXT_MODEL if text else IMAGE_MODEL[:2]
        if not text and "--model" not in extra_args and "--weights" not in extra_args:
            model = [*model, *IMAGE_MODEL[2:]]
        workers = [] if "--workers" in extra_args else ["--workers", "0"]
        out_args = ["--out", out] if out is not None else []
        return ["fit", data, *model, *workers, *out_args, *extra_args]

    def fit(self, *extra_args, data: str = "img", out: str | None = "run", text: bool = False, **extra) -> Result:
        return self.cli(*self.fit_args(*extra_args, data=data, out=out, text=text), **extra)

    def need(self, rel: str) -> None:
        if not os.path.lexists(self.p(rel)):
            raise Skip(f"the baseline {rel} could not be made with this tree")

    def tmpfs(self, rel: str, size: str) -> dict:
        """Spec options mounting a tmpfs of `size` at rel (in the child's own mount namespace)."""
        if not self.settings.namespaces:
            raise Skip("no mount namespace (unshare) here")
        self.p(rel).mkdir(parents=True, exist_ok=True)
        return {"namespace": True, "setup": [f"mount -t tmpfs -o size={size},mode=755 tmpfs '{self.p(rel)}'"]}

    def readonly(self, rel: str) -> dict:
        """Spec options making rel read-only: a read-only bind mount, else chmod (useless as root)."""
        path = self.p(rel)
        if self.settings.namespaces:
            return {"namespace": True, "setup": [f"mount --bind '{path}' '{path}'",
                                                  f"mount -o remount,bind,ro '{path}' '{path}'"]}
        if os.geteuid() == 0:
            raise Skip("root without mount namespaces: nothing is read-only")
        subprocess.run(["chmod", "-R", "a-w", str(path)], check=True)
        return {}

    def lost(self, ok: bool) -> str | None:
        for rel, before in self.kept.items():
            if ok and rel in self.keep_unless_ok:
                continue
            problem = compare(rel, before, snapshot(self.p(rel)) if os.path.lexists(self.p(rel)) else {})
            if problem:
                return problem
        return None


class Skip(Exception):
    pass


def judge(ctx: Ctx, res: Result, ok: Callable[[Result], str | None] | None = None, mention=(),
          fine_rc=(), lost: str | None = None) -> Verdict:
    """Classify one command's outcome (see the module docstring)."""
    if res.timed_out:
        return Verdict("hang", f"killed after {res.secs:.0f} s")
    if res.rc == SETUP_FAILED:
        return Verdict("skipped", message_lines(res)[-1][:110] if message_lines(res) else "setup failed")
    success = res.rc == 0 or res.rc in fine_rc
    lost = lost or ctx.lost(success)
    if lost:
        return Verdict("data loss", lost)
    raw = raw_python(res.text)
    if raw:
        return Verdict("traceback", raw)
    left = sorted(junk(ctx.dir) - ctx.junk_before)
    if success:
        try:
            problem = ok(res) if ok else None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problem = f"the result cannot be read: {type(exc).__name__}: {exc}"[:110]
        if problem or left:
            return Verdict("silent wrong", problem or f"left behind: {', '.join(left[:3])}")
        return Verdict("handled", f"exit {res.rc}")
    msg = message_lines(res)
    if res.rc != 2 and not msg:
        return Verdict("traceback", f"exit {res.rc} and no message")
    if left:
        return Verdict("silent wrong", f"exit {res.rc}, but left behind: {', '.join(left[:3])}")
    text = res.text.lower()
    missing = [m for m in ([mention] if isinstance(mention, str) else mention)
               if not any(word in text for word in m.lower().split("|"))]
    if not msg or len(msg) > 3 or missing:
        why = f"does not name {missing[0]!r}" if missing else f"{len(msg)}-line message"
        return Verdict("unclear error", f"exit {res.rc}, {why}: {(msg or ['(none)'])[0][:80]}")
    return Verdict("clear error", f"exit {res.rc}: {msg[0][:100]}")


# -- checks of a successful command ---------------------------------------------------------------
def load_json(path: Path):
    return json.loads(path.read_text())


def run_problem(run: Path, classes: list[str], samples: int | None = None, min_acc: float = 0.6) -> str | None:
    """What is wrong with a run folder written by fit, if anything."""
    try:
        labels, metrics = load_json(run / "labels.json"), load_json(run / "metrics.json")
        predictions = load_json(run / "predictions.json") if (run / "predictions.json").exists() else []
    except (OSError, ValueError) as exc:
        return f"run unreadable: {exc}"[:110]
    if sorted(labels) != sorted(classes):
        return f"classes {labels[:6]}{'...' if len(labels) > 6 else ''}, expected {classes}"
    test = metrics.get("test", metrics)
    accuracy = test.get("accuracy", float("nan"))
    if not accuracy >= min_acc:
        return f"test accuracy {accuracy:.2f}, a clean run gets >= {min_acc}"
    found = metrics.get("data", {}).get("samples")
    if samples is not None and found not in ([samples] if isinstance(samples, int) else samples):
        return f"{found} samples read, expected {samples}"
    if any(not math.isfinite(p.get("confidence", 0.0)) for p in predictions):
        return "non-finite confidences in predictions.json"
    return None


def run_ok(ctx: Ctx, out: str = "run", classes=COLOURS, samples=None, min_acc=0.6):
    return lambda res: run_problem(ctx.p(out), classes, samples, min_acc)


def predictions_problem(res: Result, expect: dict[str, str] | None = None) -> str | None:
    try:
        rows = json.loads(res.out[res.out.index("["):])
    except ValueError:
        return "predict --json printed no JSON list"
    if not rows:
        return "predict --json printed an empty list"
    for row in rows:
        probs = list(row.get("probabilities", {}).values())
        if not probs or not all(math.isfinite(p) for p in probs) or abs(sum(probs) - 1) > 1e-3:
            return f"bad probabilities for {row.get('input')}: {probs[:3]}"
        for suffix, label in (expect or {}).items():
            if str(row.get("input", "")).endswith(suffix) and row.get("label") != label:
                return f"{suffix} predicted {row.get('label')!r}, the clean run says {label!r}"
    return None


IMAGE_EXPECT = {"red/0.png": "red", "blue/1.png": "blue"}
PREDICT_IMAGES = ["img/red/0.png", "img/blue/1.png", "--json"]


def refuse(what: str):
    return lambda res: f"{what} accepted (exit 0)"


def warned_once(name: str, res: Result) -> str | None:
    count = res.err.count(name)
    return f"the warning about {name} printed {count} times" if count > 1 else None


# -- file surgery ---------------------------------------------------------------------------------
def write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


def truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def garbage(n: int = 4096, seed: int = 0) -> bytes:
    import random

    return random.Random(seed).randbytes(n)


def edit_yaml(path: Path, change: Callable[[dict], object]) -> None:
    import yaml

    doc = yaml.safe_load(path.read_text())
    new = change(doc)
    path.write_text(yaml.safe_dump(doc if new is None else new, sort_keys=False))


def edit_json(path: Path, change: Callable) -> None:
    doc = load_json(path)
    new = change(doc)
    path.write_text(json.dumps(doc if new is None else new))


def edit_tensors(path: Path, change: Callable[[dict], None]) -> None:
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path))


def image(path: Path, rgb=(200, 40, 40), size=40, mode="RGB", fmt=None) -> Path:
    import numpy as np
    from PIL import Image

    pixels = np.clip(np.array(rgb) + np.random.default_rng(0).normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).convert(mode).save(path, format=fmt)
    return path


def colour_class(root: Path, name: str, rgb, n: int = 12) -> None:
    for i in range(n):
        image(root / name / f"{i}.png", rgb)


def shards(ctx: Ctx, dim: int = 256) -> list[Path]:
    """The feature-cache shards of the image backbone (features of width `dim`)."""
    from safetensors import safe_open

    found = []
    for shard in sorted(ctx.p("cache").rglob("*.safetensors")):
        with safe_open(str(shard), "np") as handle:
            if handle.get_slice("features").get_shape()[-1] == dim:
                found.append(shard)
    return found


def reviews(ctx: Ctx) -> list[list[str]]:
    import csv

    with open(ctx.p("rev.csv"), newline="") as handle:
        return list(csv.reader(handle))[1:]


def table_text(rows, sep=",", header=("text", "label")) -> str:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=sep, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


# -- the cases --------------------------------------------------------------------------------------
@dataclass
class Case:
    name: str
    category: str
    run: Callable[[Ctx], Verdict]


CASES: list[Case] = []


def case(category: str):
    def register(fn):
        CASES.append(Case(fn.__name__.removeprefix("c_"), category, fn))
        return fn
    return register


def worst(verdicts: list[Verdict]) -> Verdict:
    top = max(verdicts, key=lambda v: SEVERITY.index(v.outcome))
    return Verdict(top.outcome, top.detail if len(verdicts) == 1 else f"{top.detail} [{len(verdicts)} commands]")


# .. where fit writes --------------------------------------------------------------------------------
FIT = ["fit", "img", *IMAGE_MODEL, "--workers", "0"]


def prepare(*, need=(), files=(), folders=(), links=(), copies=(), keep=()):
    """A case's set-up: baselines it needs, files written, folders made, links, copies, paths kept."""
    def setup(ctx: Ctx) -> None:
        for rel in need:
            ctx.need(rel)
        for rel in files:
            write(ctx.p(rel), "precious, not a run")
        for rel in folders:
            ctx.p(rel).mkdir(parents=True)
        for target, rel in links:
            os.symlink(target, ctx.p(rel))
        for src, dst in copies:
            shutil.copytree(ctx.p(src), ctx.p(dst))
        ctx.keep(*keep)
    return setup


def refusal(name: str, setup, command: list[str], mention, expect: str = "refuse"):
    """A case whose command must fail with a clear message naming `mention` (`expect="either"`: or succeed)."""
    def run_case(ctx: Ctx) -> Verdict:
        if setup:
            setup(ctx)
        ok = refuse(name.replace("_", " ")) if expect == "refuse" else None
        return judge(ctx, ctx.cli(*command), ok, mention)
    return run_case


def refusals(category: str, rows: list[tuple]) -> None:
    CASES.extend(Case(row[0], category, refusal(*row)) for row in rows)


NOTES = prepare(files=["notes/keep.txt"], keep=["notes"])
PRECIOUS = prepare(files=["file.txt"], keep=["file.txt"])
refusals("out", [  # (name, set-up, command, what the message must name[, expect])
    ("out_folder_with_a_file", NOTES, [*FIT, "--out", "notes"], "notes"),
    ("out_is_the_data", None, [*FIT, "--out", "img"], "img"),
    ("out_is_a_class_folder", None, [*FIT, "--out", "img/red"], "red"),
    ("out_new_folder_inside_data", None, [*FIT, "--out", "img/run"], "img"),
    ("out_is_an_existing_file", PRECIOUS, [*FIT, "--out", "file.txt"], "file.txt"),
    ("out_is_dot", prepare(keep=["run_lp", "cache"]), [*FIT, "--out", "."], ()),
    ("out_is_the_table", None, ["fit", "rev.csv", *TEXT_MODEL, "--out", "rev.csv"], "rev.csv"),
    ("out_symlink_to_data", prepare(links=[("img", "link")]), [*FIT, "--out", "link"], "link"),
    ("out_is_parent_of_data", prepare(copies=[("img", "proj/img")], keep=["proj"]),
     ["fit", "proj/img", *IMAGE_MODEL, "--workers", "0", "--out", "proj"], "proj"),
    ("out_parent_is_a_file", PRECIOUS, [*FIT, "--out", "file.txt/run"], "file.txt"),
])


@case("out")
def c_out_is_dotdot(ctx):
    ctx.p("work").mkdir()
    ctx.keep("run_lp")
    res = ctx.cli("fit", "../img", *IMAGE_MODEL[:2], "--weights", "../w.safetensors", "--workers", "0",
                  "--out", "..", cwd=str(ctx.p("work")))
    return judge(ctx, res, refuse("the parent folder as --out"))


@case("out")
def c_out_nested_new_folders(ctx):
    return judge(ctx, ctx.fit(out="a/b/c/run"), run_ok(ctx, "a/b/c/run", samples=36))


@case("out")
def c_out_empty_folder(ctx):
    ctx.p("empty").mkdir()
    return judge(ctx, ctx.fit(out="empty"), run_ok(ctx, "empty", samples=36), "empty")


@case("out")
def c_out_previous_run_replaced(ctx):
    return judge(ctx, ctx.fit(out="run_lp"), run_ok(ctx, "run_lp", samples=36))


@case("out")
def c_out_previous_run_kept_when_fit_fails(ctx):
    shutil.copytree(ctx.p("img/red"), ctx.p("one/red"))
    ctx.keep("run_lp", unless_ok=True)
    return judge(ctx, ctx.fit(data="one", out="run_lp"), refuse("a one-class data set"), "class")


def concurrent(ctx: Ctx, out: str) -> Verdict:
    procs = [ctx.start(*ctx.fit_args(out=out)) for _ in range(2)]
    results = [proc.wait(ctx.settings.timeout) for proc in procs]
    verdicts = [judge(ctx, res, run_ok(ctx, out, samples=36), "another") for res in results]
    broken = run_problem(ctx.p(out), COLOURS, 36)
    if broken and any(res.rc == 0 for res in results):
        verdicts.append(Verdict("data loss", f"a fit said it saved {out}, but {broken}"))
    elif not any(res.rc == 0 for res in results):
        verdicts.append(Verdict("silent wrong", "neither of two fits succeeded"))
    return worst(verdicts)


@case("out")
def c_out_two_fits_at_once_new(ctx):
    return concurrent(ctx, "run")


@case("out")
def c_out_two_fits_at_once_previous_run(ctx):
    return concurrent(ctx, "run_lp")


@case("out")
def c_out_readonly_parent(ctx):
    ctx.p("ro").mkdir()
    return judge(ctx, ctx.fit(out="ro/run", **ctx.readonly("ro")), refuse("a read-only --out"), "ro")


@case("out")
def c_out_readonly_previous_run(ctx):
    shutil.copytree(ctx.p("run_lp"), ctx.p("ro/run"))
    ctx.keep("ro/run", unless_ok=True)
    return judge(ctx, ctx.fit(out="ro/run", **ctx.readonly("ro")), refuse("a read-only --out"), "ro")


# .. the feature cache ($HEADSTART_CACHE, warm from the baseline runs) -------------------------------
def fit_on_cache(ctx: Ctx, change: Callable[[Path], None], **extra) -> Verdict:
    for shard in shards(ctx):
        change(shard)
    return judge(ctx, ctx.fit(**extra), run_ok(ctx, samples=36))


def zero_feature_bytes(shard: Path) -> None:
    data = bytearray(shard.read_bytes())
    size = int.from_bytes(data[:8], "little")
    start, end = json.loads(data[8:8 + size])["features"]["data_offsets"]
    data[8 + size + start:8 + size + end] = bytes(end - start)
    shard.write_bytes(bytes(data))


def set_features(value: Callable):
    def change(shard: Path) -> None:
        def edit(tensors):
            tensors["features"] = value(tensors["features"])
        edit_tensors(shard, edit)
    return change


@case("cache")
def c_cache_shard_bytes_overwritten(ctx):
    return fit_on_cache(ctx, zero_feature_bytes)


@case("cache")
def c_cache_shard_nan_features(ctx):
    import numpy as np

    return fit_on_cache(ctx, set_features(lambda f: np.full_like(f, np.nan)))


@case("cache")
def c_cache_shard_wrong_width(ctx):
    return fit_on_cache(ctx, set_features(lambda f: f[:, :7].copy()))


@case("cache")
def c_cache_shard_rows_mismatch(ctx):
    return fit_on_cache(ctx, set_features(lambda f: f[:2].copy()))


@case("cache")
def c_cache_shard_float16(ctx):
    import numpy as np

    return fit_on_cache(ctx, set_features(lambda f: f.astype(np.float16)))


@case("cache")
def c_cache_shard_without_digests(ctx):
    return fit_on_cache(ctx, lambda shard: edit_tensors(shard, lambda t: t.pop("digests")))


@case("cache")
def c_cache_shard_truncated(ctx):
    return fit_on_cache(ctx, lambda shard: truncate(shard, 0.5))


@case("cache")
def c_cache_broken_shard_warned_every_run(ctx):
    broken = shards(ctx)[0].parent / "broken.safetensors"
    write(broken, garbage())
    first = judge(ctx, ctx.fit(), run_ok(ctx, samples=36))
    def kept_and_warned(res):
        if broken.exists() and "broken.safetensors" in res.err:
            return "a broken cache shard is warned about on every run and never removed"
        return run_problem(ctx.p("run2"), COLOURS, 36)
    return worst([first, judge(ctx, ctx.fit(out="run2"), kept_and_warned)])


@case("cache")
def c_cache_dir_is_a_file(ctx):
    write(ctx.p("cachefile"), "not a folder")
    ctx.keep("cachefile")
    res = ctx.fit(env={"HEADSTART_CACHE": str(ctx.p("cachefile"))})
    return judge(ctx, res, run_ok(ctx, samples=36), "cachefile")


@case("cache")
def c_cache_dir_readonly(ctx):
    return judge(ctx, ctx.fit(**ctx.readonly("cache")), run_ok(ctx, samples=36), "cache")


@case("cache")
def c_cache_disk_full(ctx):
    extra = ctx.tmpfs("cache2", "8k")
    res = ctx.fit(env={"HEADSTART_CACHE": str(ctx.p("cache2"))}, **extra)
    return judge(ctx, res, run_ok(ctx, samples=36), "cache")


# .. a saved run's files, tampered with, then predict / evaluate / report ---------------------------
def garble_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[8:20] = b"#garbled!#{["
    path.write_bytes(bytes(data))


def tensor_edit(change: Callable[[dict], None]):
    return lambda path: edit_tensors(path, change)


def nan_tensor(name: str):
    import numpy as np

    def change(tensors):
        tensors[name] = np.full_like(tensors[name], np.nan)
    return change


def negate_row(tensors):
    tensors["head.weight"] = tensors["head.weight"].copy()
    tensors["head.weight"][0] *= -1


def five_outputs(tensors):
    import numpy as np

    tensors["head.weight"] = np.zeros((5, tensors["head.weight"].shape[1]), np.float32)
    tensors["head.bias"] = np.zeros(5, np.float32)


def set_backbone(name: str, weights: str):
    """Edit config.yaml's backbone consistently: another weights file (in the case folder) and its digest."""
    def change(path: Path) -> None:
        digest = hashlib.sha256((path.parents[1] / weights).read_bytes()).hexdigest()[:16]
        edit_yaml(path, lambda d: d["backbone"].update(name=name, weights=weights, weights_digest=digest))
    return change


def set_key(key: str, value):
    return lambda path: edit_yaml(path, lambda d: d.__setitem__(key, value))


def set_weights(value: str):
    return lambda path: edit_yaml(path, lambda d: d["backbone"].__setitem__("weights", value))


def text_of(content: str):
    return lambda path: write(path, content)


def unlink(path: Path) -> None:
    path.unlink()


def halve(path: Path) -> None:
    truncate(path, 0.5)


def random_bytes(path: Path) -> None:
    write(path, garbage())


def bump_input_size(path: Path) -> None:
    edit_json(path, lambda d: d.__setitem__("input_size", 32))


def drop_backbone(path: Path) -> None:
    edit_yaml(path, lambda d: d.pop("backbone"))


MODEL, CONFIG, LABELS, METRICS, PREDS = "model.safetensors", "config.yaml", "labels.json", "metrics.json", \
    "predictions.json"
HEAD_NAN, CONV_NAN = tensor_edit(nan_tensor("head.weight")), tensor_edit(nan_tensor("backbone.conv_head.weight"))
REORDERED = text_of('["red", "green", "blue"]')


def t(name, rel, change, command="predict", expect="refuse", run="run_lp", mention=None):
    """A row of TAMPER; expect: refuse (exit 0 is silent wrong) | works (the command must succeed) | either."""
    return name, run, rel, change, command, expect, mention or rel


TAMPER = [
    t("model_truncated", MODEL, halve), t("model_zero_bytes", MODEL, text_of("")),
    t("model_random_bytes", MODEL, random_bytes), t("model_header_garbled", MODEL, garble_header),
    t("model_nan_weights", MODEL, HEAD_NAN), t("model_altered_weights", MODEL, tensor_edit(negate_row)),
    t("model_head_wrong_shape", MODEL, tensor_edit(five_outputs)), t("model_missing", MODEL, unlink),
    t("model_truncated_evaluate", MODEL, halve, "evaluate"), t("model_nan_evaluate", MODEL, HEAD_NAN, "evaluate"),
    t("model_zero_bytes_report", MODEL, text_of(""), "report", "either"),
    t("config_malformed_yaml", CONFIG, text_of("backbone: [unclosed\n  name: x")),
    t("config_empty", CONFIG, text_of("")),
    t("config_list_shaped", CONFIG, text_of("- a\n- b\n")), t("config_binary", CONFIG, random_bytes),
    t("config_no_backbone", CONFIG, drop_backbone, mention="config.yaml|backbone"),
    t("config_backbone_scalar", CONFIG, set_key("backbone", 5), mention="config.yaml|backbone"),
    t("config_unknown_strategy", CONFIG, set_key("strategy", "bogus"), mention="config.yaml|bogus"),
    t("config_weights_etc_passwd", CONFIG, set_weights("/etc/passwd"), mention="config.yaml|passwd"),
    t("config_weights_missing", CONFIG, set_weights("gone.safetensors"), mention="config.yaml|gone.safetensors"),
    t("config_weights_and_digest_edited", CONFIG, set_backbone("timm:test_efficientnet", "w1.safetensors")),
    t("config_backbone_name_and_digest_edited", CONFIG, set_backbone("timm:test_efficientnet_gn", "wgn.safetensors")),
    t("config_malformed_report", CONFIG, text_of("backbone: [unclosed"), "report", "either"),
    t("labels_malformed", LABELS, text_of('["blue", "gre')), t("labels_wrong_length", LABELS, text_of('["a", "b"]')),
    t("labels_dict_shaped", LABELS, text_of('{"blue": 0}')), t("labels_missing", LABELS, unlink),
    t("labels_reordered", LABELS, REORDERED), t("labels_duplicated", LABELS, text_of('["red", "red", "red"]')),
    t("labels_reordered_evaluate", LABELS, REORDERED, "evaluate"),
    t("metrics_malformed_predict", METRICS, text_of("{oops"), "predict", "works"),
    t("metrics_malformed_evaluate", METRICS, text_of("{oops"), "evaluate", "works"),
    t("metrics_malformed_report", METRICS, text_of("{oops"), "report", "works"),
    t("metrics_list_shaped_report", METRICS, text_of("[1, 2]"), "report", "works"),
    t("metrics_missing_report", METRICS, unlink, "report", "works"),
    t("predictions_malformed_predict", PREDS, text_of('[{"loc'), "predict", "works"),
    t("predictions_malformed_report", PREDS, text_of('[{"loc'), "report", "works"),
    t("predictions_dict_shaped_report", PREDS, text_of('{"a": 1}'), "report", "works"),
    t("history_malformed_report", "history.json", text_of("{oops"), "report", "works", "run_ft"),
    t("contract_malformed", "contract.json", text_of("{oops")),
    t("contract_missing", "contract.json", unlink, "predict", "either"),
    t("contract_input_size_edited", "contract.json", bump_input_size),
    t("run_marker_missing", ".headstart-run", unlink, "predict", "works"),
    t("manifest_malformed", "manifest.json", text_of("{oops"), "predict", "either"),
    t("finetune_model_nan", MODEL, CONV_NAN, run="run_ft"), t("finetune_model_truncated", MODEL, halve, run="run_ft"),
    t("finetune_model_tensor_missing", MODEL, tensor_edit(lambda d: d.pop("backbone.conv_head.weight")), run="run_ft"),
    t("finetune_config_strategy_edited", CONFIG, set_key("strategy", "linear-probe"), run="run_ft"),
    t("text_backbone_folder_missing", "../bert", shutil.rmtree, run="run_txt", mention="bert"),
    t("text_labels_reordered", LABELS, text_of('["pos", "neg"]'), run="run_txt"),
    t("text_model_nan_weights", MODEL, HEAD_NAN, run="run_txt"),
    t("lora_model_truncated", MODEL, halve, run="run_lora"),
]


def tamper_command(run: str, command: str) -> list[str]:
    if command == "report":
        return ["report", run]
    data = ["rev.csv"] if run == "run_txt" else ["img"]
    if command == "evaluate":
        return ["evaluate", run, *data, "--json"]
    return ["predict", run, *(data if run == "run_txt" else PREDICT_IMAGES[:2]), "--json"]


def works_check(ctx: Ctx, run: str, command: str):
    def check(res: Result) -> str | None:
        if command == "report":
            page = ctx.p(run) / "report.html"
            return None if page.exists() and page.stat().st_size > 1000 else "report.html not written"
        if command == "evaluate":
            try:
                accuracy = json.loads(res.out[res.out.index("{"):])["accuracy"]
            except (ValueError, KeyError):
                return "evaluate --json printed no accuracy"
            return None if accuracy >= 0.6 else f"accuracy {accuracy}, a clean run gets >= 0.6"
        return predictions_problem(res, None if run == "run_txt" else IMAGE_EXPECT)
    return check


def tamper_case(name, run, rel, change, command, expect, mention):
    def run_case(ctx: Ctx) -> Verdict:
        ctx.need(run)
        path = ctx.p(run) / rel
        if not os.path.lexists(path):
            raise Skip(f"{run} has no {rel} in this tree")
        change(path)
        if command == "report":
            (ctx.p(run) / "report.html").unlink(missing_ok=True)
        works = works_check(ctx, run, command)
        ok = refuse(f"a damaged {rel}") if expect == "refuse" else works
        return judge(ctx, ctx.cli(*tamper_command(run, command)), ok, mention if expect != "works" else ())
    return run_case


for _row in TAMPER:
    CASES.append(Case(_row[0], "run files", tamper_case(*_row)))


# .. text tables ------------------------------------------------------------------------------------
def rows_edit(change: Callable[[list], object], sep=",", header=("text", "label"), encoding="utf-8", bom=""):
    def build(ctx: Ctx) -> bytes:
        rows = reviews(ctx)
        rows = change(rows) or rows
        return (bom + table_text(rows, sep, header)).encode(encoding)
    return build


def lines_edit(change: Callable[[list], None]):
    def build(ctx: Ctx) -> bytes:
        lines = table_text(reviews(ctx)).splitlines()
        change(lines)
        return ("\n".join(lines) + "\n").encode()
    return build


def set_row(index: int, text=None, label=None):
    def change(rows):
        rows[index] = [rows[index][0] if text is None else text, rows[index][1] if label is None else label]
    return change


def relabel(mapping: dict[int, str]):
    def change(rows):
        for index, label in mapping.items():
            rows[index][1] = label
    return change


def numeric_labels(rows):
    for i, row in enumerate(rows):
        row[1] = ("0", "0.0")[i % 4 // 2] if row[1] == "neg" else ("7", "7.0")[i % 4 // 2]


def jsonl(change: Callable[[list], None] = lambda lines: None, label=lambda label: label):
    def build(ctx: Ctx) -> bytes:
        lines = [json.dumps({"text": text, "label": label(lab)}) for text, lab in reviews(ctx)]
        change(lines)
        return ("\n".join(lines) + "\n").encode()
    return build


def insert_lines(*pairs):
    def change(lines):
        for index, line in sorted(pairs, reverse=True):
            lines.insert(index, line)
    return change


def stray_quotes(rows):
    rows[4][0], rows[20][0] = 'he said "great', 'she said "bad'


def same(rows):
    return rows


def good(name, build, samples=60, classes=SENTIMENT, file="t.csv"):
    """A table fit must read: `samples` rows (an int, or the accepted ones), `classes` (names or a count)."""
    return name, file, build, samples, classes, file


def bad(name, build, file="t.csv", mention=None):
    """A table fit must refuse with a clear message naming `mention` (default: the file)."""
    return name, file, build, None, None, mention or file


UNCLOSED = '"oops, an unclosed quote,pos'
BROKEN_JSON = '{"text": "cut off", "label": "pos"'
TABLES = [
    good("unclosed_quote", lines_edit(lambda ls: ls.__setitem__(10, UNCLOSED)), (59, 60)),
    good("field_of_200k_chars", rows_edit(set_row(5, text="word " * 40000))),
    good("tab_separated_named_csv", rows_edit(same, sep="\t")),
    good("semicolon_separated", rows_edit(same, sep=";")),
    good("utf16_with_bom", rows_edit(same, encoding="utf-16")),
    good("utf8_with_bom", rows_edit(same, bom="\ufeff")),
    good("cp1252_bytes", rows_edit(set_row(0, text="café crème, déjà vu"), encoding="cp1252")),
    bad("binary_garbage", lambda ctx: garbage()),
    bad("empty_file", lambda ctx: b""),
    bad("header_only", lambda ctx: b"text,label\n"),
    bad("missing_label_column", rows_edit(same, header=("text", "category")), mention="label"),
    bad("missing_text_column", rows_edit(same, header=("body", "label")), mention="text"),
    good("jsonl_broken_lines", jsonl(insert_lines((7, BROKEN_JSON), (30, "not json at all"))), file="t.jsonl"),
    good("jsonl_non_object_line", jsonl(insert_lines((12, "[1, 2]"))), file="t.jsonl"),
    good("jsonl_blank_lines", jsonl(insert_lines((3, ""), (9, "   "))), file="t.jsonl"),
    good("jsonl_integer_labels", jsonl(label=lambda lab: int(lab == "pos")), classes=2, file="t.jsonl"),
    good("labels_0_0.0_7_7.0", rows_edit(numeric_labels), classes=2),
    good("labels_NaN_nan_None_null", rows_edit(relabel({1: "NaN", 2: "nan", 3: "None", 4: "null"})), 56),
    good("labels_empty", rows_edit(relabel({1: "", 2: " "})), 58),
    good("nul_byte_in_text", rows_edit(set_row(3, text="bad\x00byte")), (59, 60)),
    good("crlf_line_ends", lambda ctx: table_text(reviews(ctx)).replace("\n", "\r\n").encode()),
    good("ragged_row", lines_edit(lambda ls: ls.insert(5, "extra field,pos,surprise")), (60, 61)),
    good("quoted_newlines", rows_edit(set_row(2, text="line one\nline two"))),
    good("tsv_with_stray_quotes", rows_edit(stray_quotes, sep="\t"), file="t.tsv"),
    good("tab_separated_txt", rows_edit(same, sep="\t"), file="t.txt"),
    bad("one_class_only", rows_edit(lambda rows: [[t, "pos"] for t, _ in rows]), mention="class"),
    bad("all_texts_empty", rows_edit(lambda rows: [["", lab] for _, lab in rows])),
    bad("unknown_extension_xlsx", lambda ctx: b"PK\x03\x04" + garbage(2000), file="t.xlsx"),
]


def table_case(name, filename, build, samples, classes, mention):
    def run_case(ctx: Ctx) -> Verdict:
        write(ctx.p(filename), build(ctx))
        ctx.keep(filename)
        if samples is None:
            return judge(ctx, ctx.fit(data=filename, text=True), refuse(f"table {name}"), mention)

        def check(res):
            labels = load_json(ctx.p("run/labels.json")) if ctx.p("run/labels.json").exists() else []
            if isinstance(classes, int):
                return f"{len(labels)} classes {labels[:5]}, expected {classes}" if len(labels) != classes else \
                    run_problem(ctx.p("run"), labels, samples, 0.55)
            return run_problem(ctx.p("run"), classes, samples, 0.55)
        return judge(ctx, ctx.fit(data=filename, text=True), check, mention)
    return run_case


for _row in TABLES:
    CASES.append(Case("table_" + _row[0], "table", table_case(*_row)))


# .. image folders ----------------------------------------------------------------------------------
def fit_images(ctx: Ctx, samples=36, classes=COLOURS, warned: str | None = None, mention=(), data="img", extra=()):
    def check(res):
        return (warned_once(warned, res) if warned else None) or run_problem(ctx.p("run"), classes, samples)
    return judge(ctx, ctx.fit(*extra, data=data), check, mention)


def fit_on(data: str, *extra: str) -> list[str]:
    return ["fit", data, *IMAGE_MODEL, "--workers", "0", "--out", "run", *extra]


FAKE_JPG = prepare(files=["img/red/fake.jpg"])
refusals("images", [
    ("images_data_path_missing", None, fit_on("nope"), "nope"),
    ("images_empty_folder", prepare(folders=["empty"]), fit_on("empty"), "empty"),
    ("images_one_class", prepare(copies=[("img/red", "one/red")]), fit_on("one"), "class"),
    ("images_strict_with_corrupt_file", FAKE_JPG, fit_on("img", "--strict"), "fake.jpg"),
    ("images_data_is_one_image", None, fit_on("img/red/0.png"), "0.png"),
    ("images_split_folders_class_missing_in_train",
     prepare(copies=[(f"img/{c}", f"split/{part}/{c}") for part in ("train", "test") for c in COLOURS
                     if (part, c) != ("train", "blue")]),
     fit_on("split"), "blue"),
])


@case("images")
def c_images_empty_class_folder(ctx):
    ctx.p("img/yellow").mkdir()
    return fit_images(ctx, mention="yellow")


@case("images")
def c_images_text_file_named_jpg(ctx):
    write(ctx.p("img/red/fake.jpg"), "this is not an image")
    return fit_images(ctx, warned="fake.jpg", mention="fake.jpg")


@case("images")
def c_images_truncated_png(ctx):
    write(ctx.p("img/red/cut.png"), ctx.p("img/red/0.png").read_bytes()[:300])
    return fit_images(ctx, warned="cut.png", mention="cut.png")


@case("images")
def c_images_zero_byte_file(ctx):
    write(ctx.p("img/red/zero.png"), b"")
    return fit_images(ctx, warned="zero.png", mention="zero.png")


@case("images")
def c_images_class_of_one_image(ctx):
    image(ctx.p("img/yellow/0.png"), (220, 220, 40))
    res = ctx.fit()
    check = lambda r: None if sorted(load_json(ctx.p("run/labels.json"))) in (COLOURS, sorted(COLOURS + ["yellow"])) \
        else "wrong classes"
    return judge(ctx, res, check, "yellow")


@case("images")
def c_images_class_all_corrupt(ctx):
    for i in range(3):
        write(ctx.p(f"img/yellow/{i}.png"), garbage(500, i))
    return fit_images(ctx, mention="yellow")


@case("images")
def c_images_class_symlink_loop(ctx):
    os.symlink(".", ctx.p("img/loop"))
    return fit_images(ctx, mention="loop")


@case("images")
def c_images_symlink_loop_inside_class(ctx):
    os.symlink(".", ctx.p("img/red/loop"))
    return fit_images(ctx, mention="loop")


@case("images")
def c_images_symlink_to_image_outside(ctx):
    image(ctx.p("outside.png"), (200, 40, 40))
    os.symlink("../../outside.png", ctx.p("img/red/ext.png"))
    return fit_images(ctx, samples=(36, 37), warned="ext.png")


@case("images")
def c_images_hidden_and_sidecar_files(ctx):
    write(ctx.p("img/red/.DS_Store"), garbage(300))
    write(ctx.p("img/red/._0.png"), garbage(300, 1))
    write(ctx.p("img/.hidden/0.png"), ctx.p("img/red/0.png").read_bytes())
    return fit_images(ctx)


@case("images")
def c_images_file_at_top_level(ctx):
    write(ctx.p("img/README.txt"), "my flowers")
    return fit_images(ctx)


@case("images")
def c_images_unusual_modes(ctx):
    import numpy as np
    from PIL import Image

    for mode in ("L", "LA", "RGBA", "P", "1"):
        image(ctx.p(f"img/red/mode_{mode}.png"), mode=mode)
    image(ctx.p("img/red/cmyk.jpg"), mode="CMYK", fmt="JPEG")
    Image.fromarray((np.ones((40, 40)) * 50000).astype(np.uint16)).save(ctx.p("img/red/depth16.png"))
    return fit_images(ctx, samples=43)


@case("images")
def c_images_unicode_class_name(ctx):
    colour_class(ctx.p("img"), "café au lait", (220, 220, 40))
    return fit_images(ctx, samples=48, classes=sorted(COLOURS + ["café au lait"]))


@case("images")
def c_images_nested_sub_folder(ctx):
    image(ctx.p("img/red/sub/deep.png"))
    return fit_images(ctx, samples=(36, 37))


@case("images")
def c_images_readonly_data(ctx):
    return judge(ctx, ctx.fit(**ctx.readonly("img")), run_ok(ctx, samples=36))


@case("images")
def c_images_spaces_in_paths(ctx):
    shutil.copytree(ctx.p("img"), ctx.p("my data"))
    return judge(ctx, ctx.fit(data="my data", out="my run"), run_ok(ctx, "my run", samples=36))


def png_bomb(path: Path, side: int = 40000) -> None:
    """A small PNG that claims side x side pixels (1 bit each): Pillow's decompression-bomb error."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = zlib.compress(b"\x00" * (1 + side // 8) * 16)
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    write(path, b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


@case("images")
def c_images_pixel_bomb_in_data(ctx):
    png_bomb(ctx.p("img/red/bomb.png"))
    return fit_images(ctx, warned="bomb.png", mention="bomb.png")


@case("images")
def c_images_pixel_bomb_predict(ctx):
    png_bomb(ctx.p("bomb.png"))
    res = ctx.cli("predict", "run_lp", "bomb.png", "--json")
    return judge(ctx, res, lambda r: None if "bomb.png" in r.err else "bomb.png predicted without a word", "bomb.png")


@case("images")
def c_images_12000px_jpeg_predict(ctx):
    from PIL import Image

    Image.new("RGB", (12000, 12000), (200, 40, 40)).save(ctx.p("huge.jpg"), quality=60)
    small = ctx.cli("predict", "run_lp", "img/red/0.png", "--json", rss=str(ctx.p("rss_small")))
    res = ctx.cli("predict", "run_lp", "huge.jpg", "--json", rss=str(ctx.p("rss_huge")))
    verdict = worst([judge(ctx, small, predictions_problem), judge(ctx, res, predictions_problem)])
    peak = [int(ctx.p(f).read_text()) // 1024 if ctx.p(f).exists() else -1 for f in ("rss_huge", "rss_small")]
    return Verdict(verdict.outcome, f"{verdict.detail}; peak RSS {peak[0]} MB (a 40 px image: {peak[1]} MB)")


@case("images")
def c_images_run_folder_permissions(ctx):
    def modes(res):
        run = ctx.p("run")
        wrong = [f"{p.name} {oct(p.stat().st_mode & 0o777)}" for p in [run, *run.iterdir()]
                 if p.stat().st_mode & 0o777 != (0o755 if p.is_dir() else 0o644)]
        return f"under umask 022: {', '.join(wrong[:3])}" if wrong else None
    return judge(ctx, ctx.fit(), modes)


# .. evaluate, predict, report, export-merged on the wrong things -----------------------------------
def mentions(word: str):
    return lambda res: None if word.lower() in res.text.lower() else f"exit 0 without a word about {word!r}"


LORA = prepare(need=["run_lora"])
refusals("commands", [
    ("evaluate_text_on_image_run", None, ["evaluate", "run_lp", "rev.csv"], "rev.csv"),
    ("evaluate_images_on_text_run", None, ["evaluate", "run_txt", "img"], "img"),
    ("evaluate_on_non_run", None, ["evaluate", "img", "img"], "img"),
    ("evaluate_label_column_missing", None, ["evaluate", "run_txt", "rev.csv", "--label-column", "nope"], "nope"),
    ("evaluate_without_data_argument", None, ["evaluate", "run_lp"], "data"),
    ("predict_missing_file", None, ["predict", "run_lp", "img/red/missing.png"], "missing.png"),
    ("predict_non_image_file", prepare(files=["notes.txt"]), ["predict", "run_lp", "notes.txt"], "notes.txt"),
    ("predict_empty_folder", prepare(folders=["empty"]), ["predict", "run_lp", "empty"], "empty"),
    ("predict_on_non_run", None, ["predict", "img", "img/red/0.png"], "img"),
    ("predict_run_missing", None, ["predict", "nope", "img/red/0.png"], "nope"),
    ("predict_text_table_without_text_column", lambda ctx: write(ctx.p("t.csv"), "body,id\nhello there,1\n"),
     ["predict", "run_txt", "t.csv"], "text"),
    ("predict_images_with_text_run", None, ["predict", "run_txt", "img/red/0.png"], "0.png"),
    ("predict_table_with_image_run", None, ["predict", "run_lp", "rev.csv"], "rev.csv"),
    ("predict_top_zero", None, ["predict", "run_lp", "img/red/0.png", "--top", "0"], "top"),
    ("report_on_non_run", None, ["report", "img"], "img"),
    ("report_run_missing", None, ["report", "nope"], "nope"),
    ("report_on_a_file", None, ["report", "rev.csv"], "rev.csv"),
    ("export_merged_linear_probe", None, ["export-merged", "run_lp", "merged"], "run_lp|linear-probe"),
    ("export_merged_out_folder_with_file", prepare(need=["run_lora"], files=["notes/keep.txt"], keep=["notes"]),
     ["export-merged", "run_lora", "notes"], "notes"),
    ("export_merged_out_is_its_run", prepare(need=["run_lora"], keep=["run_lora"]),
     ["export-merged", "run_lora", "run_lora"], "run_lora"),
    ("export_merged_out_is_the_data", LORA, ["export-merged", "run_lora", "img"], "img"),
    ("export_merged_run_missing", None, ["export-merged", "nope", "merged"], "nope"),
    ("unknown_command_load", None, ["load", "run_lp"], "load"),
    ("fit_without_data_argument", None, ["fit", *IMAGE_MODEL, "--out", "run"], "data"),
    ("rank_data_missing", None, ["rank", "nope"], "nope"),
    ("shift_target_missing", None, ["shift", "img", "nope", *IMAGE_MODEL], "nope"),
    ("adapt_unknown_method", None, ["adapt", "img", "img", *IMAGE_MODEL, "--method", "bogus", "--out", "ad"], "bogus"),
    ("compare_unknown_strategy", None, ["compare", "img", *IMAGE_MODEL, "--strategies", "linear-probe,bogus",
                                        "--workers", "0"], "bogus"),
    ("compare_out_folder_with_file", NOTES, ["compare", "img", *IMAGE_MODEL, "--strategies", "linear-probe",
                                             "--workers", "0", "--out", "notes"], "notes", "either"),
    ("tune_zero_trials", None, ["tune", "img", *IMAGE_MODEL, "--strategy", "linear-probe", "--trials", "0",
                                "--out", "t"], "trials"),
    ("tune_space_malformed", lambda ctx: write(ctx.p("bad.yaml"), "lr: {low: ["),
     ["tune", "img", *IMAGE_MODEL, "--strategy", "linear-probe", "--trials", "1", "--space", "bad.yaml",
      "--out", "t"], "bad.yaml"),
    ("tune_out_folder_with_file", NOTES, ["tune", "img", *IMAGE_MODEL, "--strategy", "linear-probe", "--trials", "1",
                                          "--out", "notes"], "notes", "either"),
])


@case("commands")
def c_evaluate_unseen_class(ctx):
    colour_class(ctx.p("img"), "yellow", (220, 220, 40))
    return judge(ctx, ctx.cli("evaluate", "run_lp", "img", "--json"), mentions("yellow"), "yellow")


@case("commands")
def c_evaluate_classes_differ(ctx):
    colour_class(ctx.p("pets"), "cat", (220, 220, 40))
    colour_class(ctx.p("pets"), "dog", (40, 40, 40))
    return judge(ctx, ctx.cli("evaluate", "run_lp", "pets", "--json"), mentions("cat"), "cat")


@case("commands")
def c_evaluate_subset_of_classes(ctx):
    shutil.copytree(ctx.p("img/red"), ctx.p("two/red"))
    shutil.copytree(ctx.p("img/green"), ctx.p("two/green"))
    return judge(ctx, ctx.cli("evaluate", "run_lp", "two", "--json"), works_check(ctx, "run_lp", "evaluate"))


@case("commands")
def c_predict_good_and_missing_input(ctx):
    res = ctx.cli("predict", "run_lp", "img/red/0.png", "gone.png", "--json")
    return judge(ctx, res, lambda r: predictions_problem(r, IMAGE_EXPECT) or mentions("gone.png")(r), "gone.png")


@case("commands")
def c_predict_top_larger_than_classes(ctx):
    res = ctx.cli("predict", "run_lp", *PREDICT_IMAGES, "--top", "100")
    return judge(ctx, res, lambda r: predictions_problem(r, IMAGE_EXPECT))


@case("commands")
def c_export_merged_lora_ok(ctx):
    ctx.need("run_lora")
    res = ctx.cli("export-merged", "run_lora", "merged")
    return judge(ctx, res, lambda r: None if load_json(ctx.p("merged/labels.json")) == COLOURS else "labels differ")


# .. resuming an interrupted fine-tuning run ----------------------------------------------------------
INTERRUPTED = ["--strategy", "finetune", "--epochs", "2", "--patience", "0"]


def interrupted(ctx: Ctx) -> None:
    """Make .ift.unfinished in place: a fine-tuning fit killed (-9) right after its first checkpoint."""
    shutil.rmtree(ctx.p(".ift.unfinished"), ignore_errors=True)
    res = ctx.cli(*ctx.fit_args(*INTERRUPTED, out="ift"), die_after="checkpoint.pt")
    if not ctx.p(".ift.unfinished/checkpoint.pt").exists():
        raise Skip(f"no interrupted run could be made (exit {res.rc})")
    ctx.count, ctx.kept = 0, {}  # the case starts now


def resume(ctx: Ctx, change: Callable[[Path], None] | None = None, rel: str = "checkpoint.pt", mention=(), ok=None):
    interrupted(ctx)
    if change:
        change(ctx.p(".ift.unfinished") / rel)
    res = ctx.cli("fit", "--resume", "ift")
    return judge(ctx, res, ok or run_ok(ctx, "ift", min_acc=0.0), mention)


refusals("resume", [
    ("resume_a_finished_run", None, ["fit", "--resume", "run_lp"], "run_lp"),
    ("resume_nothing_there", None, ["fit", "--resume", "nope"], "nope"),
])


@case("resume")
def c_resume_after_the_folder_moved(ctx):
    ctx.need(".ift.unfinished")  # made in the base folder, resumed from this case's copy of it
    return judge(ctx, ctx.cli("fit", "--resume", "ift"), run_ok(ctx, "ift", min_acc=0.0), "img")


@case("resume")
def c_resume_clean(ctx):
    return resume(ctx)


@case("resume")
def c_resume_checkpoint_truncated(ctx):
    return resume(ctx, lambda p: truncate(p, 0.5), mention="checkpoint")


@case("resume")
def c_resume_checkpoint_zero_bytes(ctx):
    return resume(ctx, text_of(""), mention="checkpoint")


@case("resume")
def c_resume_checkpoint_garbage(ctx):
    return resume(ctx, lambda p: write(p, garbage()), mention="checkpoint")


@case("resume")
def c_resume_checkpoint_missing(ctx):
    return resume(ctx, unlink, mention="checkpoint")


@case("resume")
def c_resume_args_json_malformed(ctx):
    return resume(ctx, text_of("{oops"), "args.json", "args.json")


@case("resume")
def c_resume_args_json_empty(ctx):
    return resume(ctx, text_of(""), "args.json", "args.json")


@case("resume")
def c_resume_args_json_list_shaped(ctx):
    return resume(ctx, text_of("[]"), "args.json", "args.json")


@case("resume")
def c_resume_args_json_without_data(ctx):
    return resume(ctx, lambda p: edit_json(p, lambda d: d.pop("data")), "args.json", "args.json")


@case("resume")
def c_resume_args_json_unknown_strategy(ctx):
    return resume(ctx, lambda p: edit_json(p, lambda d: d.__setitem__("strategy", "bogus")), "args.json", "bogus")


def restarted_or_refused(res: Result) -> str | None:
    return None if re.search(r"chang|differ", res.text, re.IGNORECASE) else "resumed on changed data without a word"


@case("resume")
def c_resume_after_data_changed(ctx):
    return resume(ctx, lambda p: colour_class(ctx.p("img"), "blue", (220, 220, 40)), mention="img",
                  ok=restarted_or_refused)  # same file names, other pictures


@case("resume")
def c_resume_after_class_added(ctx):
    return resume(ctx, lambda p: colour_class(ctx.p("img"), "yellow", (220, 220, 40)), mention="img",
                  ok=restarted_or_refused)


@case("resume")
def c_resume_data_deleted(ctx):
    return resume(ctx, lambda p: shutil.rmtree(ctx.p("img")), mention="img", ok=refuse("resuming without data"))


@case("resume")
def c_resume_with_data_argument_too(ctx):
    interrupted(ctx)
    res = ctx.cli("fit", "img", "--resume", "ift")
    return judge(ctx, res, run_ok(ctx, "ift", min_acc=0.0), "resume")


# .. faults: disk full, read-only, signals ----------------------------------------------------------
FINETUNE = ["--strategy", "finetune", "--epochs", "2", "--patience", "0"]
DISK_WORDS = "space|full|too large|too big|quota"


def in_snapshot(ctx: Ctx, mount: str) -> list[str]:
    """After the command, copy the (namespace-private) mount out so junk and losses can be seen."""
    ctx.p("snap").mkdir(exist_ok=True)
    return [f"cp -a {ctx.p(mount)}/. {ctx.p('snap')}/"]


def disk_full(ctx: Ctx, size: str, strategy=(), previous: str | None = None) -> Verdict:
    extra = ctx.tmpfs("full", size)
    if previous:
        extra["setup"].append(f"cp -a {ctx.p(previous)} {ctx.p('full/run')}")
    res = ctx.fit(*strategy, out="full/run", after=in_snapshot(ctx, "full"), **extra)
    lost = None
    if previous and res.rc != 0:
        lost = compare("the previous run", snapshot(ctx.p(previous)), snapshot(ctx.p("snap/run")))
    return judge(ctx, res, refuse("a run on a full disk"), DISK_WORDS, lost=lost)


@case("faults")
def c_disk_full_writing_the_run(ctx):
    return disk_full(ctx, "48k")


@case("faults")
def c_disk_full_previous_run_kept(ctx):
    size = sum(-(-p.stat().st_size // 4096) * 4096 for p in ctx.p("run_lp").iterdir()) + 24 * 1024
    return disk_full(ctx, str(size), previous="run_lp")


@case("faults")
def c_disk_full_at_the_checkpoint(ctx):
    return disk_full(ctx, "256k", FINETUNE)


def file_too_big(ctx: Ctx, limit: int, strategy=(), out="run") -> Verdict:
    res = ctx.fit(*strategy, out=out, fsize=limit)
    return judge(ctx, res, refuse("a write that failed (EFBIG)"), DISK_WORDS)


@case("faults")
def c_file_size_limit_writing_the_run(ctx):
    return file_too_big(ctx, 20000)


@case("faults")
def c_file_size_limit_previous_run_kept(ctx):
    ctx.keep("run_lp", unless_ok=True)
    return file_too_big(ctx, 20000, out="run_lp")


@case("faults")
def c_file_size_limit_at_the_checkpoint(ctx):
    return file_too_big(ctx, 500000, FINETUNE)


def interrupt(ctx: Ctx, sig: int, out: str, fine_rc=()) -> Verdict:
    proc = ctx.start(*ctx.fit_args("--strategy", "finetune", "--epochs", "200", "--patience", "0", out=out))
    checkpoint = ctx.p(f".{out}.unfinished/checkpoint.pt")
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() - proc.started < ctx.settings.timeout:
        time.sleep(0.05)
    proc.signal(sig)
    res = proc.wait(ctx.settings.timeout)
    return judge(ctx, res, None, "resume", fine_rc=fine_rc)


@case("faults")
def c_ctrl_c_during_training(ctx):
    return interrupt(ctx, signal.SIGINT, "run")


@case("faults")
def c_sigterm_during_training_previous_run_kept(ctx):
    ctx.keep("run_lp")
    return interrupt(ctx, signal.SIGTERM, "run_lp", fine_rc=(-15, 143))


# .. options and configs ----------------------------------------------------------------------------
def option_case(name: str, args: list[str], mention: str, expect: str = "refuse", data: str = "img"):
    def run_case(ctx: Ctx) -> Verdict:
        for arg in args:
            if arg.endswith(".yaml") and arg in CONFIGS:
                write(ctx.p(arg), CONFIGS[arg](ctx) if callable(CONFIGS[arg]) else CONFIGS[arg])
        ok = refuse(f"{' '.join(args)}") if expect == "refuse" else run_ok(ctx, min_acc=0.0)
        res = ctx.cli(*ctx.fit_args(*args, data=data, out=None if "--out" in args else "run"))
        return judge(ctx, res, ok, mention)
    return run_case


CONFIGS = {
    "bad.yaml": "strategy: finetune\nstrategy_config: {epochs: [\n",
    "list.yaml": "- strategy\n- finetune\n",
    "empty.yaml": "",
    "binary.yaml": garbage(300).replace(b"\x00", b"x").decode("latin-1"),
    "unknown.yaml": "strategy: linear-probe\nstrategy_config: {bogus_option: 1}\n",
    "run.yaml": lambda ctx: ctx.p("run_lp/config.yaml").read_text(),
}
FT = ["--strategy", "finetune"]
OPTIONS = [
    ("lr_negative", [*FT, "--lr", "-1"], "lr"), ("lr_zero", [*FT, "--lr", "0"], "lr"),
    ("lr_nan", [*FT, "--lr", "nan"], "lr"),
    ("test_share_1.5", ["--test", "1.5"], "test"), ("test_share_0", ["--test", "0"], "test"),
    ("test_share_1", ["--test", "1"], "test"), ("test_share_negative", ["--test", "-0.2"], "test"),
    ("test_share_not_a_number", ["--test", "abc"], "test"), ("val_share_0.9", ["--val", "0.9"], "val"),
    ("epochs_0", [*FT, "--epochs", "0"], "epochs"), ("batch_size_0", ["--batch-size", "0"], "batch"),
    ("batch_size_negative", ["--batch-size", "-4"], "batch"), ("workers_negative", ["--workers", "-1"], "workers"),
    ("strategy_unknown", ["--strategy", "bogus"], "bogus"), ("model_unknown", ["--model", "nosuch"], "nosuch"),
    ("model_timm_unknown", ["--model", "timm:nosuch_net"], "nosuch_net"),
    ("weights_missing", ["--weights", "nope.safetensors"], "nope.safetensors"),
    ("weights_garbage", ["--weights", "rev.csv"], "rev.csv"),
    ("weights_of_another_architecture", ["--weights", "wgn.safetensors"], "wgn.safetensors"),
    ("weights_etc_passwd", ["--weights", "/etc/passwd"], "passwd"), ("weights_a_folder", ["--weights", "img"], "img"),
    ("text_model_on_images", ["--model", "hf:bert"], "image"),
    ("image_model_on_a_table", IMAGE_MODEL, "text", "refuse", "rev.csv"),
    ("config_malformed_yaml", ["--config", "bad.yaml"], "bad.yaml"),
    ("config_missing", ["--config", "none.yaml"], "none.yaml"),
    ("config_list_shaped", ["--config", "list.yaml"], "list.yaml"),
    ("config_binary", ["--config", "binary.yaml"], "binary.yaml"),
    ("config_unknown_option", ["--config", "unknown.yaml"], "bogus_option"),
    ("config_empty", ["--config", "empty.yaml"], "empty.yaml", "either"),
    ("config_of_a_run", ["--config", "run.yaml"], "run.yaml", "either"),
    ("hidden_units_0", ["--head", "mlp", "--hidden", "0"], "hidden"), ("head_unknown", ["--head", "tree"], "head"),
    ("C_negative", ["--C", "-1"], "C"), ("dropout_1", ["--dropout", "1"], "dropout"),
    ("seed_negative", ["--seed", "-1"], "seed", "either"), ("seed_huge", ["--seed", "99999999999"], "seed", "either"),
    ("cv_1", ["--cv", "1"], "cv"), ("cv_more_folds_than_samples", ["--cv", "50"], "cv"),
    ("device_cuda", ["--device", "cuda"], "cuda", "either"), ("device_unknown", ["--device", "tpu"], "tpu"),
    ("track_unknown", ["--track", "wandb"], "wandb"),
    ("lora_targets_unknown", ["--strategy", "lora", "--lora-targets", "nosuch"], "nosuch"),
    ("randaugment_bogus", [*FT, "--randaugment", "bogus"], "randaugment"),
    ("unfreeze_not_a_number", [*FT, "--unfreeze", "many"], "unfreeze"),
    ("unfreeze_999", [*FT, "--epochs", "1", "--unfreeze", "999"], "unfreeze", "either"),
    ("layer_decay_0", [*FT, "--layer-decay", "0"], "layer"),
    ("label_smoothing_1", [*FT, "--label-smoothing", "1"], "smoothing"),
    ("class_weight_unknown", ["--class-weight", "heavy"], "heavy"),
    ("option_typo_epoch", [*FT, "--epoch", "3"], "epoch"),
    ("out_empty_string", ["--out", ""], "out"),
    ("unfreeze_with_lora", ["--strategy", "lora", "--unfreeze", "2"], "unfreeze"),
    ("candidates_unknown", ["--model", "auto", "--candidates", "nosuch"], "nosuch"),
    ("label_column_missing", ["--model", "hf:bert", "--label-column", "nope"], "nope", "refuse", "rev.csv"),
    ("text_column_missing", ["--model", "hf:bert", "--text-column", "nope"], "nope", "refuse", "rev.csv"),
]
for _row in OPTIONS:
    CASES.append(Case("option_" + _row[0], "options", option_case(*_row)))


# -- fixtures, baselines, running everything --------------------------------------------------------
def make_fixtures(base: Path) -> None:
    """Tiny data and models (run in its own interpreter: torch is used here, never in the forking parent)."""
    sys.path.insert(0, str(REPO / "tests"))
    from helpers import colour_folder, review_table, tiny_bert_folder, tiny_timm_weights

    base.mkdir(parents=True, exist_ok=True)
    tiny_timm_weights(base, 0).rename(base / "w.safetensors")
    tiny_timm_weights(base, 1).rename(base / "w1.safetensors")
    tiny_timm_weights(base, 0, "test_efficientnet_gn").rename(base / "wgn.safetensors")
    tiny_bert_folder(base / "bert")
    colour_folder(base / "img")
    review_table(base / "rev.csv")


BASELINES = [  # (what it makes, command, spec options)
    ("run_lp", [*FIT, "--out", "run_lp"], {}),
    ("run_txt", ["fit", "rev.csv", *TEXT_MODEL, "--out", "run_txt"], {}),
    ("run_ft", [*FIT, "--strategy", "finetune", "--epochs", "2", "--out", "run_ft"], {}),
    ("run_lora", [*FIT, "--strategy", "lora", "--epochs", "1", "--out", "run_lora"], {}),
    (".ift.unfinished/checkpoint.pt", [*FIT, *INTERRUPTED, "--out", "ift"], {"die_after": "checkpoint.pt"}),
]


def build_baselines(settings: Settings) -> list[str]:
    """The runs every case starts from (in the base folder, with a warm feature cache); returns problems."""
    base, problems = settings.base, []
    (settings.root / "logs").mkdir(exist_ok=True)
    for index, (made, args, extra) in enumerate(BASELINES):
        logs = settings.root / "logs" / f"baseline.{index}"
        spec = {"args": args, "cwd": str(base), "src": str(settings.src), "stdout": f"{logs}.out",
                "stderr": f"{logs}.err", "env": {"HEADSTART_CACHE": str(base / "cache"), "COLUMNS": "200",
                                                 "PYTHONPATH": str(settings.src), "HF_HUB_OFFLINE": "1"}, **extra}
        res = Proc(spec, settings.fresh).wait(300)
        if not (base / made).exists():
            problems.append(f"baseline {made} not made (exit {res.rc}): {res.err.strip().splitlines()[-1:]}")
    accuracy = load_json(base / "run_lp/metrics.json")["test"]["accuracy"] if (base / "run_lp").exists() else 0
    if accuracy < 0.9:
        problems.append(f"the clean linear probe reaches only {accuracy} accuracy")
    return problems


def run_case(settings: Settings, item: Case) -> dict:
    started = time.monotonic()
    ctx = None
    try:
        ctx = Ctx(settings, item.name)
        verdict = item.run(ctx)
    except Skip as exc:
        verdict = Verdict("skipped", str(exc))
    except Exception as exc:  # noqa: BLE001 - a bug of the sweep itself: say so, do not count it
        verdict = Verdict("skipped", f"sweep error: {type(exc).__name__}: {exc}"[:140])
    finally:
        if ctx is not None and not settings.keep:
            subprocess.run(["chmod", "-R", "u+w", str(ctx.dir)], check=False, stderr=subprocess.DEVNULL)
            shutil.rmtree(ctx.dir, ignore_errors=True)
    return {"name": item.name, "category": item.category, "outcome": verdict.outcome, "detail": verdict.detail,
            "seconds": round(time.monotonic() - started, 1)}


_SETTINGS: Settings | None = None


def _pool_case(index: int) -> dict:
    return run_case(_SETTINGS, CASES[index])


def preload(src: Path) -> None:
    """Import headstart from src (and the heavy libraries it pulls in lazily) before forking children."""
    import importlib

    sys.path.insert(0, str(src))
    for name in PRELOAD:  # an older tree may lack one: the child imports what it needs
        with suppress(Exception):
            importlib.import_module(name)
    loaded = Path(sys.modules["headstart"].__file__).resolve()
    if not loaded.is_relative_to(src.resolve()):
        sys.exit(f"headstart was imported from {loaded}, not from {src}")


def namespaces_work() -> bool:
    if not shutil.which("unshare"):
        return False
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    return subprocess.run(["unshare", "-m", "true"], check=False, **quiet).returncode == 0


def print_table(rows: list[dict]) -> None:
    width = max(len(r["name"]) for r in rows)
    print(f"{'case':<{width}}  {'category':<10}  {'outcome':<13}  detail")
    for r in rows:
        print(f"{r['name']:<{width}}  {r['category']:<10}  {r['outcome']:<13}  {r['detail'][:150]}")


def totals(rows: list[dict]) -> dict:
    counted = [r for r in rows if r["outcome"] != "skipped"]
    return {"cases": len(counted), **{o: sum(r["outcome"] == o for r in rows) for o in OUTCOMES}}


def arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", type=Path, default=REPO / "src", help="src folder of the headstart tree to test")
    p.add_argument("--only", default="", help="run only the cases whose name contains this (comma-separated: any)")
    p.add_argument("--json", type=Path, help="also write the cases and totals to this JSON file")
    p.add_argument("--fresh", action="store_true", help="a new interpreter per command (slow, no preloading)")
    p.add_argument("--workers", type=int, default=2, help="cases run at once (default 2)")
    p.add_argument("--timeout", type=float, default=120, help="seconds a command may run before it is a hang")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (cases, logs) and print it")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--fixtures", help=argparse.SUPPRESS)
    return p.parse_args()


def main() -> None:
    global _SETTINGS
    args = arguments()
    if args.child:
        return child_main(json.loads(Path(args.child).read_text()))
    if args.fixtures:
        return make_fixtures(Path(args.fixtures))
    started, root = time.monotonic(), Path(tempfile.mkdtemp(prefix="fault_sweep-"))
    src = args.src.resolve()
    os.environ["COLUMNS"] = "200"
    subprocess.run([sys.executable, __file__, "--fixtures", str(root / "base")], check=True)
    if not args.fresh:
        preload(src)
    settings = Settings(src, root / "base", root, args.fresh, namespaces_work(), args.timeout, args.keep)
    problems = build_baselines(settings)
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    wanted = [i for i, c in enumerate(CASES) if not args.only or any(s in c.name for s in args.only.split(","))]
    _SETTINGS = settings
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(args.workers) as pool:
        rows = list(pool.imap(_pool_case, wanted))
    print_table(rows)
    counts = totals(rows)
    print("totals: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v or k == "cases"))
    print(f"src {src}; {'fresh interpreters' if args.fresh else 'forked children'}; mount namespaces "
          f"{'yes' if settings.namespaces else 'no'}; {time.monotonic() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"src": str(src), "fresh": args.fresh, "namespaces": settings.namespaces,
                                         "baseline_problems": problems, "totals": counts, "cases": rows}, indent=1))
    if args.keep:
        print(f"kept {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
