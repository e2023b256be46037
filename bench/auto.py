"""`headstart auto` within a budget against (a) the default `fit` (a linear probe of the modality's default
backbone) and (b) compare's default strategies run one after another for the same wall time (the best
that finished inside it), all on the same stratified test split.

Data sets: flowers5 (80/20), flowers5-20 (20 training images per class, 40 per class to test: a
60-per-class slice with --test 2/3), amazon (sentiment/amazon.txt), sms (sms_spam). Budgets in minutes.

    .venv/bin/python bench/auto.py --datasets flowers5-20,amazon,sms --budgets 5
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, machine, parser  # noqa: E402

SEED = 0
STRATEGIES = {"image": ["linear-probe", "finetune", "lp-ft"], "text": ["linear-probe", "lp-ft", "lora", "finetune"]}


def dataset(name: str, root: Path, scratch: Path) -> tuple[Path, float]:
    """The path auto reads, and the test share giving the split described above."""
    if name == "flowers5":
        return root / "flowers5", 0.2
    if name == "flowers5-20":
        import numpy as np

        folder = scratch / "flowers5-60"
        rng = np.random.default_rng(SEED)
        for cls in sorted(p for p in (root / "flowers5").iterdir() if p.is_dir()):
            (folder / cls.name).mkdir(parents=True, exist_ok=True)
            files = sorted(cls.iterdir())
            for chosen in rng.choice(len(files), 60, replace=False):
                shutil.copy2(files[chosen], folder / cls.name / files[chosen].name)
        return folder, 2 / 3
    if name == "amazon":
        return root / "sentiment" / "amazon.txt", 0.2
    if name == "sms":
        return root / "sms_spam" / "SMSSpamCollection.tsv", 0.2
    raise SystemExit(f"unknown data set {name!r}: flowers5, flowers5-20, amazon, sms")


def default_fit(path: Path, test: float, out: Path) -> tuple[float, float]:
    from headstart.workflows import fit_run

    started = time.perf_counter()
    result = fit_run(path, out, test=test, seed=SEED)
    return result.metrics["accuracy"], time.perf_counter() - started


def compare_for(path: Path, test: float, seconds: float) -> tuple[float, str, float]:
    """compare's default strategies, one after another, until the budget is spent: the best finished inside it."""
    import headstart as hs
    from headstart.training import TimeLimit
    from headstart.data.opening import open_data

    data = open_data(path)
    train, test_part = data.split(test=test, seed=SEED)
    started, best = time.perf_counter(), (0.0, "none", 0.0)
    for strategy in STRATEGIES[data.modality]:  # a network stops before an epoch that would end past the budget
        limit = TimeLimit(lambda: seconds - (time.perf_counter() - started))
        model = hs.Transfer(strategy=strategy, seed=SEED).fit(train, callbacks=[limit])
        spent = time.perf_counter() - started
        if spent > seconds:
            break
        accuracy = model.evaluate(test_part)["accuracy"]
        best = max(best, (accuracy, strategy, spent))
    return best


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--datasets", default="flowers5-20,amazon,sms")
    p.add_argument("--budgets", default="5", help="comma-separated minutes")
    p.add_argument("--no-baselines", action="store_true", help="auto alone")
    args = p.parse_args()
    import torch

    import headstart as hs

    torch.set_num_threads(args.threads)
    rows, results = [], []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for name in args.datasets.split(","):
            path, test = dataset(name, args.data, scratch)
            baseline = None if args.no_baselines else default_fit(path, test, scratch / f"{name}-fit")
            for minutes in (float(b) for b in args.budgets.split(",")):
                started = time.perf_counter()
                result = hs.auto(path, scratch / f"{name}-{minutes}", budget=minutes, test=test, seed=SEED)
                wall = time.perf_counter() - started
                compared = None if args.no_baselines else compare_for(path, test, minutes * 60)
                winner = result.winner
                row = {"data": name, "budget_min": minutes, "auto": result.metrics["accuracy"],
                       "winner": f"{winner['strategy']} {winner['model']}", "spent_s": round(result.spent, 1),
                       "wall_s": round(wall, 1), "over_budget": round(wall / (minutes * 60), 3),
                       "default_fit": baseline[0] if baseline else None,
                       "compare_best": compared[0] if compared else None,
                       "compare_strategy": compared[1] if compared else None}
                results.append({**row, "stages": result.stages})
                for stage in result.stages:
                    print(f"  {name} {minutes:g} min: {stage['strategy']} {stage['model']} epochs {stage['epochs']} "
                          f"score {stage['score']} in {stage['seconds']} s (planned {stage['planned_seconds']} s): "
                          f"{stage['status']}"
                          + (f", tta gain {stage['tta_gain']:+.3f}" if "tta_gain" in stage else ""), flush=True)
                print(f"  {name} {minutes:g} min: auto {row['auto']:.4f} ({row['winner']}), default fit "
                      f"{row['default_fit']}, compare's best {row['compare_best']} ({row['compare_strategy']}), "
                      f"wall/budget {row['over_budget']}", flush=True)
                rows.append([name, minutes, row["auto"], row["winner"], row["spent_s"], row["over_budget"],
                             row["default_fit"] if baseline else "—", f"{compared[0]:.3f} {compared[1]}" if compared
                             else "—"])
    emit(args.json, {"rows": results, "machine": machine(args.threads)},
         "auto against the default fit and compare's best default strategy in the same time (test accuracy)",
         ["data", "budget min", "auto", "winner", "spent s", "wall/budget", "default fit", "compare best"], rows,
         [f"machine: {machine(args.threads)}"])


if __name__ == "__main__":
    main()
