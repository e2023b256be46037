"""`headstart auto`: the budget arithmetic, and whole jobs on a tiny text model within tiny budgets."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

import headstart as hs
from headstart.autopilot import AutoRun, format_duration, parse_duration
from headstart.autopilot.plan import MIN_EPOCHS, Costs, Selection, network_stage
from headstart.errors import ConfigError

from helpers import review_table, run_cli, tiny_bert_folder


# -- durations and plans: arithmetic, no training -----------------------------------------------------
@pytest.mark.parametrize("text, seconds", [("90s", 90), ("20m", 1200), ("1h", 3600), ("1h30m", 5400), ("2.5", 150),
                                           (5, 300), ("1m30s", 90)])
def test_budgets_are_read_as_a_person_writes_them(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-5", "0m", "20 minutes"])
def test_a_budget_that_is_no_duration_is_refused_with_the_forms_that_work(text):
    with pytest.raises(ConfigError, match="90s, 20m, 1h|longer than zero"):
        parse_duration(text)


def test_durations_print_short():
    assert [format_duration(s) for s in (40, 750, 3900)] == ["40s", "12m30s", "1h05m"]


def test_small_data_is_scored_by_folds_and_large_data_by_one_validation_share():
    assert Selection.for_size(200).folds == 5 and Selection.for_size(5000).folds is None
    single = Selection.for_size(1000)
    assert single.fit_samples == 850 and single.val_samples == 150


def test_a_network_stage_takes_the_most_epochs_that_fit_with_its_refit_and_never_more():
    costs = Costs({"m": 0.01}, train_factor=3.0)
    selection = Selection(1000)  # one split: 850 fit, 150 val
    per_epoch = 0.01 * (3 * 850 + 150) + 0.01 * (3 * 1000 + 150)  # selection epoch + refit epoch = 58.5 s
    stage = network_stage("finetune", "m", costs, selection, seconds=300)
    assert stage.epochs == 5 and stage.seconds == pytest.approx(5 * per_epoch) and stage.seconds <= 300
    assert network_stage("finetune", "m", costs, selection, seconds=MIN_EPOCHS * per_epoch - 1) is None
    assert network_stage("finetune", "m", costs, selection, seconds=1e6).epochs == 10  # the cap
    assert stage.refit_seconds == pytest.approx(5 * 0.01 * (3 * 1000 + 150))
    alone = network_stage("finetune", "m", costs, selection, seconds=MIN_EPOCHS * per_epoch - 1, refit=False)
    assert alone.epochs == 4 and alone.refit_seconds == 0  # without the refit: 27 s an epoch


def test_a_network_gets_good_epochs_from_its_share_or_without_refit_or_from_all_the_time_left():
    from headstart.autopilot.plan import GOOD_EPOCHS, network_stage

    job = AutoRun.__new__(AutoRun)  # the planning needs only the measured costs
    job.costs = Costs(forward={"m": 0.01}, train_factor=3.0)
    large, small = Selection.for_size(3000), Selection.for_size(300)
    epoch = network_stage("finetune", "m", job.costs, large, 1e9, max_epochs=2, refit=False).seconds / 2
    roomy = job._network_plan("finetune", "m", large, left=40 * epoch, share=20 * epoch)
    assert roomy.epochs >= GOOD_EPOCHS and roomy.refit_seconds > 0  # its share holds them with a refit
    no_refit = job._network_plan("finetune", "m", large, left=12 * epoch, share=6 * epoch)
    assert no_refit.epochs >= GOOD_EPOCHS and no_refit.refit_seconds == 0 and no_refit.seconds <= 6 * epoch
    everything = job._network_plan("finetune", "m", large, left=12 * epoch, share=4 * epoch)
    assert everything.epochs >= GOOD_EPOCHS and 4 * epoch < everything.seconds <= 12 * epoch
    short = job._network_plan("finetune", "m", large, left=3 * epoch, share=3 * epoch)
    assert short.epochs == 3  # fewer than good, but a fair try
    folds = job._network_plan("finetune", "m", small, left=1e9, share=1e9)
    assert folds.refit_seconds > 0  # K folds are always refit
    assert job._network_plan("finetune", "m", large, left=epoch, share=epoch) is None


def test_folds_multiply_a_network_stage_cost():
    costs = Costs({"m": 0.01})
    one = network_stage("finetune", "m", costs, Selection(500, folds=None), seconds=1e6)
    five = network_stage("finetune", "m", costs, Selection(500, folds=5), seconds=1e6)
    fold_epoch, refit_epoch = 0.01 * (3 * 340 + 60), 0.01 * (3 * 500 + 75)  # a fold trains on 340, validates on 60
    assert five.seconds == pytest.approx(10 * (5 * fold_epoch + refit_epoch) + 0.01 * 500)  # + scoring the held-out folds
    assert one.seconds == pytest.approx(10 * (0.01 * (3 * 425 + 75) + refit_epoch))


def test_the_training_cost_is_learnt_from_measured_epochs():
    costs = Costs({"m": 0.01})
    costs.learn_training("m", [{"seconds": 10.0}, {"seconds": 12.0}], n_fit=200, n_val=100)
    assert costs.train_factor == pytest.approx((11.0 - 0.01 * 100) / (0.01 * 200))


# -- whole jobs on a tiny model ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_text(tmp_path_factory):
    root = tmp_path_factory.mktemp("auto")
    return root, review_table(root / "reviews.csv", per_class=30), f"hf:{tiny_bert_folder(root / 'bert', dropout=0.0)}"


@pytest.fixture(scope="module")
def finished(tiny_text):
    root, table, bert = tiny_text
    started = time.monotonic()
    result = hs.auto(table, root / "run", budget="25s", candidates=[bert], device="cpu", cache_dir=str(root / "cache"))
    return result, time.monotonic() - started


def test_auto_scores_probe_and_network_strategies_refits_the_winner_and_keeps_to_the_budget(finished):
    result, wall = finished
    strategies = [row["strategy"] for row in result.stages]
    assert strategies[0] == "linear-probe" and {"lp-ft", "lora", "finetune"} <= set(strategies)
    assert any(row["status"] == "done" and row["epochs"] for row in result.stages)  # a network strategy trained
    assert result.spent <= 1.1 * 25 and wall <= 1.1 * 25 + 5  # + 5 s: opening the tiny model before the clock
    best = max(r["score"] for r in result.stages if r["score"] is not None)
    assert result.winner["score"] == best or (result.winner["probe"] and best - result.winner["score"] <= 0.15)
    assert "whole training split" in result.winner["refit"] or "all 48 training samples" in result.winner["refit"]
    info = result.transfer.fit_info_  # the final model saw every training sample (a probe's head: train + val share)
    assert info["train_samples"] + (info["val_samples"] if result.winner["strategy"] == "linear-probe" else 0) == 48
    assert result.metrics["samples"] == 12 and result.metrics["accuracy"] > 0.5


def test_the_auto_run_loads_predicts_and_reports_its_leaderboard(finished, tiny_text):
    result, _ = finished
    root, table, _ = tiny_text
    document = json.loads((result.out_dir / "auto.json").read_text())
    assert document["selection"] == "5-fold CV accuracy" and len(document["stages"]) == len(result.stages)
    assert (result.out_dir / "audit.json").is_file()
    page = (result.out_dir / "report.html").read_text()
    assert 'id="auto"' in page and document["why"] in page
    model = hs.load(result.out_dir, device="cpu")
    assert model.evaluate(hs.TextTable(table))["accuracy"] == pytest.approx(
        result.transfer.evaluate(hs.TextTable(table))["accuracy"])


def test_a_tiny_budget_still_ends_with_a_model_and_says_what_it_skipped(tiny_text):
    root, table, bert = tiny_text
    result = hs.auto(table, root / "tiny", budget="1s", candidates=[bert], device="cpu", audit=False,
                     cache_dir=str(root / "cache"))
    skipped = [row for row in result.stages if row["status"].startswith("skipped")]
    assert result.winner["strategy"] == "linear-probe" and skipped
    assert all("not enough" in row["status"] for row in skipped)


def test_an_interrupted_auto_resumes_with_the_stages_it_had_scored(tiny_text):
    root, table, bert = tiny_text

    def interrupt_once_the_first_stage_is_scored(stage, done, total, note=""):
        if stage.startswith("auto 1:") and done:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        hs.auto(table, root / "resumed", budget="20s", candidates=[bert], device="cpu", audit=False,
                cache_dir=str(root / "cache"), progress=interrupt_once_the_first_stage_is_scored)
    state = json.loads((root / ".resumed.unfinished" / "auto-state.json").read_text())
    assert [row["strategy"] for row in state["stages"]] == ["linear-probe"] and state["spent"] > 0
    resumed = AutoRun.resume(root / "resumed")
    assert resumed.budget.spent() >= state["spent"]
    result = resumed.run()
    assert result.stages[0]["seconds"] == state["stages"][0]["seconds"]  # kept, not run again
    assert not (root / ".resumed.unfinished").exists()


def test_the_auto_command_prints_the_leaderboard_and_the_test_scores(tiny_text, monkeypatch, capsys):
    root, table, bert = tiny_text
    code, stdout, stderr = run_cli(monkeypatch, capsys, "auto", str(table), "--budget", "10s", "--candidates", bert,
                                   "--no-audit", "--device", "cpu", "--out", str(root / "cli"),
                                   "--cache-dir", str(root / "cache"))
    assert code == 0, stderr
    assert "linear-probe ★" in stdout and "accuracy" in stdout and str(root / "cli") in stdout


def test_a_probe_is_costed_by_the_samples_the_feature_cache_lacks(tiny_text, tmp_path):
    from headstart.backbones import build_backbone
    from headstart.features import extract_features, uncached_count

    _, table, bert = tiny_text
    data, backbone = hs.TextTable(table), build_backbone(bert)
    assert uncached_count(backbone, data, tmp_path) == len(set(data.items))
    extract_features(backbone, data.subset(range(10)), cache_dir=tmp_path)
    assert uncached_count(backbone, data, tmp_path) == len(set(data.items)) - len(set(data.items[:10]))


# -- ensembles -----------------------------------------------------------------------------------------
def _scored(probabilities, labels, score=0.0):
    from headstart.autopilot.scoring import Scored

    return Scored(score, 0.0, probabilities=np.array(probabilities, dtype=float), labels=np.array(labels))


def test_a_blend_joins_members_only_while_the_average_scores_higher():
    from headstart.autopilot.scoring import Scored, best_blend

    labels = [0, 1, 0, 1]
    a = _scored([[0.9, 0.1], [0.6, 0.4], [0.6, 0.4], [0.4, 0.6]], labels)  # 3 of 4: sample 2 wrong
    b = _scored([[0.4, 0.6], [0.1, 0.9], [0.9, 0.1], [0.3, 0.7]], labels)  # 3 of 4: sample 1 wrong
    c = _scored([[0.5, 0.5], [0.9, 0.1], [0.9, 0.1], [0.9, 0.1]], labels)  # 2 of 4, and no help to a + b
    members, score = best_blend({"a": a, "b": b, "c": c})
    assert members == ["b", "a"] and score == 1.0  # ties are broken by name, the later one first
    alone, score = best_blend({"a": a, "c": c})
    assert alone == ["a"] and score == 0.75
    assert best_blend({"probe": Scored(0.9, 0.0)}) == ([], 0.0)  # a probe's final head: no honest predictions


def test_an_ensemble_that_wins_on_validation_is_saved_as_one_run_that_loads(tiny_text, monkeypatch):
    """Force the blend to win: the job must then refit every member and save them as one run (repeats with
    other seeds keep back the time those refits need)."""
    from headstart.autopilot import run as auto_run

    monkeypatch.setattr(auto_run, "best_blend", lambda scored, most=3: (sorted(scored)[:2], 1.01))  # above any accuracy
    root, table, bert = tiny_text
    # The job usually ends after about 15 s (its repeats are capped); the budget leaves a slow machine room for
    # the networks and the members' refits the ensemble needs (with 25 s it once ended with the probe alone).
    result = hs.auto(table, root / "ensembled", budget="40s", candidates=[bert], device="cpu", audit=False,
                     cache_dir=str(root / "cache"))
    assert result.winner["strategy"] == "ensemble" and len(result.winner["members"]) == 2, result.stages
    assert isinstance(result.transfer, hs.Ensemble) and result.spent <= 1.1 * 40
    model = hs.load(result.out_dir, device="cpu")
    assert isinstance(model, hs.Ensemble)
    assert model.evaluate(hs.TextTable(table))["accuracy"] == pytest.approx(
        result.transfer.evaluate(hs.TextTable(table))["accuracy"])
    assert "ensemble of" in (result.out_dir / "report.html").read_text()


def test_time_left_after_the_networks_searches_the_best_ones_settings_then_trains_it_with_other_seeds(tiny_text):
    root, table, bert = tiny_text
    result = hs.auto(table, root / "searched", budget="4m", candidates=[bert], device="cpu", audit=False, trials=4,
                     cache_dir=str(root / "cache"))
    searched = [row for row in result.stages if row.get("options") and row.get("seed") is None]
    assert len(searched) == 1 and searched[0]["score"] is not None and searched[0]["epochs"]
    assert searched[0]["options"]["lr"] > 0  # the settings the search found, which the stage trained with
    document = json.loads((result.out_dir / "auto.json").read_text())
    assert any("searched in 4 trials" in note for note in document["notes"])
    repeats = [row for row in result.stages if row.get("seed") is not None]
    best = max((row for row in result.stages if row["epochs"] and row["score"] is not None and "seed" not in row),
               key=lambda row: row["score"])
    assert repeats and [row["seed"] for row in repeats] == list(range(1, len(repeats) + 1))
    assert all((row["strategy"], row.get("options"), row["epochs"]) == (best["strategy"], best.get("options"),
                                                                        best["epochs"]) for row in repeats)
    assert ", seed 1" in (result.out_dir / "report.html").read_text()  # the leaderboard names each repeat
    assert result.spent <= 1.1 * 240


def test_candidates_trained_with_other_seeds_are_scored_on_the_same_held_out_samples(tiny_text):
    from headstart.autopilot.scoring import score_candidate

    _, table, bert = tiny_text
    data = hs.TextTable(table)
    selection = Selection(len(data), folds=None)
    first, second = (score_candidate(hs.Transfer(bert, "finetune", config={"epochs": 2}, seed=seed, device="cpu"),
                                     data, selection, split_seed=0) for seed in (0, 1))
    assert np.array_equal(first.labels, second.labels) and len(first.labels) == selection.scored_samples
    assert not np.allclose(first.probabilities, second.probabilities)  # the seed changed the training


def test_repeats_with_other_seeds_never_win_alone_and_are_offered_as_one_average_with_their_stage(tmp_path):
    from headstart.autopilot.budget import Budget
    from headstart.autopilot.plan import row_key
    from headstart.autopilot.run import AutoArgs

    run = AutoRun.__new__(AutoRun)  # the choice alone: no data, no training
    run.args, run.notes, run.progress = AutoArgs(data="x", out_dir=str(tmp_path / "run")), [], None
    (tmp_path / ".run.unfinished").mkdir()  # the job's work dir, where its state is saved
    run.budget, run.costs, run.ranking = Budget(3600), Costs(forward={"m": 0.001}), None
    labels = [0, 1, 0, 1]
    probe = {"model": "m", "strategy": "linear-probe", "probe": True, "epochs": None, "score": 0.5}
    lora = {"model": "m", "strategy": "lora", "probe": False, "epochs": 3, "best_epoch": 3, "score": 0.5}
    lucky = {**lora, "seed": 1, "score": 1.0}  # right everywhere by chance: the same recipe as lora
    other = {**lora, "seed": 2, "score": 0.75}
    run.rows = [probe, lora, lucky, other]
    run._scored = {row_key(probe): _scored([[0.5, 0.5]] * 4, labels),
                   row_key(lora): _scored([[0.9, 0.1], [0.4, 0.6], [0.4, 0.6], [0.9, 0.1]], labels),  # 2 of 4
                   row_key(lucky): _scored([[0.6, 0.4], [0.4, 0.6], [0.6, 0.4], [0.4, 0.6]], labels),  # 4 of 4
                   row_key(other): _scored([[0.6, 0.4], [0.1, 0.9], [0.9, 0.1], [0.6, 0.4]], labels)}  # 3 of 4
    for key, scored in run._scored.items():
        scored.fitted = object()  # one validation share: the selection's models serve, nothing to refit
    selection = Selection(1000)
    assert run._choose(selection) is not lucky
    assert run._seed_average() == (0.75, "m", [row_key(lora), row_key(lucky), row_key(other)])  # all, not the best
    run._ensemble(None, selection, test_samples=10)
    assert run.rows[-1]["strategy"] == "ensemble" and run.rows[-1]["member_keys"] == run._seed_average()[2]


def test_a_network_within_one_standard_error_of_the_probe_does_not_replace_it():
    from headstart.autopilot.plan import standard_error

    run = AutoRun.__new__(AutoRun)  # the choice alone: no data, no clock
    run.notes = []
    selection = Selection(1000)  # 150 validation samples
    probe = {"model": "m", "strategy": "linear-probe", "probe": True, "score": 0.90}
    margin = standard_error(0.91, 150)
    close = {"model": "m", "strategy": "lora", "probe": False, "score": 0.91}
    run.rows = [probe, close]
    assert 0.91 - 0.90 < margin and run._choose(selection) is probe and "one standard error" in run.notes[0]
    clear = {"model": "m", "strategy": "lora", "probe": False, "score": 0.95}  # 0.05 > one error (0.018)
    run.rows = [probe, clear]
    assert run._choose(selection) is clear


# -- test-time augmentation ----------------------------------------------------------------------------
def test_tta_is_taken_only_when_it_scores_strictly_higher_on_the_held_out_samples():
    labels = [0, 1, 0, 1]
    plain = [[0.9, 0.1], [0.6, 0.4], [0.6, 0.4], [0.4, 0.6]]  # 3 of 4
    better, worse = [[0.9, 0.1], [0.4, 0.6], [0.6, 0.4], [0.4, 0.6]], [[0.4, 0.6]] * 4  # 4 of 4; 2 of 4
    scored = _scored(plain, labels, score=0.75)
    scored.tta_probabilities = np.array(better)
    assert scored.take_tta() == 0.25 and scored.tta and scored.score == 1.0
    assert np.array_equal(scored.probabilities, better) and scored.take_tta() is None  # taken once
    kept = _scored(plain, labels, score=0.75)
    kept.tta_probabilities = np.array(worse)
    assert kept.take_tta() == -0.25 and not kept.tta and kept.score == 0.75 and np.array_equal(kept.probabilities, plain)
    assert _scored(plain, labels).take_tta() is None  # not measured (texts, or no time for it)


@pytest.fixture(scope="module")
def tiny_images(tmp_path_factory):
    """A colour folder and a `run:` backbone (a tiny timm model fine-tuned for one epoch)."""
    from helpers import TINY_TIMM, colour_folder, tiny_timm_weights

    root = tmp_path_factory.mktemp("auto-images")
    folder = colour_folder(root / "images", per_class=12, size=32)
    hs.Transfer(f"timm:{TINY_TIMM}", "finetune", weights=tiny_timm_weights(root), num_workers=0, device="cpu",
                cache_dir=root / "cache", config={"epochs": 1, "patience": 0}).fit(hs.ImageFolder(folder)).save(root / "base")
    return root, folder, f"run:{root / 'base'}"


def test_auto_on_images_trains_networks_at_their_size_measures_tta_and_a_winner_that_takes_it_predicts_with_it(
        tiny_images, monkeypatch):
    """Mirrored predictions that are always right, beside plain ones that are not (the colours are easy enough
    for both to be), must win: the final run then predicts with tta. The networks train at the photos' 32 px
    (the tiny backbone's input is 160 px), the probe at the backbone's own size."""
    from headstart.autopilot import plan
    from headstart.autopilot import run as auto_run
    from headstart.autopilot import scoring

    def perfect_mirror(*args, **kwargs):
        scored = scoring.score_candidate(*args, **kwargs)
        if scored.tta_probabilities is not None:
            classes = scored.probabilities.shape[1]
            scored.tta_probabilities = np.eye(classes)[scored.labels]
            scored.probabilities = np.eye(classes)[(scored.labels + 1) % classes]  # every one wrong
        return scored

    monkeypatch.setattr(auto_run, "score_candidate", perfect_mirror)
    monkeypatch.setattr(auto_run, "TTA_SHARE", 1.0)  # measured however slow a loaded machine makes the mirrored pass
    monkeypatch.setattr(plan, "SMALL_IMAGE_SIZE", 32)  # 128 px would not be 3/4 of the tiny backbone's 160
    root, folder, base = tiny_images
    result = hs.auto(folder, root / "tta", budget="25s", candidates=[base], device="cpu", audit=False, workers=0,
                     cache_dir=str(root / "cache"))
    measured = [row for row in result.stages if "tta_gain" in row]
    assert measured and all(row["tta"] == (row["tta_gain"] > 0) for row in measured)  # 5-fold: every stage
    assert result.winner.get("tta") and result.transfer.tta and result.spent <= 1.1 * 25
    loaded = hs.load(result.out_dir, device="cpu")
    images = hs.ImageFolder(folder)
    assert loaded.tta and len(loaded.predict(images)) == len(images)  # the run records it, and predicts at 32 px
    assert ", tta" in (result.out_dir / "report.html").read_text()
    probes = {r["model"] for r in result.stages if r["probe"]}
    networks = {r["model"] for r in result.stages if r["epochs"]}
    assert probes == {base} and networks == {f"{base}@32"}
    notes = json.loads((result.out_dir / "auto.json").read_text())["notes"]
    assert any(f"Networks trained {base}@32: the images' median shorter side is 32 px" in note for note in notes)


def test_network_stages_train_at_the_images_own_size_when_that_is_far_below_the_backbone_s_input():
    from headstart.autopilot.plan import network_input_size

    assert network_input_size(128, 224) == 128 and network_input_size(100, 240) == 128  # rounded up, 128 at least
    assert network_input_size(140, 260) == 160 and network_input_size(60, 224) == 128  # small photos upscaled to 128
    assert network_input_size(180, 224) is None and network_input_size(128, 160) is None  # too close to the input
    assert network_input_size(None, 224) is None  # no header could be read


def test_the_median_shorter_side_comes_from_image_headers(tmp_path):
    from PIL import Image

    from headstart.data import median_shorter_side

    paths = []
    for i, size in enumerate([(40, 30), (50, 80), (200, 60), (64, 64), (90, 300)]):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.new("RGB", size).save(paths[-1])
    (tmp_path / "broken.png").write_bytes(b"not an image")
    assert median_shorter_side(paths + [str(tmp_path / "broken.png")]) == 60.0
    assert median_shorter_side(paths, sample=3) in {30.0, 50.0, 60.0, 64.0, 90.0}
    assert median_shorter_side([str(tmp_path / "broken.png")]) is None


def test_a_backbone_that_cannot_take_the_images_size_trains_at_its_own(tiny_images, monkeypatch):
    from headstart.autopilot import AutoArgs, plan

    def refuse(self, names):
        raise ConfigError(f"Backbone '{names[0]}' cannot take 32 px images (fixed position embeddings).")

    monkeypatch.setattr(plan, "SMALL_IMAGE_SIZE", 32)
    monkeypatch.setattr(AutoRun, "_calibrate", refuse)
    root, folder, base = tiny_images
    job = AutoRun(AutoArgs(str(folder), str(root / "refused")))
    assert job._network_model(base, job.data) == base and job._network_model(base, job.data) == base
    assert len(job.notes) == 1 and "at its own input size" in job.notes[0] and "cannot take 32 px" in job.notes[0]
