"""``headstart auto``: audit, rank, probe, train what the budget allows, choose, refit, evaluate, save.

The budget is spent in order of value per second: a feature pass per candidate backbone is
cheap and its linear probe often good, so probes come first; network strategies then train on
the best probe's backbone for as many epochs as their share of the time left allows (with the
refit on the whole training split counted in). Every stage is planned from measured times and
stopped by the clock if it runs long; after each, the plan is made again from what is left.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import data_audit
from ..backbones import build_backbone
from ..backbones.sizing import split_input_size
from ..data import LabelledData, median_shorter_side
from ..data.reading import ReadOptions
from ..devices import resolve_device
from ..errors import ConfigError, first_line
from ..ensemble import Ensemble
from ..features import uncached_count
from ..ranking import DEFAULT_SAMPLE, default_candidates, rank
from ..runs import check_output_dir, write_text_atomic
from ..strategies import get_strategy
from ..training import TimeLimit
from ..transfer import ENSEMBLE, Transfer
from ..data.opening import open_data
from ..workflows import (TRAINED_ON, held_workspace, refit_on_all, saved_arguments, trained_on_digests, with_report,
                         work_dir)
from .budget import Budget, format_duration
from .plan import (GOOD_EPOCHS, MIN_EPOCHS, NETWORK_STRATEGIES, Costs, Selection, Stage, network_input_size,
                   network_stage, probe_seconds, refit_seconds, row_key, standard_error)
from .search import MIN_TRIALS, search_settings
from .scoring import Scored, average_accuracy, best_blend, forward_seconds, score_candidate, train_step_seconds

__all__ = ["AutoArgs", "AutoResult", "AutoRun", "stage_title"]

Progress = Callable[..., None]
ARGS_FILE, STATE_FILE = "auto-args.json", "auto-state.json"
PROBES = 2  # backbones probed after the ranking
AUDIT_SHARE, RANK_SHARE, PROBE_SHARE = 0.2, 0.25, 0.3  # most of the time left each of these may take
FINISH_SECONDS = 5.0  # the report and writing the run
SEARCH_SHARE = 0.8  # of the time left after scoring and refitting its result: the rest may refit an ensemble
SLACK = 1.15  # a stage may run this much over its plan before the clock stops it
TTA_SHARE = 0.05  # of the budget: the most a stage's second pass over its held-out images (mirrored) may cost
REPEATS = 4  # most trainings of the best network stage with other seeds, in the time the other stages left


@dataclass
class AutoArgs:
    """Everything an ``auto`` job needs to (re)start; saved in its work dir until it ends."""

    data: str
    out_dir: str
    budget: float = 1200.0
    candidates: list[str] | None = None
    test: float = 0.2
    seed: int = 0
    audit: bool = True
    drop: list[str] | None = None
    trials: int = 40  # most trials of the search stage (0: none)
    text_column: str = "text"
    label_column: str | None = "label"
    reading: dict = field(default_factory=dict)
    batch_size: int = 64
    workers: int | None = None
    device: str = "auto"
    cache_dir: str | None = None


@dataclass
class AutoResult:
    """What :meth:`AutoRun.run` made: the final model (an Ensemble when averaging won), its test metrics,
    every stage's row, where it is."""

    transfer: Transfer | Ensemble
    metrics: dict
    stages: list[dict]
    winner: dict
    out_dir: Path
    spent: float
    budget: float


class AutoRun:
    """One ``headstart auto`` job; ``clock`` is replaceable so tests can hold time still or run it fast."""

    def __init__(self, args: AutoArgs, *, clock: Callable[[], float] = time.monotonic, resumed: bool = False) -> None:
        self.args, self.resumed = args, resumed
        self.data = open_data(args.data, args.text_column, args.label_column, reading=ReadOptions(**args.reading))
        state = self._read_state() if resumed else {}
        self.budget = Budget(args.budget, clock=clock, spent=state.get("spent", 0.0))
        self.costs = Costs(**state.get("costs", {}))
        self.rows: list[dict] = state.get("stages", [])
        self.ranking: list[dict] | None = state.get("ranking")
        self.notes: list[str] = state.get("notes", [])
        self.audit_result, self.dropped = None, []
        self.device = resolve_device(args.device)
        self.progress: Progress | None = None
        self._scored: dict[str, Scored] = {}  # this process's scored stages, by row key
        self.selection: Selection | None = None

    @classmethod
    def resume(cls, out_dir: str | Path, *, clock: Callable[[], float] = time.monotonic) -> AutoRun:
        """The interrupted job that was to write ``out_dir``; the time it spent counts against its budget."""
        return cls(saved_arguments(out_dir, ARGS_FILE, "`auto` job", lambda values: AutoArgs(**values)),
                   clock=clock, resumed=True)

    @property
    def out_dir(self) -> Path:
        return Path(self.args.out_dir)

    # -- the job ---------------------------------------------------------------------------------------
    def run(self, progress: Progress | None = None) -> AutoResult:
        """Plan and run the stages within the budget, refit the winner, evaluate it once on the test split, save."""
        check_output_dir(self.out_dir, [self.args.data])
        self.progress = progress
        with held_workspace(self.out_dir, STATE_FILE) as workspace:
            write_text_atomic(workspace / ARGS_FILE, json.dumps(asdict(self.args), indent=1))
            result = self._run_stages()
        shutil.rmtree(workspace, ignore_errors=True)
        return result

    def _run_stages(self) -> AutoResult:
        candidates = self.args.candidates or default_candidates(self.data.modality)
        self._calibrate(candidates)
        self._audit(candidates)
        train, test = self.data.split(test=self.args.test, seed=self.args.seed)
        selection = self.selection = Selection.for_size(len(train))
        order = self._rank(candidates, train, self._reserve(candidates, len(test)))
        self._probes(order, train, selection, self._reserve(candidates, len(test)))
        probed = [r["model"] for r in self._probed()]
        self._networks(train, selection, self._reserve(probed, len(test)))
        self._more_probes(order, train, selection, self._reserve(candidates, len(test)))
        self._search(train, selection, self._reserve(probed, len(test)))
        self._repeats(train, selection, len(test))
        self._ensemble(train, selection, len(test))
        winner = self._choose(selection)
        final = self._final(winner, train, selection, len(test))
        metrics, predictions = final.evaluate_with_predictions(test)
        leakage = data_audit.warn_split_leakage(train, test, final.backbone_, cache_dir=self.args.cache_dir)
        self._save(final, winner, metrics, predictions, train, leakage)
        return AutoResult(final, metrics, self.rows, winner, self.out_dir, self.budget.spent(), self.budget.seconds)

    # -- measuring -------------------------------------------------------------------------------------
    def _calibrate(self, candidates: list[str]) -> None:
        """Time a forward pass of each candidate, and a training step of the first (a few seconds each):
        every plan rests on them."""
        for name in candidates:
            if name not in self.costs.forward:
                self._say(f"timing {name}")
                self.costs.forward[name] = forward_seconds(name, self.data, device=self.device,
                                                           batch_size=self.args.batch_size,
                                                           num_workers=self.args.workers)
        if not self.costs.measured:
            step = train_step_seconds(candidates[0], self.data, device=self.device)
            self.costs.set_train_factor(step / self.costs.forward[candidates[0]])

    def _reserve(self, models: list[str], test_samples: int) -> float:
        """Seconds kept back for the end: the test split's pass through the slowest model that can still
        win, and writing the run."""
        return max(self.costs.forward[m] for m in models) * test_samples + FINISH_SECONDS

    def _audit(self, candidates: list[str]) -> None:
        """Audit with the first candidate's features (which its probe then reads from the cache) when that
        takes at most a fifth of the budget; drop only what was asked for."""
        a = self.args
        cost = self.costs.forward[candidates[0]] * len(self.data)
        if not (a.audit or a.drop):
            return
        if cost > AUDIT_SHARE * self.budget.left() and not a.drop:
            self._note(f"The audit was skipped: its feature pass (about {format_duration(cost)}) would take "
                              f"over {AUDIT_SHARE:.0%} of the budget. Run `headstart audit` on its own.")
            return
        self.audit_result = data_audit.audit(self.data, model=candidates[0], seed=a.seed, cache_dir=a.cache_dir,
                                             batch_size=a.batch_size, num_workers=a.workers, device=a.device,
                                             progress=self.progress)
        self.data, self.dropped = data_audit.drop_flagged(self.data, self.audit_result, a.drop or [])

    def _rank(self, candidates: list[str], train: LabelledData, reserve: float) -> list[str]:
        """Candidates best first by LogME, on a stratified sample small enough for a quarter of the time left."""
        if len(candidates) == 1:
            return candidates
        if self.ranking is None:
            per_sample = sum(self.costs.forward[c] for c in candidates)
            affordable = int(RANK_SHARE * max(0.0, self.budget.left() - reserve) / per_sample)
            sample = min(DEFAULT_SAMPLE, len(train), affordable)
            if sample < max(50, 5 * len(train.classes)):
                self._note(f"Backbones were not ranked: a ranking sample would not fit the budget; "
                                  f"{candidates[0]} was probed first.")
                return candidates
            self._say(f"ranking {len(candidates)} backbones on {sample} samples")
            rows = rank(candidates, train, cache_dir=self.args.cache_dir, batch_size=self.args.batch_size,
                        num_workers=self.args.workers or 1, device=self.device, progress=self.progress,
                        sample=sample, seed=self.args.seed)
            self.ranking = [row.to_dict() for row in rows]
            self._save_state()
        return [row["model"] for row in self.ranking]

    # -- stages ----------------------------------------------------------------------------------------
    def _probes(self, order: list[str], train: LabelledData, selection: Selection, reserve: float) -> None:
        """Probe the best-ranked backbone whose feature pass fits (the cheapest if none does: a model must
        come out), then the next ones while each takes at most a share of the time left."""
        costs = {model: probe_seconds(self.costs, model, self._uncached(model, train)) for model in order}
        first = next((m for m in order if costs[m] <= self.budget.left() - reserve), min(order, key=costs.get))
        if first != order[0]:
            self._note(f"{first} was probed first: a feature pass of {order[0]} (about "
                              f"{format_duration(costs[order[0]])}) did not fit the time left.")
        for model in [first, *(m for m in order if m != first)][:PROBES]:
            stage = Stage.probe_of(model, costs[model])
            if model != first and costs[model] > PROBE_SHARE * (self.budget.left() - reserve):
                self._skip(stage, f"its feature pass (about {format_duration(costs[model])}) would take over "
                                  f"{PROBE_SHARE:.0%} of the time left")
                continue
            self._run_stage(stage, train, selection, time_limit=None)

    def _more_probes(self, order: list[str], train: LabelledData, selection: Selection, reserve: float) -> None:
        """Time the network strategies left unused goes to probing the other candidates that fit in it."""
        for model in order:
            if model in {r["model"] for r in self._probed()}:
                continue
            cost = probe_seconds(self.costs, model, self._uncached(model, train))
            if cost <= self.budget.left() - reserve:
                self.rows = [r for r in self.rows if not (r["model"] == model and r["probe"])]  # was skipped
                self._run_stage(Stage.probe_of(model, cost), train, selection, time_limit=None)

    def _networks(self, train: LabelledData, selection: Selection, reserve: float) -> None:
        model = self._network_model(max(self._probed(), key=lambda r: r["score"])["model"], train)
        strategies = NETWORK_STRATEGIES[self.data.modality]
        for place, strategy in enumerate(strategies):
            left = self.budget.left() - reserve
            stage = self._network_plan(strategy, model, selection, left, left / (len(strategies) - place))
            if stage is None:
                self._skip(Stage(model, strategy, None, 0.0), f"{format_duration(max(left, 0))} left is not enough "
                                                               "for 2 epochs")
                continue
            selecting = min((stage.seconds - stage.refit_seconds) * SLACK,  # the refit's time stays reserved
                            left - stage.refit_seconds)  # and never the reserve
            self._run_stage(stage, train, selection, time_limit=self.budget.spent() + selecting)

    def _network_model(self, model: str, train: LabelledData) -> str:
        """The backbone the network stages train: the best probe's, fed the images at their own size where
        they are far smaller than its input (:func:`network_input_size`), timed as the candidates were."""
        if self.data.modality != "image" or split_input_size(model)[1] is not None:
            return model
        side = median_shorter_side(train.items)
        size = network_input_size(side, build_backbone(model).contract.input_size)
        if size is None:
            return model
        sized = f"{model}@{size}"
        try:
            self._calibrate([sized])
        except ConfigError as exc:  # a network that takes one size only (fixed position embeddings)
            self._note(f"Networks trained {model} at its own input size: {first_line(exc, 200)}")
            return model
        self._note(f"Networks trained {sized}: the images' median shorter side is {side:.0f} px, and upscaling them "
                   f"to {model}'s input adds pixels to pay for, not detail.")
        return sized

    def _note(self, note: str) -> None:
        """Add a note for auto.json and the report, once: a resumed job takes its decisions again."""
        if note not in self.notes:
            self.notes.append(note)

    def _network_plan(self, strategy: str, model: str, selection: Selection, left: float,
                      share: float) -> Stage | None:
        """The first plan that trains ``GOOD_EPOCHS`` or more: its share of the time left with a refit,
        then without one (one split: the selection's model can serve as is), then all the time left
        (the strategies after it are then skipped: more epochs of one network beat two networks too
        short to pass a probe). Failing that, the first that trains ``MIN_EPOCHS``: the share, then all
        the time left, with a refit, then all of it without."""
        def plan(seconds: float, refit: bool) -> Stage | None:
            if not refit and selection.folds is not None:
                return None  # K folds leave no one model to serve: the winner is always refit
            return network_stage(strategy, model, self.costs, selection, seconds, refit=refit)

        good = (plan(share, True), plan(share, False), plan(left, True), plan(left, False))
        return next((stage for stage in good if stage is not None and stage.epochs >= GOOD_EPOCHS), None) \
            or good[0] or good[2] or good[3]

    def _choose(self, selection: Selection) -> dict:
        """The best-scoring stage, except that a network (or ensemble) must beat the best probe by more than
        one standard error of its validation accuracy: a probe on frozen features varies far less, and a
        difference of a sample or two on the validation share is noise (Breiman's one-standard-error rule)."""
        scored = self._candidates()
        best = max(scored, key=lambda r: r["score"])
        probes = [r for r in scored if r["probe"]]
        if best["probe"] or not probes:
            return best
        probe = max(probes, key=lambda r: r["score"])
        margin = standard_error(best["score"], selection.scored_samples)
        if best["score"] - probe["score"] > margin:
            return best
        self._note(f"{stage_title(best)} on {best['model']} scored {best['score']:.3f}, within one standard "
                          f"error ({margin:.3f}) of the probe of {probe['model']} ({probe['score']:.3f}): the probe "
                          "is kept, as the steadier choice.")
        return probe

    def _search(self, train: LabelledData, selection: Selection, reserve: float) -> None:
        """Search the best network stage's settings, training one epoch past its best epoch, when the time
        left holds at least ``MIN_TRIALS`` trials (each costs what the stage measured per epoch) besides
        scoring what the search found and refitting it; the search gets most of what is left of that."""
        networks = [r for r in self.rows if r["epochs"] and r["score"] is not None and not r.get("options")
                    and r.get("seed") is None]
        if not networks or not self.args.trials or any(r.get("options") for r in self.rows):
            return  # nothing to search, or searched before an interruption
        best = max(networks, key=lambda r: r["score"])
        epochs = max(MIN_EPOCHS, min(best["epochs"], (best["best_epoch"] or best["epochs"]) + 1))  # past its best
        trial = best["seconds"] / max(1, best.get("epochs_run") or best["epochs"]) * epochs  # measured, not planned
        refit = refit_seconds(self.costs, best["model"], selection, epochs)
        search = SEARCH_SHARE * (self.budget.left() - reserve - trial - refit)  # what it finds is scored, then refit
        if search < MIN_TRIALS * trial:
            self._note(f"No search of {best['strategy']}'s settings: {MIN_TRIALS} trials (about "
                              f"{format_duration(MIN_TRIALS * trial)}) did not fit the time left.")
            return
        self._say(f"auto {len(self.rows) + 1}: searching {best['strategy']} {best['model']} settings for "
                  f"{format_duration(search)}")
        a = self.args
        options, trials = search_settings(
            best["strategy"], best["model"], train, selection, epochs=epochs, seconds=search, seed=a.seed,
            trials=a.trials,
            transfer_options={"cache_dir": a.cache_dir, "batch_size": a.batch_size, "num_workers": a.workers,
                              "device": a.device}, progress=self.progress)
        options.pop("epochs", None)
        stage = Stage(best["model"], best["strategy"], epochs, trial + refit, refit_seconds=refit, options=options)
        self._note(f"{best['strategy']}'s settings were searched in {trials} trials (Optuna TPE, median "
                          f"pruning); the best trial's settings were then scored as the stage `{stage.key}`.")
        self._run_stage(stage, train, selection, time_limit=self.budget.spent() + trial * SLACK)

    def _repeats(self, train: LabelledData, selection: Selection, test_samples: int) -> None:
        """Spend the time the stages left on training the best network stage again with other seeds (up to
        ``REPEATS``), on the same held-out samples: networks that differ only in their random start and data
        order make errors of their own, so their average often beats each. The ensemble step offers the
        average of the stage and all its repeats (see :meth:`_seed_average`). Each repeat must fit beside its
        share of the test pass, its refit when K folds leave no model to serve, and the best stage's own
        planned refit, or, when a blend of stages already beats every stage alone, its members' final models
        (repeats never join that blend, so they must not take the time it needs)."""
        best = self._best_network()
        if best is None:
            return
        model, epochs = best["model"], best["epochs"]
        refit = refit_seconds(self.costs, model, selection, best["best_epoch"] or epochs)
        test_pass = self.costs.forward[model] * test_samples * _views(best)
        final = test_pass + (refit if selection.folds else 0.0)  # what a repeat's final model needs
        keep = self._reserve([model], test_samples) + (refit if best.get("refit_planned") else 0.0)
        blend = max(self._blends(), default=None)
        if blend is not None and blend[0] > self._top_score():
            keep = max(keep, self._members_seconds(blend[2], selection, test_samples))
        for seed in range(self.args.seed + 1, self.args.seed + 1 + REPEATS):
            stage = Stage(model, best["strategy"], epochs, best["seconds"], options=best.get("options") or {},
                          seed=seed)
            if not any(row_key(r) == stage.key for r in self.rows):  # else trained before an interruption
                room = self.budget.left() - keep - final
                if best["seconds"] > room:
                    break
                self._run_stage(stage, train, selection,
                                time_limit=self.budget.spent() + min(best["seconds"] * SLACK, room))
            keep += final

    def _ensemble(self, train: LabelledData, selection: Selection, test_samples: int) -> None:
        """Offer the average of the best few stages of one backbone, or of the best network stage over its
        seeds, as a candidate when it scores higher on the same validation samples (or out of fold) than every
        stage alone, and its members' final models and test pass fit in the time left."""
        if any(r["strategy"] == ENSEMBLE for r in self.rows):
            return  # scored before an interruption
        candidates = [blend for blend in (*self._blends(), self._seed_average()) if blend is not None]
        top = self._top_score()
        best = max(candidates, default=None)
        if best is None or top is None or best[0] <= top:
            return
        score, model, members = best
        rows = [r for r in self.rows if row_key(r) in members]
        needed = self._members_seconds(members, selection, test_samples)
        names = " + ".join(stage_title(r) for r in rows)
        if needed > self.budget.left():
            self._note(f"The ensemble {names} of {model} scored {score:.3f} but its members' final models "
                              f"(about {format_duration(needed)}) did not fit the time left.")
            return
        self.rows.append({"model": model, "strategy": ENSEMBLE, "members": [stage_title(r) for r in rows],
                          "member_keys": [row_key(r) for r in rows], **({"tta": True} if rows[0].get("tta") else {}),
                          "probe": False, "epochs": None, "score": score, "best_epoch": None, "seconds": 0.0,
                          "planned_seconds": round(needed, 1), "status": "done"})
        self._save_state()
        self._say(f"auto {len(self.rows)}: ensemble {names} {model}", f"{score:.3f}")

    def _members_seconds(self, members: list[str], selection: Selection, test_samples: int) -> float:
        """What an ensemble of the stages ``members`` (keys) needs at the end: each member's final model, its
        pass over the test split, and writing the run."""
        rows = [r for r in self.rows if row_key(r) in members]
        return sum(self._final_seconds(r, selection) + self.costs.forward[r["model"]] * test_samples * _views(r)
                   for r in rows) + FINISH_SECONDS

    def _blends(self) -> list[tuple[float, str, list[str]]]:
        """Per backbone, the best blend of its stages (greedy selection; members agree on test-time
        augmentation): (score, backbone, member keys), for the blends of more than one member."""
        rows = [r for r in self._candidates() if row_key(r) in self._scored]
        blends = []
        for model, tta in dict.fromkeys((r["model"], bool(r.get("tta"))) for r in rows):
            group = {row_key(r): self._scored[row_key(r)] for r in rows
                     if (r["model"], bool(r.get("tta"))) == (model, tta)}
            members, score = best_blend(group)
            if len(members) > 1:
                blends.append((score, model, members))
        return blends

    def _seed_average(self) -> tuple[float, str, list[str]] | None:
        """The average of the repeated stage and all its repeats that agree with it on test-time
        augmentation, none chosen over another (picking the luckiest seed on validation picks noise)."""
        base = self._best_network()
        if base is None or row_key(base) not in self._scored:
            return None
        recipe = (base["model"], base["strategy"], base.get("options"), bool(base.get("tta")))
        members = [base, *(r for r in self.rows if r.get("seed") is not None and row_key(r) in self._scored
                           and self._scored[row_key(r)].probabilities is not None
                           and (r["model"], r["strategy"], r.get("options"), bool(r.get("tta"))) == recipe)]
        if len(members) < 2:
            return None
        keys = [row_key(r) for r in members]
        return average_accuracy([self._scored[key] for key in keys]), base["model"], keys

    def _best_network(self) -> dict | None:
        """The best-scoring network stage that may win alone: the one repeats train again."""
        return max((r for r in self._candidates() if r["epochs"]), key=lambda r: r["score"], default=None)

    def _top_score(self) -> float | None:
        """The best score of a stage that may win alone: what an ensemble must beat."""
        return max((r["score"] for r in self._candidates()), default=None)

    def _candidates(self) -> list[dict]:
        """The scored stages that may win alone: a repeat with another seed is the same recipe as its stage,
        so it joins only as one of an average over seeds."""
        return [r for r in self.rows if r["score"] is not None and r.get("seed") is None]

    def _final_seconds(self, row: dict, selection: Selection) -> float:
        """What making ``row``'s final model costs: nothing when the selection's model serves (a probe's
        final head, a single split's network), else its refit on the whole training split."""
        kept = self._scored.get(row_key(row))
        if not row["epochs"] or (kept is not None and kept.fitted is not None):
            return 0.0
        return refit_seconds(self.costs, row["model"], selection, row["best_epoch"] or row["epochs"])

    def _uncached(self, model: str, data: LabelledData) -> int:
        return uncached_count(build_backbone(model), data, self.args.cache_dir)

    def _probed(self) -> list[dict]:
        """The rows of the probes that were scored."""
        return [r for r in self.rows if r["probe"] and r["score"] is not None]

    def _run_stage(self, stage: Stage, train: LabelledData, selection: Selection, time_limit: float | None) -> None:
        if any(row_key(r) == stage.key for r in self.rows):
            return  # scored before an interruption
        label = f"auto {len(self.rows) + 1}: {stage.name}"
        self._say(label)
        callbacks = (lambda: [TimeLimit(lambda: time_limit - self.budget.spent())]) if time_limit else tuple
        scored = score_candidate(self._transfer(stage), train, selection, callbacks,
                                 tta=self._measure_tta(stage, selection), split_seed=self.args.seed)
        tta_gain = scored.take_tta()
        if stage.epochs:
            self.costs.learn_training(stage.model, scored.history, selection.fit_samples, selection.val_samples)
        row = {"model": stage.model, "strategy": stage.strategy, "probe": stage.probe, "epochs": stage.epochs,
               "score": scored.score,
               "best_epoch": scored.best_epoch, "epochs_run": len(scored.history) or None,
               "seconds": round(scored.seconds, 1),
               "planned_seconds": round(stage.seconds, 1), "refit_planned": bool(stage.refit_seconds),
               "status": "done", **({"options": stage.options} if stage.options else {}),
               **({"seed": stage.seed} if stage.seed is not None else {}),
               **({"tta_gain": round(tta_gain, 4), "tta": scored.tta} if tta_gain is not None else {})}
        self.rows.append(row)
        self._scored[row_key(row)] = scored
        self._save_state()
        self._say(label, f"{selection.label.split(' ')[0]} {scored.score:.3f} in {format_duration(scored.seconds)}, "
                         f"{format_duration(self.budget.left())} left")

    def _measure_tta(self, stage: Stage, selection: Selection) -> bool:
        """Whether to predict a stage's held-out images mirrored too (test-time augmentation): images
        only, and only while that pass (two views of each held-out image) costs under ``TTA_SHARE`` of
        the budget."""
        seconds = 2 * self.costs.forward.get(stage.model, 0.0) * selection.scored_samples
        return self.data.modality == "image" and seconds < TTA_SHARE * self.budget.seconds

    def _skip(self, stage: Stage, reason: str) -> None:
        if not any(r["model"] == stage.model and r["strategy"] == stage.strategy for r in self.rows):
            self.rows.append({"model": stage.model, "strategy": stage.strategy, "probe": stage.probe, "epochs": None,
                              "score": None,
                              "best_epoch": None, "seconds": 0.0, "planned_seconds": round(stage.seconds, 1),
                              "status": f"skipped: {reason}"})

    def _transfer(self, stage: Stage, **config: Any) -> Transfer:
        options = {**stage.options, **({"epochs": stage.epochs} if stage.epochs else {}), **config}
        a = self.args
        return Transfer(stage.model, stage.strategy, config=get_strategy(stage.strategy).make_config(options),
                        cache_dir=a.cache_dir, batch_size=a.batch_size, num_workers=a.workers, device=a.device,
                        seed=self._seed(stage), progress=self.progress)

    def _seed(self, stage: Stage) -> int:
        return self.args.seed if stage.seed is None else stage.seed

    def _final(self, winner: dict, train: LabelledData, selection: Selection, test_samples: int) -> Transfer | Ensemble:
        """The winner's final model: one stage's (see :meth:`_final_model`), or an ensemble of its members'."""
        if winner["strategy"] != ENSEMBLE:
            return self._final_model(winner, train, selection, test_samples)
        members = [r for key in winner["member_keys"] for r in self.rows if row_key(r) == key]
        finals = [self._final_model(r, train, selection, test_samples * len(members)) for r in members]
        winner["refit"] = "; ".join(f"{stage_title(r)}: {r['refit']}" for r in members)
        return Ensemble(finals)

    def _final_model(self, winner: dict, train: LabelledData, selection: Selection, test_samples: int) -> Transfer:
        """One stage's final model (:meth:`_trained`), predicting with test-time augmentation where that
        scored higher on the held-out samples."""
        model = self._trained(winner, train, selection, test_samples)
        model.tta = bool(winner.get("tta"))
        return model

    def _trained(self, winner: dict, train: LabelledData, selection: Selection, test_samples: int) -> Transfer:
        """One stage's model trained on every training sample: a probe's final head already is; a network
        trains again for its best epoch count, unless the budget planned no time for it (then the model the
        selection trained serves, as it is)."""
        kept = self._scored.get(row_key(winner))
        kept = kept if kept is not None and kept.fitted is not None else None
        if kept is not None and kept.complete:
            winner["refit"] = "the probe's final head is fitted on the whole training split"
            return kept.fitted
        stage = Stage(winner["model"], winner["strategy"], winner["best_epoch"], 0.0,
                      options=winner.get("options") or {}, seed=winner.get("seed"))
        if not stage.epochs:  # a probe chooses its C on its own validation share, then fits on all
            winner["refit"] = "the probe's final head is fitted on the whole training split"
            return self._transfer(stage).fit(train)
        keep = self.costs.forward[winner["model"]] * test_samples * _views(winner) + FINISH_SECONDS
        needed = refit_seconds(self.costs, stage.model, selection, stage.epochs)
        if kept is not None and (not winner.get("refit_planned") or needed > self.budget.left() - keep):
            winner["refit"] = (f"not trained again on the whole training split: the budget left no time (about "
                               f"{format_duration(needed)} needed); the model of the selection serves")
            return kept.fitted
        self._say(f"refit: {stage.name} on all {len(train)} training samples")
        limit = TimeLimit(lambda: self.budget.left() - keep)
        config = self._transfer(stage, patience=0).config
        fitted = refit_on_all(train, stage.model, stage.strategy, config, seed=self._seed(stage),
                              val_fraction=selection.val_fraction, callbacks=[limit],
                              cache_dir=self.args.cache_dir, batch_size=self.args.batch_size,
                              num_workers=self.args.workers, device=self.args.device, progress=self.progress)
        winner["refit"] = (f"trained again on all {len(train)} training samples for {stage.epochs} epochs"
                           + (f", stopped by the budget after epoch {limit.stopped_at}" if limit.stopped_at else ""))
        return fitted

    # -- state and output ------------------------------------------------------------------------------
    def _say(self, stage: str, note: str = "") -> None:
        if self.progress:
            self.progress(stage, 1 if note else 0, 1, note)

    def _read_state(self) -> dict:
        path = work_dir(self.out_dir) / STATE_FILE
        try:
            return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        except ValueError:
            return {}  # damaged: the stages run again

    def _save_state(self) -> None:
        state = {"spent": self.budget.spent(), "costs": asdict(self.costs), "stages": self.rows,
                 "ranking": self.ranking, "notes": self.notes}
        write_text_atomic(work_dir(self.out_dir) / STATE_FILE, json.dumps(state, indent=1))

    def summary(self, winner: dict) -> dict:
        """What ``auto.json`` holds: the budget and its use, how candidates were scored, every stage, the winner and why."""
        scored = sorted((r for r in self.rows if r["score"] is not None), key=lambda r: -r["score"])
        runner_up = next((r for r in scored if r is not winner), None)
        relation = "kept over" if runner_up and runner_up["score"] > winner["score"] else "ahead of"  # see _choose
        why = (f"{stage_title(winner)} on {winner['model']} scored {winner['score']:.3f}"
               + (f", {relation} {stage_title(runner_up)} on {runner_up['model']} ({runner_up['score']:.3f})"
                  if runner_up else ", the only candidate scored")
               + (", which is within one standard error of it" if relation == "kept over" else "") + ".")
        return {"budget_seconds": self.budget.seconds, "spent_seconds": round(self.budget.spent(), 1),
                "selection": self.selection.label if self.selection else None,
                "stages": [{**row, "title": stage_title(row)} for row in self.rows], "winner": winner,
                "why": why, "costs": asdict(self.costs), "notes": self.notes}

    def _save(self, final: Transfer | Ensemble, winner: dict, metrics: dict, predictions: list[dict],
              train: LabelledData, leakage: dict) -> None:
        document = self.summary(winner)
        metrics_doc = {"test": metrics, "data": self.data.summary(), "split_leakage": leakage,
                       "auto": {k: document[k] for k in ("budget_seconds", "spent_seconds", "why")}}
        audited = {"audit": self.audit_result.to_dict(), "dropped": self.dropped} if self.audit_result else {}
        final.save(self.out_dir, metrics=metrics_doc,
                   extra={"predictions": predictions, "auto": document, TRAINED_ON: trained_on_digests([train]),
                          **audited}, finish=with_report(self.out_dir))


def _views(row: dict) -> int:
    """Passes a stage's model makes over each sample it predicts: two with test-time augmentation."""
    return 2 if row.get("tta") else 1


def stage_title(row: dict) -> str:
    """A stage's strategy as people read it: an ensemble names its members."""
    if row.get("members"):
        return f"{ENSEMBLE} of {' + '.join(row['members'])}"
    return (row["strategy"] + (", searched" if row.get("options") else "")
            + (f", seed {row['seed']}" if row.get("seed") is not None else "") + (", tta" if row.get("tta") else ""))
