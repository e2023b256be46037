"""A self-contained ``report.html`` of a run, a comparison or a search.

Everything comes from the files the directory already holds (config, labels, contract,
metrics with the data summary, history, predictions, ranking, comparison, tuning): the
report never runs a model. Plots are PNGs embedded as base64 and the style is inline, so
the page opens offline, attached to a mail or from a CI artefact.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from html import escape
from pathlib import Path
from typing import Any

import yaml

from ..errors import DataError, HeadstartError
from ..runs import write_text_atomic
from ..strategies import get_strategy
from . import plots
from .pretraining import pretraining_section

log = logging.getLogger(__name__)

__all__ = ["read_documents", "build_report", "write_report", "SECTIONS", "MAX_EXAMPLES"]

# What each document holds when it is whole: a file of another shape is left out, as a damaged one.
_KINDS = {"config": dict, "labels": list, "contract": dict, "metrics": dict, "history": list, "predictions": list,
          "ranking": list, "comparison": dict, "tuning": dict, "audit": dict, "auto": dict,
          "pretraining": dict}
DOCUMENTS = ("config.yaml", "labels.json", "contract.json", "metrics.json", "history.json", "predictions.json",
             "ranking.json", "comparison.json", "tuning.json", "audit.json", "auto.json", "pretraining.json")
# Section ids in page order, with their headings.
SECTIONS = {"auto": "Auto: the plan and the leaderboard", "data": "Data", "ensemble": "Ensemble members", "backbone": "Backbone and input contract", "curves": "Learning curves",
            "confusion": "Confusion matrix", "per-class": "Per-class precision, recall and F1",
            "misclassified": "Misclassified examples", "cv": "Cross-validation", "ranking": "Backbone ranking",
            "comparison": "Before and after transfer", "adaptation": "Domain adaptation",
            "tuning": "Hyperparameter search", "audit": "Audit",
            "pretraining": "Pre-training"}
MAX_EXAMPLES = 24
STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#222;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:1.6em;margin:12px 0 4px}h2{font-size:1.25em;margin:0 0 10px}
section{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:14px 18px;margin:14px 0}
table{border-collapse:collapse;font-size:.9em;margin:6px 0}th,td{padding:3px 10px;border-bottom:1px solid #e4e7eb;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f0f2f5}
img.plot{max-width:100%;display:block;margin:8px 0}.muted{color:#666}.bad{color:#b00020}
.examples{display:flex;flex-wrap:wrap;gap:10px}.example{width:150px;font-size:.8em;border:1px solid #e4e7eb;padding:6px;border-radius:6px}
.example img{width:136px;height:136px;object-fit:contain;background:#eee;display:block}
.example.text{width:340px}code{background:#f0f2f5;padding:1px 4px;border-radius:3px}
"""


def read_documents(path: str | Path) -> dict[str, Any]:
    """The JSON and YAML files of a run, comparison or search folder, by name without suffix."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path} is not a folder. Give a run, a `compare --out` or a `tune --out` folder.")
    documents = {}
    for name in DOCUMENTS:
        file = path / name
        if file.is_file():
            try:
                text = file.read_text(encoding="utf-8")
                content = yaml.safe_load(text) if file.suffix == ".yaml" else json.loads(text)
            except (ValueError, UnicodeDecodeError, yaml.YAMLError) as exc:  # a damaged file leaves its part out
                log.warning("Leaving %s out of the report: it is damaged (%s)", file, " ".join(str(exc).split()))
                continue
            if not isinstance(content, _KINDS.get(file.stem, object)):
                log.warning("Leaving %s out of the report: it holds a %s, not a %s", file,
                            type(content).__name__, _KINDS[file.stem].__name__)
                continue
            documents[file.stem] = content
    if not {"metrics", "comparison", "tuning", "audit"} & set(documents):
        raise DataError(f"{path} holds no metrics.json, comparison.json, tuning.json or audit.json: it is not a run, "
                        "a comparison, a search or an audit. Write one with `headstart fit`, `compare --out`, `tune` "
                        "or `audit --out`.")
    return documents


def _img(png: bytes, alt: str) -> str:
    return f'<img class="plot" alt="{escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if 0 < abs(value) < 0.01 else f"{value:.4f}"
    return escape(str(value))


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _section(key: str, body: str) -> str:
    return f'<section id="{key}"><h2>{SECTIONS[key]}</h2>{body}</section>'


def _data(summary: dict) -> str:
    counts = summary.get("classes", {})
    skipped = summary.get("skipped", [])
    body = (f"<p><b>{escape(str(summary.get('source', '')))}</b>: {summary.get('samples', 0)} "
            f"{escape(str(summary.get('modality', '')))} samples in {len(counts)} classes.</p>")
    body += _table(["class", "samples"], [[name, count] for name, count in counts.items()])
    if skipped:
        items = "".join(f"<li>{escape(str(s))}</li>" for s in skipped[:50])
        more = f"<li>... and {len(skipped) - 50} more</li>" if len(skipped) > 50 else ""
        body += f'<p class="bad">{len(skipped)} rejected sample(s):</p><ul>{items}{more}</ul>'
    else:
        body += '<p class="muted">No sample was rejected.</p>'
    return _section("data", body)


def _strategy_options(config: dict, modality: str | None) -> list[list[Any]]:
    """The options the strategy used, as [name, value, note]: those that do nothing with its head,
    strategy or modality left out, and where the config left the choice to the fit (None), what it chose."""
    options, selected = config.get("strategy_config") or {}, (config.get("fit") or {}).get("selected") or {}
    try:
        strategy = get_strategy(str(config.get("strategy")))
    except HeadstartError:  # a strategy this version does not know: every option as recorded
        strategy = None
    rows = []
    for name, value in options.items():
        if strategy is not None and not strategy.option_applies(name, options, modality):
            continue
        chosen = name in selected and selected[name] != value
        rows.append([name, selected[name] if chosen else value, "chosen on the validation split" if chosen else ""])
    rows += [[name, value, "chosen on the validation split"] for name, value in selected.items() if name not in options]
    return rows


def _backbone(config: dict, contract: dict | None, modality: str | None = None) -> str:
    backbone = config.get("backbone", {})
    pretrained = (config.get("pretraining") or {}).get("method")  # a self-supervised run: no strategy trained it
    trained_by = ["pre-training method", pretrained] if pretrained else ["strategy", config.get("strategy")]
    rows = [["backbone", backbone.get("name")], ["weights", backbone.get("weights") or "packaged / default"],
            ["weights digest", backbone.get("weights_digest", "—")], trained_by, ["seed", config.get("seed")]]
    if backbone.get("chosen_by"):
        rows.append(["chosen by", backbone["chosen_by"]])
    fit = config.get("fit", {})
    for key in ("trainable_params", "train_samples", "val_samples", "best_epoch", "epochs_run", "train_seconds"):
        if key in fit:
            rows.append([key.replace("_", " "), fit[key]])
    body = _table(["", ""], rows)
    if not pretrained:  # its options are in the pre-training section
        body += "<h3>Strategy options</h3>" + _table(["option", "value", ""], _strategy_options(config, modality))
    if contract:
        keys = ("modality", "input_size", "crop_pct", "interpolation", "mean", "std", "tokenizer", "max_length",
                "feature_dim")
        rows = [[k, contract[k]] for k in keys if contract.get(k) is not None]
        rows.append(["layer groups", ", ".join(g["name"] for g in contract.get("layer_groups", []))])
        body += "<h3>Input contract</h3>" + _table(["field", "value"], rows)
    return _section("backbone", body)


def _thumbnail(location: str) -> str:
    from PIL import Image

    try:
        with Image.open(location) as image:
            image = image.convert("RGB")
            image.thumbnail((136, 136))
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=80)
    except OSError:
        return f'<p class="muted">(no longer at {escape(location)})</p>'
    return f'<img alt="{escape(Path(location).name)}" src="data:image/jpeg;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _misclassified(predictions: list[dict]) -> str:
    wrong = sorted((p for p in predictions if p["true"] != p["predicted"]), key=lambda p: -p["confidence"])
    if not wrong:
        return _section("misclassified", f"<p>None: all {len(predictions)} test samples are classified right.</p>")
    shown = wrong[:MAX_EXAMPLES]
    body = (f"<p>{len(wrong)} of {len(predictions)} test samples are misclassified"
            + (f"; the {len(shown)} most confident mistakes:" if len(wrong) > len(shown) else ":") + "</p>")
    cards = []
    for p in shown:
        label = (f"true <b>{escape(p['true'])}</b>, predicted <b class='bad'>{escape(p['predicted'])}</b> "
                 f"({p['confidence']:.2f})")
        if "text" in p:
            cards.append(f'<div class="example text">{label}<p>{escape(p["text"][:400])}</p>'
                         f'<span class="muted">{escape(p["location"])}</span></div>')
        else:
            cards.append(f'<div class="example">{_thumbnail(p["location"])}{label}<br>'
                         f'<span class="muted">{escape(Path(p["location"]).name)}</span></div>')
    return _section("misclassified", body + f'<div class="examples">{"".join(cards)}</div>')


def _test_metrics(metrics: dict, predictions: list[dict] | None) -> list[str]:
    per_class = metrics["per_class"]
    rows = [[name, r["precision"], r["recall"], r["f1"], r["support"]] for name, r in per_class.items()]
    rows.append(["macro average", metrics["precision"], metrics["recall"], metrics["f1"], metrics["samples"]])
    summary = (f"<p>Test split: accuracy <b>{metrics['accuracy']:.4f}</b>, balanced accuracy "
               f"{metrics['balanced_accuracy']:.4f}, macro F1 <b>{metrics['f1']:.4f}</b> ({metrics['samples']} samples).</p>")
    parts = [_section("confusion", summary + _img(plots.confusion_heatmap(metrics["classes"], metrics["confusion_matrix"]),
                                                  "confusion matrix")),
             _section("per-class", _table(["class", "precision", "recall", "F1", "support"], rows)
                      + _img(plots.per_class_bars(per_class), "per-class precision, recall and F1"))]
    if predictions is not None:
        parts.append(_misclassified(predictions))
    return parts


def _auto(auto: dict) -> str:
    """What ``headstart auto`` tried, in the order it ran, each stage's score and time, and why the winner won."""
    winner = auto["winner"]
    body = (f"<p>Budget {auto['budget_seconds'] / 60:.1f} min, used {auto['spent_seconds'] / 60:.1f} min. Candidates "
            f"were scored by {escape(str(auto.get('selection')))} on the training split. "
            f"<b>{escape(auto['why'])}</b> {escape(str(winner.get('refit', '')))}.</p>")
    keys = ("strategy", "model", "epochs", "best_epoch", "score", "tta_gain", "seconds", "planned_seconds", "status")
    named = [{**row, "strategy": row.get("title", row["strategy"])} for row in auto["stages"]]  # as auto names it
    rows = [[place, *("—" if row.get(k) is None else row[k] for k in keys)] for place, row in enumerate(named, 1)]
    body += _table(["#", *keys], rows)
    body += "".join(f'<p class="muted">{escape(note)}</p>' for note in auto.get("notes", []))
    return _section("auto", body)


def _cv(cv: dict) -> str:
    metrics = list(cv["mean"])
    rows = [[f"fold {row['fold']}", *(row[m] for m in metrics)] for row in cv["folds"]]
    rows.append(["mean", *(cv["mean"][m] for m in metrics)])
    rows.append(["std", *(cv["std"][m] for m in metrics)])
    note = (f"<p>Stratified {cv['k']}-fold cross-validation on the training split (seed {cv['seed']}): each fold fits "
            "on the others and is scored on itself; std is the sample standard deviation over folds.</p>")
    return _section("cv", note + _table(["", *metrics], rows))


def _ensemble(config: dict) -> str:
    """An ensemble run: its members, each with what its fit chose and ran."""
    rows = []
    for number, member in enumerate(config["ensemble"].get("members", []), 1):
        fit, options = member.get("fit") or {}, member.get("strategy_config") or {}
        rows.append([number, member.get("strategy"), (member.get("backbone") or {}).get("name"),
                     fit.get("epochs_run", options.get("epochs", "—")), fit.get("train_samples")])
    note = f"<p>Predicts the {escape(str(config['ensemble'].get('combine')))}.</p>"
    return _section("ensemble", note + _table(["member", "strategy", "backbone", "epochs", "train samples"], rows))


def _ranking(ranking: list[dict], train_samples: int | None = None) -> str:
    keys = ("model", "layer", "logme", "leep", "nce", "hscore", "knn_accuracy")
    rows = [[place, *(row.get(k) if row.get(k) is not None else "—" for k in keys)] for place, row in enumerate(ranking, 1)]
    scored = ranking[0].get("samples")
    where = (f"a stratified sample of {scored:,} of the {train_samples:,} training samples"
             if scored and train_samples and scored < train_samples else "the training split")
    return _section("ranking", f"<p>Transferability scores on {where}, best first.</p>" + _table(["#", *keys], rows))


def _comparison(comparison: dict) -> str:
    rows = comparison["rows"]
    keys = ("accuracy", "f1", "precision", "recall", "trainable_params", "train_seconds")
    body = (f"<p>{comparison.get('train', '?')} training and {comparison.get('test', '?')} test samples, backbone "
            f"{escape(str(rows[0].get('model')))}, every network strategy with the same budget.</p>")
    body += _table(["strategy", *keys], [[row["strategy"], *(row.get(k) for k in keys)] for row in rows])
    body += _img(plots.comparison_bars(rows), "test accuracy and F1 per strategy")
    for row in rows:
        if row.get("history"):
            body += f"<h3>{escape(row['strategy'])}</h3>" + _img(plots.learning_curves(row["history"]),
                                                                  f"learning curves of {row['strategy']}")
    return _section("comparison", body)


def _adaptation(adapt: dict, metrics: dict) -> str:
    """The method and what it bought over the source-only model, where `headstart adapt` measured it."""
    options = ", ".join(f"{k}={v}" for k, v in adapt.items() if k != "method")
    target = metrics.get("target_data") or {}
    body = (f"<p>Method <b>{escape(str(adapt.get('method')))}</b>" + (f" ({escape(options)})" if options else "")
            + (f"; unlabelled target {escape(str(target.get('source')))} ({target.get('samples')} samples)" if target else "")
            + ".</p>")
    adapted = metrics.get("target") or metrics.get("test")
    if metrics.get("source_only") and adapted:
        where = "the labelled target data" if metrics.get("target") else "the source's test split (no labelled target given)"
        keys = ("accuracy", "balanced_accuracy", "f1", "precision", "recall")
        body += f"<p>Measured on {where}:</p>" + _table(
            ["model", *keys], [["source-only", *(metrics["source_only"][k] for k in keys)],
                               [adapt.get("method"), *(adapted[k] for k in keys)]])
    return _section("adaptation", body)


def _tuning(tuning: dict) -> str:
    states = [t["state"] for t in tuning["trials"]]
    epochs = tuning.get("epochs", {})
    best = tuning["best"]
    body = (f"<p>Study <code>{escape(str(tuning['study']))}</code>: {len(states)} trials ({states.count('COMPLETE')} "
            f"complete, {states.count('PRUNED')} pruned, {states.count('FAIL')} failed) of {escape(tuning['strategy'])} "
            f"on {escape(tuning['model'])}, {tuning['pruner']} pruner, objective validation macro F1"
            + (f" (mean of {tuning['cv']} folds)" if tuning.get("cv") else "") + ". "
            f"Best: trial #{best['trial']} with {best['value']:.4f}. The trials ran {epochs.get('run', 0)} of the "
            f"{epochs.get('unpruned', 0)} epochs they were configured for (pruning and early stopping).</p>")
    body += "<h3>Optimisation history</h3>" + _img(plots.optimisation_history(tuning["trials"]), "optimisation history")
    if tuning.get("importances"):
        body += "<h3>Parameter importances</h3>" + _img(plots.param_importances(tuning["importances"]),
                                                         "parameter importances")
    else:
        body += '<p class="muted">Parameter importances need at least two complete trials that differ.</p>'
    params = [k for k in tuning.get("space", {})]
    rows = [[t["number"], t["state"].lower(), t["value"] if t["value"] is not None else "—",
             *(t["params"].get(p, "—") for p in params)] for t in tuning["trials"]]
    body += "<h3>Trials</h3>" + _table(["#", "state", "value", *params], rows)
    return _section("tuning", body)


def _audit_card(finding: dict, modality: str) -> str:
    f = finding
    head = (f"<b>{escape(f['kind'])}</b> {f['score']:.2f}" + (f" · {escape(f['label'])}" if "label" in f else "")
            + (f" → <b class='bad'>{escape(f['suggested'])}</b>" if "suggested" in f else "")
            + (f" · group {f['group']}" if "group" in f else ""))
    where = f'<span class="muted">{escape(f["location"] if modality == "text" else Path(f["location"]).name)}: ' \
            f'{escape(f.get("detail", ""))}</span>'
    if modality == "text":
        return f'<div class="example text">{head}<p>{escape(f.get("text", "")[:400]) or "(empty)"}</p>{where}</div>'
    return f'<div class="example">{_thumbnail(f["location"])}{head}<br>{where}</div>'


def _audit(audit: dict) -> str:
    """What `headstart audit` found: counts per kind, class balance, then the surest findings of each kind."""
    modality, classes = audit.get("modality", "image"), audit.get("classes", {})
    body = (f"<p><b>{escape(str(audit.get('source')))}</b>: {audit.get('samples')} {escape(modality)} samples, "
            f"features of {escape(str(audit.get('model')))}; near-duplicate threshold "
            f"{audit.get('thresholds', {}).get('near_duplicate')} (cosine)"
            + (f"; leakage checked against {escape(audit['against'])}" if audit.get("against") else "") + ".</p>")
    kinds = audit.get("kinds", {})
    body += _table(["finding", "samples", "what it means"], [[k, n, kinds.get(k, "")] for k, n in audit["counts"].items()])
    body += _table(["class", "samples"], [[name, count] for name, count in classes.items()])
    if audit.get("imbalance"):
        body += f"<p>Largest class / smallest: {audit['imbalance']:.2f}.</p>"
    body += "".join(f'<p class="muted">{escape(note)}</p>' for note in audit.get("notes", []))
    by_kind: dict[str, list[dict]] = {}
    for finding in audit.get("findings", []):
        by_kind.setdefault(finding["kind"], []).append(finding)
    for kind, found in by_kind.items():
        shown = sorted(found, key=lambda f: -f["score"])[:MAX_EXAMPLES]
        body += (f"<h3>{escape(kind)}: {len(found)}" + (f", the {len(shown)} surest" if len(found) > len(shown) else "")
                 + f'</h3><div class="examples">{"".join(_audit_card(f, modality) for f in shown)}</div>')
    return _section("audit", body)


def build_report(documents: dict[str, Any], title: str = "headstart report") -> str:
    """The report's HTML, with a section for each thing the documents hold."""
    config, metrics = documents.get("config", {}), documents.get("metrics", {})
    comparison, tuning = documents.get("comparison"), documents.get("tuning")
    data = metrics.get("data") or (comparison or {}).get("data") or (tuning or {}).get("data")
    parts = [_auto(documents["auto"])] if documents.get("auto") else []
    parts += [_data(data)] if data else []
    if config.get("strategy_config") is not None and "backbone" in config:
        contract = documents.get("contract")
        parts.append(_backbone(config, contract, (contract or data or {}).get("modality")))
    if isinstance(config.get("ensemble"), dict):
        parts.append(_ensemble(config))
    if documents.get("history"):
        note = "<p>Per epoch; the best validation epoch's weights are kept.</p>"
        parts.append(_section("curves", note + _img(plots.learning_curves(documents["history"]), "learning curves")))
    elif "test" in metrics:
        parts.append(_section("curves", '<p class="muted">No per-epoch curves: a linear probe fits its head in one '
                                        "step on frozen features.</p>"))
    if "test" in metrics:
        parts.extend(_test_metrics(metrics["test"], documents.get("predictions")))
    if metrics.get("cv"):
        parts.append(_cv(metrics["cv"]))
    if documents.get("ranking"):
        parts.append(_ranking(documents["ranking"], (config.get("fit") or {}).get("train_samples")))
    if comparison:
        parts.append(_comparison(comparison))
    if config.get("adapt"):
        parts.append(_adaptation(config["adapt"], metrics))
    if tuning:
        parts.append(_tuning(tuning))
    if documents.get("audit"):
        parts.append(_audit(documents["audit"]))
    if documents.get("pretraining"):
        parts.append(pretraining_section(documents["pretraining"]))
    source = str((data or {}).get("source") or "")
    trained_by = (config.get("pretraining") or {}).get("method") or config.get("strategy")
    subtitle = " · ".join(str(x) for x in ((config.get("backbone") or {}).get("name"), trained_by,
                                          Path(source).name or source) if x)  # the whole path is under Data
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><main><h1>{escape(title)}</h1>"
            f'<p class="muted">{escape(subtitle)}</p>{"".join(parts)}</main></body></html>')


def write_report(path: str | Path, title: str | None = None) -> Path:
    """Write ``path/report.html`` from what the folder holds (atomically) and return its path."""
    path = Path(path)
    page = build_report(read_documents(path), title or f"headstart report: {path.name}")
    return write_text_atomic(path / "report.html", page)
