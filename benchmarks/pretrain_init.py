"""Short training runs from ImageNet weights (``pretrain --init``) and their alternatives, on real galaxies.

    python benchmarks/pretrain_init.py [--work DIR] [--epochs 5] [--ema 0.98 0.99] [--runs NAME ...]

Each run trains on the GZ1 *train* split of benchmarks/splits.py (3031 galaxies, 64 px, ``--method both``,
seed 0 unless the run says otherwise) and is measured on the *test* split as in encoder_quality.py: kNN
precision@10 (overall and class-balanced) and a logistic-regression probe on 100 train labels per class
(balanced accuracy, mean ± std of 5 draws). The frozen rows measure encoders as they are. ``--ema``
also measures, for every run, exponential moving averages of the backbone's weights taken after each
step.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from encoder_quality import embed_batches, knn_precision, load_parts, machine, probe
from sklearn.metrics import balanced_accuracy_score

from galsearch.embedder import Encoder, ingest, load_encoder
from galsearch.embedder.training.pretrain import _Trainer, pretrain

IMAGENET = {"init": "imagenet:efficientnet_lite0"}
DECAY = IMAGENET | {"layer_decay": 0.75}
RUNS = {  # name: (description, pretrain arguments)
    "imagenet": ("--init imagenet:efficientnet_lite0 (its defaults)", IMAGENET),
    "seed-1": ("same, --seed 1", IMAGENET | {"seed": 1}),
    "decay-0.9": ("same, --layer-decay 0.9", IMAGENET | {"layer_decay": 0.9}),
    "decay-0.75": ("same, --layer-decay 0.75", DECAY),
    "decay-0.75-seed-1": ("same, --layer-decay 0.75 --seed 1", DECAY | {"seed": 1}),
    "decay-0.75-lr": ("same, --layer-decay 0.75 --lr 2e-3", DECAY | {"lr": 2e-3}),
    "decay-0.75-bn": ("same, --layer-decay 0.75 --no-freeze-bn", DECAY | {"freeze_bn": False}),
    "random-lite0": ("random tf_efficientnet_lite0, --lr 2e-3", {"architecture": "tf_efficientnet_lite0"}),
    "random-atto": ("random convnext_atto, --lr 2e-3 (the default's recipe)", {}),
    "random-resnet18": ("random resnet18, --lr 2e-3 (a BatchNorm control)", {"architecture": "resnet18"}),
    "random-resnet18-labels": (
        "random resnet18, --lr 2e-3 --method supervised",
        {"architecture": "resnet18", "method": "supervised"},
    ),
}
FROZEN = ("default", "imagenet:efficientnet_lite0")
INPUT_SIZE = 64


def quality(encoder: Encoder, parts: dict) -> dict[str, str]:
    """GZ1 test kNN precision@10 (overall, balanced) and the 100-labels-per-class probe, as table cells."""
    encoder.input_size = INPUT_SIZE
    test = embed_batches(encoder, "gz1", parts["gz1_test"].images, False)
    train = embed_batches(encoder, "gz1", parts["gz1_train"].images, False)
    overall, balanced = knn_precision(test, parts["gz1_test"].labels)
    mean, std = probe(
        (train, parts["gz1_train"].labels), (test, parts["gz1_test"].labels), 100, balanced_accuracy_score
    )
    return {"P@10": f"{overall:.3f}", "P@10 bal.": f"{balanced:.3f}", "GZ1 100/cl": f"{mean:.2f} ± {std:.2f}"}


class Averages:
    """Exponential moving averages of the backbone's weights, updated after every training step."""

    def __init__(self, decays: list[float]):
        self.decays = decays
        self.states: dict[float, dict[str, torch.Tensor]] = {}

    def update(self, backbone: torch.nn.Module) -> None:
        state = backbone.state_dict()
        for decay in self.decays:
            if decay not in self.states:
                self.states[decay] = {k: v.detach().clone() for k, v in state.items()}
                continue
            for name, value in state.items():
                average = self.states[decay][name]
                if value.dtype.is_floating_point:
                    average.mul_(decay).add_(value.detach(), alpha=1 - decay)
                else:
                    average.copy_(value)


def instrument(averages: Averages) -> None:
    """Make every training step update ``averages``."""
    step = _Trainer.step

    def stepping(self, indices):
        losses = step(self, indices)
        averages.update(self.model.backbone)
        return losses

    _Trainer.step = stepping


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("work"))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--ema", type=float, nargs="*", default=[], metavar="DECAY")
    parser.add_argument("--runs", nargs="*", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("--frozen", nargs="*", default=list(FROZEN), metavar="SPEC")
    args = parser.parse_args()
    parts = load_parts(args.work)
    collection = args.work / "gz1_train"
    if not (collection / "manifest.json").exists():
        ingest(args.work / "gz1_train.npz", collection, progress=False)
    rows = {
        f"{spec} (frozen, {INPUT_SIZE} px)": quality(load_encoder(spec, "cpu"), parts) for spec in args.frozen
    }
    averages = Averages(args.ema)
    instrument(averages)
    for name in args.runs:
        description, options = RUNS[name]
        averages.states.clear()
        out = args.work / "pretrain_init" / f"{name}.safetensors"
        out.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        report = pretrain(
            [collection], out, **options, epochs=args.epochs, device="cpu", restart=True, progress=False
        )
        minutes = f"{(time.perf_counter() - started) / 60:.1f}"
        encoder = report.encoder
        rows[description] = quality(encoder, parts) | {"loss": f"{report.last_loss:.2f}", "minutes": minutes}
        for decay, state in averages.states.items():
            encoder.model.load_state_dict(state)
            rows[f"{description}, EMA {decay}"] = quality(encoder, parts)
    columns = ["P@10", "P@10 bal.", "GZ1 100/cl", "loss", "minutes"]
    print(machine("cpu"))
    print(f"{args.epochs} epochs on GZ1 train ({len(parts['gz1_train'].labels)} galaxies), {INPUT_SIZE} px\n")
    print("| run | " + " | ".join(columns) + " |")
    print("| --- " * (len(columns) + 1) + "|")
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(row.get(c, "") for c in columns) + " |")


if __name__ == "__main__":
    main()
