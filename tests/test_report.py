"""The HTML report: every section from what a folder holds, rendered by headless Chromium.

The rendering test needs a Chromium and no root: Playwright's (`pip install playwright` and
`python -m playwright install chromium` place it under the user's cache; the download needs the
network) or, failing that, a system chromium / chromium-browser / google-chrome on PATH. It
skips, saying so, when there is neither.
"""

import functools
import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from headstart.errors import DataError
from headstart.report import build_report, read_documents, write_report

from helpers import TINY_TIMM, colour_folder, review_table, tiny_bert_folder, tiny_timm_weights
from test_cli import run_cli

SYSTEM_BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
NO_BROWSER = ("no Chromium to render the report in: `pip install playwright && python -m playwright install chromium` "
              "installs one per user (it downloads from Playwright's CDN), or put a system chromium on PATH")


@functools.cache
def chromium() -> str | None:
    """Playwright's Chromium where it has been installed, else a system one, else None."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        pass
    else:
        try:
            with sync_playwright() as playwright:
                path = playwright.chromium.executable_path  # under PLAYWRIGHT_BROWSERS_PATH or ~/.cache/ms-playwright
        except Error:
            path = None
        if path and Path(path).is_file():
            return path
    return next(filter(None, map(shutil.which, SYSTEM_BROWSERS)), None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--hide-scrollbars", "--force-device-scale-factor=1"]
# Injected into a copy of the page: once loaded, it writes where every section and image landed.
LAYOUT_PROBE = """<script>window.addEventListener('load', function () {
  function box(e) { var r = e.getBoundingClientRect();
    return [Math.round(r.left), Math.round(r.top + window.scrollY), Math.round(r.width), Math.round(r.height)]; }
  var layout = {height: document.documentElement.scrollHeight,
    sections: Array.from(document.querySelectorAll('section')).map(function (s) { return [s.id].concat(box(s)); }),
    images: Array.from(document.querySelectorAll('img')).map(function (i) {
      return [i.className, i.naturalWidth].concat(box(i)); })};
  document.body.setAttribute('data-layout', JSON.stringify(layout));
});</script>"""


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A linear-probe run with 2-fold CV, a comparison, and a search whose best config was refit."""
    import os

    root = tmp_path_factory.mktemp("report")
    os.environ["HEADSTART_CACHE"] = str(root / "cache")
    images = colour_folder(root / "imgs", per_class=8, size=24, colours={
        "red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200), "grey": (120, 120, 120)})
    weights = tiny_timm_weights(root)
    model = ["--model", f"timm:{TINY_TIMM}", "--weights", weights, "--workers", 0]
    mp, cap = pytest.MonkeyPatch(), _Capture()
    for args in (["fit", images, *model, "--cv", 2, "--out", root / "fit"],
                 ["compare", images, *model, "--strategies", "scratch,linear-probe", "--epochs", 1,
                  "--out", root / "compare"],
                 ["tune", images, *model, "--trials", 3, "--pruner", "none", "--space", _space(root), "--refit",
                  "--out", root / "tune"]):
        code, _, err = run_cli(mp, cap, *args)
        assert code == 0, err
    mp.undo()
    return root


def _space(root: Path) -> Path:
    path = root / "space.yaml"
    path.write_text("epochs: 2\nlr: {low: 1.0e-3, high: 0.05}\n")  # lr high enough to learn: trials differ
    return path


class _Capture:
    """capsys for a module-scoped fixture: run_cli only needs readouterr()."""

    def readouterr(self):
        from collections import namedtuple

        return namedtuple("Captured", "out err")("", "")


def render(page: Path, work: Path) -> tuple[dict, np.ndarray]:
    """Load the page in headless Chromium: (where each section and image landed, full-page screenshot)."""
    probe = work / "probe.html"
    probe.write_text(page.read_text().replace("</body>", LAYOUT_PROBE + "</body>"))
    common = [chromium(), *FLAGS, f"--user-data-dir={work / 'profile'}"]
    dom = subprocess.run([*common, "--virtual-time-budget=5000", "--window-size=1280,1000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'data-layout="([^"]*)"', dom)
    assert found, "the page did not finish loading in Chromium"
    layout = json.loads(html.unescape(found.group(1)))
    shot = work / "shot.png"
    subprocess.run([*common, f"--window-size=1280,{layout['height']}", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    return layout, np.asarray(Image.open(shot).convert("L"), dtype=float)


def visible(pixels: np.ndarray, left: int, top: int, width: int, height: int) -> bool:
    """The box lies inside the screenshot and is not one flat colour."""
    inside = top >= 0 and top + height <= pixels.shape[0] and left + width <= pixels.shape[1] and width > 0 < height
    return inside and pixels[top:top + height, left:left + width].std() > 5


@pytest.mark.skipif(chromium() is None, reason=NO_BROWSER)
@pytest.mark.parametrize("folder, sections, plots", [
    ("fit", ["data", "backbone", "curves", "confusion", "per-class", "misclassified", "cv"], 2),
    ("tune/refit", ["data", "backbone", "curves", "confusion", "per-class", "misclassified", "tuning"], 5),
    ("compare", ["data", "comparison"], 2),
])
def test_report_renders_every_section_and_plot_in_headless_chromium(folders, tmp_path, folder, sections, plots):
    layout, pixels = render(folders / folder / "report.html", tmp_path)
    assert [s[0] for s in layout["sections"]] == sections
    assert pixels.shape[0] >= layout["height"] - 1
    for name, *box in layout["sections"]:
        assert visible(pixels, *box), f"section {name} is not in the screenshot"
    drawn = [image for image in layout["images"] if image[0] == "plot"]
    assert len(drawn) == plots
    for _, natural, *box in layout["images"]:
        assert natural > 0, "an embedded image did not decode"
        assert visible(pixels, *box), f"an image at {box} is blank or outside the screenshot"


def test_report_is_self_contained(folders):
    page = (folders / "tune" / "refit" / "report.html").read_text()
    assert "http://" not in page and "https://" not in page and "<link" not in page
    assert page.count("data:image/png;base64,") == 5 and "data:image/jpeg;base64," in page  # plots, thumbnails


def test_fit_stores_test_predictions_and_cv_for_the_report(folders):
    run = folders / "fit"
    predictions = json.loads((run / "predictions.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(predictions) == metrics["test"]["samples"]
    assert {"location", "true", "predicted", "confidence"} <= set(predictions[0])
    assert sum(p["true"] == p["predicted"] for p in predictions) == round(metrics["test"]["accuracy"] * len(predictions))
    assert metrics["cv"]["k"] == 2 and set(metrics["cv"]["std"]) == set(metrics["cv"]["mean"])


def test_tune_folder_report_shows_the_search(folders):
    page = (folders / "tune" / "report.html").read_text()
    assert 'id="tuning"' in page and "Optimisation history" in page and 'id="data"' in page


def test_ranking_section_when_the_run_has_a_ranking(folders, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(folders / "fit", run)
    ranking = [{"model": "efficientnet_lite0", "layer": "final", "logme": 1.25, "leep": -0.9, "nce": None,
                "hscore": 3.1, "knn_accuracy": 0.8}]
    (run / "ranking.json").write_text(json.dumps(ranking))
    page = build_report(read_documents(run))
    assert 'id="ranking"' in page and "efficientnet_lite0" in page and "1.2500" in page


def test_text_mistakes_are_shown_as_text(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))
    table = review_table(tmp_path / "reviews.csv", per_class=12)
    bert = tiny_bert_folder(tmp_path / "bert")
    code, _, err = run_cli(monkeypatch, capsys, "fit", table, "--model", f"hf:{bert}", "--out", tmp_path / "run", "--json")
    assert code == 0, err
    predictions = json.loads((tmp_path / "run" / "predictions.json").read_text())
    assert all(p["text"] for p in predictions) and all(":" in p["location"] for p in predictions)
    wrong = [p for p in predictions if p["true"] != p["predicted"]]
    page = (tmp_path / "run" / "report.html").read_text()
    assert (html.escape(wrong[0]["text"]) in page) if wrong else "classified right" in page


def test_report_of_a_folder_without_results_says_what_it_needs(tmp_path, monkeypatch, capsys):
    with pytest.raises(DataError, match="no metrics.json, comparison.json, tuning.json or audit.json"):
        write_report(tmp_path)
    code, _, err = run_cli(monkeypatch, capsys, "report", tmp_path / "nothing")
    assert code == 2 and "is not a folder" in " ".join(err.split())


# -- what the report says about the strategy: what was used and chosen, only what applies ----------------------------
def _options(page: str) -> dict[str, tuple[str, str]]:
    """The report's strategy options table: name -> (value, note)."""
    table = re.search(r"<h3>Strategy options</h3><table>(.*?)</table>", page).group(1)
    rows = re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td></tr>", table)
    return {name: (value, note) for name, value, note in rows}


def _run_documents(strategy: str, options: dict, selected: dict | None = None, modality: str = "image",
                   source: str = "/data/flowers") -> dict:
    data = {"source": source, "samples": 40, "modality": modality, "classes": {"a": 20, "b": 20}, "skipped": []}
    config = {"backbone": {"name": "efficientnet_lite0"}, "strategy": strategy, "strategy_config": options,
              "seed": 0, "fit": {"train_samples": 28, **({"selected": selected} if selected else {})}}
    return {"config": config, "metrics": {"data": data}, "contract": {"modality": modality}}


def test_a_linear_head_shows_the_chosen_c_and_no_mlp_options():
    options = {"head": "linear", "class_weight": None, "hidden": 512, "dropout": 0.2, "C": None}
    shown = _options(build_report(_run_documents("linear-probe", options, {"C": 0.0031622776})))
    assert set(shown) == {"head", "class_weight", "C"}
    assert shown["C"] == ("0.00316", "chosen on the validation split")
    given = _options(build_report(_run_documents("linear-probe", {**options, "C": 0.5}, {"C": 0.5})))
    assert given["C"] == ("0.5000", "")  # set by the user: nothing was chosen


def test_an_mlp_head_shows_its_own_options_and_the_epochs_it_chose():
    options = {"head": "mlp", "class_weight": "balanced", "hidden": 256, "dropout": 0.3, "C": None}
    shown = _options(build_report(_run_documents("linear-probe", options, {"epochs": 7, "hidden": 256, "dropout": 0.3})))
    assert set(shown) == {"head", "class_weight", "hidden", "dropout", "epochs"}
    assert shown["hidden"] == ("256", "") and shown["epochs"] == ("7", "chosen on the validation split")


@pytest.mark.parametrize("strategy, modality, absent, present", [
    ("finetune", "text", {"min_crop", "randaugment", "lpft_lr_scale"}, {"l2sp", "train_bn", "lr"}),
    ("finetune", "image", {"lpft_lr_scale"}, {"min_crop", "randaugment"}),
    ("lp-ft", "image", set(), {"lpft_lr_scale"}),
    ("scratch", "image", {"lpft_lr_scale", "l2sp", "train_bn"}, {"lr", "head_lr_scale"}),
])
def test_network_strategies_show_only_the_options_that_act(strategy, modality, absent, present):
    from dataclasses import asdict

    from headstart.strategies import get_strategy

    options = asdict(get_strategy(strategy).config_class())
    shown = set(_options(build_report(_run_documents(strategy, options, modality=modality))))
    assert present <= shown and not absent & shown and shown == set(options) - absent


def test_an_unknown_strategy_shows_every_option_as_recorded():
    shown = _options(build_report(_run_documents("future-strategy", {"alpha": 1, "beta": None})))
    assert shown == {"alpha": ("1", ""), "beta": ("None", "")}


def test_the_page_names_the_data_folder_and_keeps_its_whole_path_in_the_data_section():
    source = "/very/long/path/to/some/project/folder/with/many/levels/of/nesting/flowers5"
    page = build_report(_run_documents("linear-probe", {"head": "linear"}, source=source))
    subtitle = re.search(r'<p class="muted">(.*?)</p>', page).group(1)
    assert subtitle == "efficientnet_lite0 · linear-probe · flowers5"
    assert f"<b>{source}</b>" in page


def test_a_ranking_on_a_sample_says_so():
    documents = _run_documents("linear-probe", {"head": "linear"})
    documents["ranking"] = [{"model": "efficientnet_lite0", "layer": "final", "logme": 1.0, "samples": 20}]
    assert "a stratified sample of 20 of the 28 training samples" in build_report(documents)
    documents["ranking"][0]["samples"] = 28
    assert "Transferability scores on the training split" in build_report(documents)


def test_fit_output_titles_the_test_metrics_with_the_data_folder_name(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "80")
    deep = tmp_path / "a-rather-long-folder-name" / "and-another-long-one" / "and-a-third-level-too"
    images = colour_folder(deep / "colours", per_class=6, size=24)
    model = ["--model", f"timm:{TINY_TIMM}", "--weights", tiny_timm_weights(tmp_path), "--workers", 0]
    code, out, err = run_cli(monkeypatch, capsys, "fit", images, *model, "--out", tmp_path / "run")
    assert code == 0, err
    assert f"test split of colours — timm:{TINY_TIMM}, linear-probe" in " ".join(out.split())
    assert str(deep) not in out.replace("\n", "")  # the whole path is in the data line (stderr) only
