"""Fine-tuning on small labelled sets: ring accuracy, few-shot learning curve, GZ1 balanced accuracy.

    python benchmarks/finetune.py [--work DIR] [--auto-budget S] [--draws N] [--encoder SPEC]
                                  [--seeds N] [--data rings gz1] [--tta]

Data: ../shared/data (rings: GZ DECaLS ring / not ring; GZ1: five classes, spirals merged), embedded
with the default encoder (or ``--encoder``). Heads train on the *train* split of benchmarks/splits.py
and are measured on its *test* split (the default encoder was trained on the train splits only). Each
row gives the head, the test metrics (mean ± std over ``--seeds`` seeds of the head's initialisation,
validation split and batches: the rings test split has 92 galaxies, so one seed's accuracy moves by
several hundredths) and the mean wall time of a run. ``--tta`` embeds with ``galsearch embed --tta``
(each embedding the mean over 8 rotations and flips), which the frozen heads train and predict on.
"""

from __future__ import annotations

import argparse
import platform
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from splits import shared_file, split

from galsearch.embedder import DEFAULT_ENCODER, embed, ingest, open_collection
from galsearch.embedder.encoders import default_device
from galsearch.embedder.training.finetune import FinetuneConfig, finetune, learning_curve, summarize_curve
from galsearch.embedder.training.labels import read_labels

RUNS = {
    "linear, frozen": FinetuneConfig(),
    "MLP, frozen": FinetuneConfig(head="mlp"),
    "linear, last 2 groups unfrozen": FinetuneConfig(unfreeze=2),
    "linear, last 4 groups unfrozen": FinetuneConfig(unfreeze=4),
    "same, BatchNorm statistics of the batches": FinetuneConfig(unfreeze=4, freeze_bn=False),
}
CURVE = (10, 30, 100)
DATA = {"rings": "classify", "gz1": "classify"}  # data set: task


def collection(work: Path, name: str, encoder: str, tta: bool):
    """The whole development file as one embedded collection, plus train and test label tables."""
    path = work / f"{name}_all"
    if not (path / "manifest.json").exists():
        ingest(shared_file(name), path, progress=False)
    embed(path, encoder, replace=True, tta=tta, progress=False)
    coll = open_collection(path)
    train, test = split(name, work)
    tables = []
    for part in (train, test):
        data = np.load(part)
        tables.append(
            pd.DataFrame({"id": data["ids"].astype(str), "label": data["class_names"][data["labels"]]})
        )
    return coll, tables[0], tables[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("work"))
    parser.add_argument("--auto-budget", type=float, default=120, help="seconds for --auto (default 120)")
    parser.add_argument("--draws", type=int, default=5, help="draws per learning-curve point (default 5)")
    parser.add_argument("--encoder", default=DEFAULT_ENCODER, help="encoder spec (default: the shipped one)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per head: mean ± std (default 1)")
    parser.add_argument("--data", nargs="+", choices=list(DATA), default=list(DATA))
    parser.add_argument("--tta", action="store_true", help="embed with the 8 rotations and flips")
    args = parser.parse_args()
    device = default_device()
    machine = platform.processor() or platform.machine()
    tta = ", TTA" if args.tta else ""
    print(f"machine: {machine}; device: {device}; encoder: {args.encoder}{tta}; seeds 0-{args.seeds - 1}\n")
    print("| data | task | head | accuracy | balanced accuracy | ROC AUC | seconds |")
    print("|---|---|---|---|---|---|---|")
    best = {}
    for name in args.data:
        task = DATA[name]
        coll, train_table, test_table = collection(args.work, name, args.encoder, args.tta)
        train = read_labels(train_table, coll, task)
        test = read_labels(test_table, coll, task)
        runs = dict(RUNS)
        runs[f"--auto ({args.auto_budget:g} s)"] = None
        for label, config in runs.items():
            results = [
                finetune(
                    coll,
                    train,
                    replace(config or FinetuneConfig(), seed=seed),
                    test_labels=test,
                    auto_budget_s=args.auto_budget if config is None else None,
                )
                for seed in range(args.seeds)
            ]
            if config is None:
                chosen = {
                    (r.head.training["config"]["head"], r.head.training["config"]["unfreeze"])
                    for r in results
                }
                label += ": " + ", ".join(f"{head}, unfreeze {n}" for head, n in sorted(chosen))
            metrics = pd.DataFrame([r.metrics for r in results])
            cells = [
                _mean_std(metrics.get(m, pd.Series([np.nan])))
                for m in ("accuracy", "balanced_accuracy", "roc_auc")
            ]
            seconds = np.mean([r.seconds for r in results])
            print(f"| {name} | {task} | {label} | " + " | ".join(cells) + f" | {seconds:.1f} |", flush=True)
            balanced = metrics["balanced_accuracy"].mean()
            if name not in best or balanced > best[name][1]:
                trained = results[0].head.training["config"]
                best[name] = (FinetuneConfig(**{**trained, "seed": 0, "device": device}), balanced, label)
    if "rings" not in best:
        return
    coll, train_table, test_table = collection(args.work, "rings", args.encoder, args.tta)
    config, _, label = best["rings"]
    curve = learning_curve(
        coll,
        read_labels(train_table, coll),
        list(CURVE),
        config,
        draws=args.draws,
        test_labels=read_labels(test_table, coll),
    )
    print(f"\nrings learning curve ({label}; {args.draws} draws; test split of {len(test_table)}):\n")
    print("| labels per class | accuracy | balanced accuracy |\n|---|---|---|")
    accuracy = curve.groupby("labels_per_class")["accuracy"]
    for _, row in summarize_curve(curve, "classify").iterrows():
        n = row["labels_per_class"]
        print(
            f"| {int(n)} | {accuracy.mean()[n]:.3f} ± {accuracy.std(ddof=0)[n]:.3f} | "
            f"{row['balanced_accuracy_mean']:.3f} ± {row['balanced_accuracy_std']:.3f} |"
        )


def _mean_std(values: pd.Series) -> str:
    """``mean`` of one value, ``mean ± std`` of several (a table cell)."""
    return f"{values.mean():.3f}" if len(values) == 1 else f"{values.mean():.3f} ± {values.std(ddof=0):.3f}"


if __name__ == "__main__":
    main()
