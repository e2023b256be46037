"""The HTML report: every section from what a folder holds, rendered by headless Chromium."""

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

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
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
    common = [CHROMIUM, *FLAGS, f"--user-data-dir={work / 'profile'}"]
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


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed: `apt-get install chromium` "
                                               "(`make test` installs it where apt-get works)")
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
