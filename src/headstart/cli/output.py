"""What the commands print: progress bars (or plain log lines), tables and metrics."""

from __future__ import annotations

import json
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from .app import err, other_rank, out

if TYPE_CHECKING:
    from ..workflows import FitRunResult

__all__ = ["progress_bars", "report_skipped", "names", "show_metrics", "metrics_table", "confusion_table",
           "ranking_table", "cv_table", "backbones_table", "comparison_table", "adaptation_table", "shift_table",
           "predictions_table", "trials_table", "data_line", "describe_split", "show_fit", "audit_summary_table",
           "findings_table", "show_audit"]


class WrappingTable(Table):
    """A rich table that never shortens a name or a figure with an ellipsis. Where it does not fit
    the output (an 80-column window, a pipe, a log file: rich assumes 80 columns there), it prints
    each row as one record instead, ``first cell: header value, header value...``, wrapped at spaces."""

    def __rich_console__(self, console, options):
        if self.__rich_measure__(console, options).maximum <= options.max_width:
            yield from super().__rich_console__(console, options)
            return
        if self.title:
            yield Text.from_markup(str(self.title), style="italic") if isinstance(self.title, str) else self.title
        for row in range(self.row_count):
            cells = [column._cells[row] for column in self.columns]
            pairs = [f"{column.header} {cell}" for column, cell in zip(self.columns[1:], cells[1:])
                     if str(cell).strip()]
            yield Text.from_markup(f"[bold]{cells[0]}[/]: " + ", ".join(pairs))


def names(text: Optional[str]) -> Optional[list[str]]:
    """The names of a comma-separated option (None when not given or empty)."""
    return [name.strip() for name in text.split(",") if name.strip()] if text else None


def report_skipped(data) -> None:
    """Warn about the samples a data set skipped as unreadable (the first ten named)."""
    if not data.skipped:
        return
    err.print(f"[yellow]warning:[/] skipped {len(data.skipped)} unreadable sample(s) in {data.source}:")
    for issue in data.skipped[:10]:
        err.print(f"  {issue}", highlight=False, markup=False)
    if len(data.skipped) > 10:
        err.print(f"  ... and {len(data.skipped) - 10} more")


LOG_INTERVAL = 30.0  # seconds between the plain progress lines of a long stage


@contextmanager
def progress_bars(enabled: bool = True, interval: float = LOG_INTERVAL):
    """A rich progress display; yields a ``progress(stage, done, total, note="")`` callback.

    Where stderr is no terminal (a log file, nohup, a batch job) a live display would show
    nothing until the end, so plain lines are printed instead: one every ``interval`` seconds
    while a stage runs (done/total, rate, time left) and one when it finishes.
    """
    if not enabled or other_rank():
        yield None
        return
    if not err.is_terminal:
        yield _log_lines(interval)
        return
    columns = (TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[note]}"))
    tasks: dict[str, int] = {}
    with Progress(*columns, console=err, transient=False) as bars:
        def update(stage: str, done: int, total: int, note: str = "") -> None:
            if stage not in tasks:
                tasks[stage] = bars.add_task(stage, total=total, note="")
            bars.update(tasks[stage], completed=done, total=total, **({"note": note} if note else {}))
        yield update


def _log_lines(interval: float = LOG_INTERVAL):
    """A ``progress`` callback printing a line every ``interval`` seconds of a running stage, one per
    finished stage, and one per note (epoch scores)."""
    started: dict[str, float] = {}
    last: dict[str, float] = {}
    printed: set[tuple[str, str]] = set()

    def update(stage: str, done: int, total: int, note: str = "") -> None:
        now = time.perf_counter()
        began = started.setdefault(stage, now)
        if done < total:
            if now - last.setdefault(stage, began) >= interval and done:
                last[stage] = now
                rate = done / (now - began)
                err.print(f"{stage}: {done}/{total} ({100 * done // total}%), {rate:.1f}/s, about "
                          f"{_duration((total - done) / rate)} left", highlight=False, markup=False)
            return
        if (stage, note) in printed:
            return
        printed.add((stage, note))
        err.print(f"{stage}: {note}" if note else f"{stage}: {done}/{total} in {now - began:.0f} s",
                  highlight=False, markup=False)
    return update


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def data_line(data, train, test, val=None) -> str:
    """One line about a data set and its split: samples, classes and their counts, part sizes."""
    counts = ", ".join(f"{k}: {v}" for k, v in data.class_counts().items())
    return (f"[bold]{data.source}[/]: {len(data)} {data.modality} samples, {len(data.classes)} classes ({counts}); "
            f"train {len(train)}, test {len(test)}" + (f", val {len(val)}" if val else ""))


def describe_split(job, quiet: bool = False) -> None:
    """Warn about skipped samples, split a :class:`~headstart.workflows.FitRun`, say what it trains on."""
    report_skipped(job.data)
    train, val, test = job.split()
    if not quiet:
        err.print(data_line(job.data, train, test, val), highlight=False)


# -- metrics ---------------------------------------------------------------------------------
def metrics_table(metrics: dict, title: str) -> Table:
    table = WrappingTable(title=title, title_justify="left")
    for column in ("class", "precision", "recall", "F1", "support"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, row in metrics["per_class"].items():
        table.add_row(name, f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["support"]))
    table.add_section()
    table.add_row("macro avg", f"{metrics['precision']:.3f}", f"{metrics['recall']:.3f}", f"{metrics['f1']:.3f}",
                  str(metrics["samples"]), style="bold")
    return table


def confusion_table(metrics: dict) -> Table:
    classes = metrics["classes"]
    title = "confusion matrix (rows: true, columns: predicted)"
    table = WrappingTable(title=title, title_justify="left", min_width=len(title))  # few classes: title on one line
    table.add_column("")
    for name in classes:
        table.add_column(name, justify="right")
    for i, (name, row) in enumerate(zip(classes, metrics["confusion_matrix"])):
        table.add_row(name, *(f"[bold]{v}[/]" if i == j else str(v) for j, v in enumerate(row)))
    return table


def show_metrics(metrics: dict, title: str) -> None:
    """Per-class scores, the confusion matrix (up to 12 classes) and the headline numbers."""
    out.print(metrics_table(metrics, title))
    if len(metrics["classes"]) <= 12:
        out.print(confusion_table(metrics))
    out.print(f"[bold]accuracy {metrics['accuracy']:.4f}[/]   balanced accuracy {metrics['balanced_accuracy']:.4f}"
              f"   macro F1 {metrics['f1']:.4f}   ({metrics['samples']} samples)")


def show_fit(result: FitRunResult, source: str, as_json: bool) -> None:
    """Print a finished run: ranking, cross-validation, test metrics and what was trained."""
    estimator, metrics = result.transfer, result.metrics
    if as_json:
        print(json.dumps(metrics, indent=1))
        return
    strategy = estimator.strategy
    if estimator.ranking_:
        scored, train = estimator.ranking_[0].get("samples"), estimator.fit_info_.get("train_samples")
        where = (f"a stratified sample of {scored:,} of the {train:,} training samples" if scored and train and scored < train
                 else "the training split")
        out.print(ranking_table(estimator.ranking_, f"ranking on {where}: chose {estimator.model_name_}"))
    if result.cv:
        out.print(cv_table(result.cv))
    short = Path(source).name or source  # the whole path heads the output (data_line); a long one would wrap the table
    show_metrics(metrics, f"test split of {short} — {estimator.model_name_}, {strategy}")
    info = estimator.fit_info_
    chosen = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.get("selected", {}).items())
    detail = f"best epoch {info['best_epoch']} of {info['epochs_run']}" if "best_epoch" in info else f"head ({chosen})"
    if "refit" in info:
        detail += f", then {info['refit']['epochs']} epochs on all {info['refit']['train_samples']} training samples"
    out.print(f"{strategy}: {detail}; {info['trainable_params']:,} trainable parameters; took "
              f"{metrics['fit_seconds']:.1f}s{' since the resume' if result.resumed else ''}; run saved to "
              f"[bold]{result.out_dir}[/]", highlight=False)


def cv_table(cv: dict) -> Table:
    table = WrappingTable(title=f"{cv['k']}-fold cross-validation on the training split (mean ± std)",
                          title_justify="left")
    table.add_column("metric")  # one row per metric: fits any window, and a record still names its metric
    table.add_column("mean ± std", justify="right")
    for metric in cv["mean"]:
        table.add_row(metric.replace("_", " "), f"{cv['mean'][metric]:.4f} ± {cv['std'][metric]:.4f}")
    return table


# -- one table per command -------------------------------------------------------------------
def ranking_table(rows: list[dict], title: str) -> Table:
    table = WrappingTable(title=title, title_justify="left")
    for column in ("#", "model", "layer", "LogME", "LEEP", "NCE", "H-score", "kNN acc", "dim", "score s"):
        table.add_column(column, justify="left" if column in ("model", "layer") else "right")
    for place, row in enumerate(rows, 1):
        optional = [f"{row[k]:.3f}" if row[k] is not None else "—" for k in ("leep", "nce")]
        table.add_row(str(place), row["model"], row["layer"], f"{row['logme']:.3f}", *optional, f"{row['hscore']:.2f}",
                      f"{row['knn_accuracy']:.3f}", str(row["feature_dim"]), f"{row['seconds']:.2f}")
    return table


def _contract_text(modality: str, c: dict) -> str:
    if modality == "image":
        return (f"{c['input_size']}px, crop {c['crop_pct']}, {c['interpolation']}, "
                f"mean {tuple(c['mean'])}, std {tuple(c['std'])}")
    return f"tokenizer {c['tokenizer']}, max {c['max_length']} tokens, {c['extra'].get('pooling')} pooling"


def backbones_table(rows) -> Table:
    table = WrappingTable(title="backbones (also: timm:<name>, hf:<id or folder>, run:<run folder> — `--runs DIR` lists "
                  "runs)", title_justify="left")
    for column in ("name", "modality", "weights", "parameters", "feature dim", "input contract", "layer groups"):
        table.add_column(column)
    for row in rows:
        table.add_row(row.name, row.modality, "[green]offline[/]" if row.available else "[red]missing[/]",
                      f"{row.parameters / 1e6:.1f}M" if row.parameters else "?", str(row.feature_dim),
                      _contract_text(row.modality, row.contract), str(len(row.contract["layer_groups"])))
    return table


def run_backbones_table(rows, folder) -> Table:
    table = WrappingTable(title=f"runs under {folder} (`--model run:PATH`)", title_justify="left")
    for column in ("name", "base backbone", "strategy", "modality", "feature dim", "as backbone"):
        table.add_column(column)
    for row in rows:
        table.add_row(escape(row.name), escape(row.base), row.strategy, row.modality, str(row.feature_dim or "?"),
                      "[green]yes[/]" if row.usable else f"[red]no[/]: {escape(row.note)}")
    return table


def comparison_table(rows: list[dict], title: str) -> Table:
    table = WrappingTable(title=title, title_justify="left")
    for column in ("strategy", "accuracy", "macro F1", "precision", "recall", "trainable params", "trainable %",
                   "checkpoint MB", "peak mem MB", "train s"):
        table.add_column(column, justify="left" if column == "strategy" else "right")
    for row in rows:
        table.add_row(row["strategy"], f"{row['accuracy']:.4f}", f"{row['f1']:.4f}", f"{row['precision']:.4f}",
                      f"{row['recall']:.4f}", f"{row['trainable_params']:,}", f"{100 * row['trainable_fraction']:.2f}",
                      f"{row['checkpoint_bytes'] / 1e6:.2f}", f"{row['peak_memory_bytes'] / 1e6:.0f}",
                      f"{row['train_seconds']:.1f}")
    return table


def adaptation_table(rows: list[dict], title: str) -> Table:
    table = WrappingTable(title=title, title_justify="left")
    for column in ("model", "strategy", "accuracy", "balanced acc", "macro F1", "train s"):
        table.add_column(column, justify="left" if column in ("model", "strategy") else "right")
    for row in rows:
        m = row["metrics"]
        table.add_row(row["method"], row["strategy"], f"{m['accuracy']:.4f}", f"{m['balanced_accuracy']:.4f}",
                      f"{m['f1']:.4f}", f"{row['train_seconds']:.1f}")
    return table


def shift_table(result, title: str) -> Table:
    table = WrappingTable(title=title, title_justify="left")
    for column in ("proxy A-distance", "domain classifier acc", "MMD²", "source", "target"):
        table.add_column(column, justify="right")
    table.add_row(f"{result.proxy_a_distance:.3f}", f"{result.domain_accuracy:.3f}", f"{result.mmd:.4f}",
                  str(result.source_samples), str(result.target_samples))
    return table


def predictions_table(rows: list[dict], title: str, top: int) -> Table:
    table = WrappingTable(title=title, title_justify="left")
    for column in ("input", "label", f"top {top}"):
        table.add_column(column, overflow="fold")
    for row in rows:
        best = sorted(row["probabilities"].items(), key=lambda kv: -kv[1])[:top]
        table.add_row(row["input"], row["label"], ", ".join(f"{c} {v:.2f}" for c, v in best))
    return table


def trials_table(summary: dict, limit: int = 15) -> Table:
    params = list(summary["space"])
    table = WrappingTable(title=f"study {summary['study']}: best trials", title_justify="left")
    for column in ("#", "state", "val F1", "epochs", *params):
        table.add_column(column, justify="right")
    ranked = sorted(summary["trials"], key=lambda t: -(t["value"] if t["value"] is not None else -1))
    for t in ranked[:limit]:
        values = [f"{v:.3g}" if isinstance(v, float) else str(v) for v in (t["params"].get(p, "—") for p in params)]
        value = f"{t['value']:.4f}" if t["value"] is not None else "—"
        table.add_row(str(t["number"]), t["state"].lower(), value, f"{t['epochs_run'] or 0}/{t['epochs_budget'] or 0}",
                      *values)
    return table


# -- the data audit --------------------------------------------------------------------------------
def audit_summary_table(result) -> Table:
    """One row per kind of finding: how many samples, and what it means."""
    table = WrappingTable(title=f"audit of {result.source}: {result.samples} {result.modality} samples, "
                                f"{result.model} features", title_justify="left")
    for column in ("finding", "samples", "what it means"):
        table.add_column(column, justify="right" if column == "samples" else "left")
    for kind, count in result.counts().items():
        table.add_row(kind, f"[bold red]{count}[/]" if count else "0", _kinds()[kind])
    return table


def _kinds() -> dict:
    from ..data_audit import KINDS

    return KINDS


def findings_table(result, top: int) -> Table:
    """The surest ``top`` findings of each kind: where, label (and the suggested one), score, detail."""
    table = WrappingTable(title=f"findings, surest first (up to {top} of each kind; `--json` or `--out` has all)",
                  title_justify="left")
    for column in ("kind", "sample", "label", "score", "detail"):
        table.add_column(column, overflow="fold", justify="right" if column == "score" else "left")
    for kind in _kinds():
        for f in result.of_kind(kind)[:top]:
            label = (f.label or "") + (f" → {f.suggested}" if f.suggested else "")
            where = _short(f.location, result.source) + (f" [{f.split}]" if f.split else "")
            if f.text is not None:
                where += f"\n{escape(f.text[:80])}" + ("…" if len(f.text) > 80 else "")
            detail = (f"group {f.group}: " if f.group is not None else "") + _short(f.detail, result.source)
            table.add_row(kind, where, label, f"{f.score:.2f}", escape(detail))
    return table


def _short(text: str, source: str) -> str:
    """Locations as a user reads them: paths from inside the data folder, a table by its file name.
    Only a path's start is cut (a relative data folder's name also occurs inside other paths)."""
    if Path(source).is_dir():
        for prefix in dict.fromkeys((str(Path(source).resolve()), source.rstrip("/"))):
            text = re.sub(rf"(^|(?<=\s)){re.escape(prefix + '/')}", "", text)
        return text
    return text.replace(source, Path(source).name)


def show_audit(result, top: int = 5) -> None:
    """Print an audit: the summary, the surest findings, class balance and notes."""
    out.print(audit_summary_table(result))
    if result.findings:
        out.print(findings_table(result, top))
    counts = ", ".join(f"{name}: {count}" for name, count in result.classes.items())
    balance = f"; largest / smallest class {result.imbalance():.1f}" if result.imbalance() else ""
    crossing = sum(group["cross_class"] for group in result.groups)
    out.print(f"classes: {counts}{balance}" + (f"; [bold red]{crossing} copy group(s) carry two labels[/]"
                                                 if crossing else ""), highlight=False)
    for note in result.notes:
        out.print(f"note: {note}", highlight=False)
