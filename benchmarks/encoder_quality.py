"""How well encoders sort real galaxies: kNN precision, linear probes and rotation stability on test splits.

    python benchmarks/encoder_quality.py [--encoders SPEC ...] [--work DIR] [--device cpu]

Prints one markdown table, a row per encoder, measured on the test splits of ``benchmarks/splits.py``
(the default encoder is trained on the train splits only):

* GZ1 kNN precision@10: the fraction of each test galaxy's 10 nearest test galaxies (cosine) of its own
  class (spirals merged), averaged over galaxies (overall) and per class then over classes (balanced),
  also with TTA (``galsearch embed --tta``: each embedding the mean over 8 rotations and flips);
  the same for GZ2's weak odd_spiral/other label, among its labelled test galaxies;
* linear probes: logistic regression on standardised features, trained on 10, 30 and 100 labelled
  galaxies per class drawn from the train split, scored on the test split (rings: accuracy; GZ1 and GZ2:
  balanced accuracy); mean ± std over 5 draws;
* rotation stability: overlap of the top-10 neighbours of a GZ1 test galaxy and of its 90°-rotated copy,
  both searched among the unrotated test galaxies, without and with TTA (8 rotations and flips).

Encoders (default: the shipped encoder, ImageNet EfficientNet-Lite0 frozen, the same network from random
weights, and pixel-PCA) are any ``load_encoder`` spec or ``pixel-pca``: a baseline of 32x32 downsampled
pixels, standardised per image, projected on the 64 principal components of the dataset's train split.
Every network sees the images at ``--input-size`` px (default: the default encoder's, what it was trained
at). The targets under the table are checked against
the ``default`` row (the first row when ``default`` is absent).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from functools import partial
from pathlib import Path

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from splits import DATASETS, split

from galsearch.embedder import Encoder, EncoderError, load_encoder
from galsearch.embedder.encoders import DEFAULT_SPEC, default_device

DEFAULT_SPECS = ("default", "imagenet:efficientnet_lite0", "random:tf_efficientnet_lite0", "pixel-pca")
K = 10
PROBE_SIZES = (10, 30, 100)
DRAWS = 5
BATCH = 256
PCA_SIDE, PCA_DIM = 32, 64
# (part, tta): every feature set the measures use, embedded once per encoder.
FEATURE_SETS = (
    ("gz1_train", False),
    ("gz1_test", False),
    ("gz1_test", True),
    ("gz1_test_rot", False),
    ("gz1_test_rot", True),
    ("gz2_train", False),
    ("gz2_test", False),
    ("rings_train", False),
    ("rings_test", False),
)
TARGETS = (  # (description, column, threshold)
    ("GZ1 kNN P@10, overall", "GZ1 P@10", 0.80),
    ("GZ1 kNN P@10, class-balanced", "GZ1 P@10 bal.", 0.50),
    ("rings probe, 100 labels/class", "rings 100/cl", 0.80),
    ("rotation overlap, TTA", "rot. TTA", 0.9),
)
LEGEND = (
    "P@10: kNN precision@10 (bal.: class-balanced; TTA: the same on TTA embeddings); "
    "rings N/cl: rings probe accuracy and GZ1/GZ2 N/cl: "
    "probe balanced accuracy, N labels per class; rot.: top-10 neighbour overlap under a 90° rotation"
)

Embed = Callable[[str, np.ndarray, bool], np.ndarray]  # (dataset, uint8 images, tta) -> (N, D) features


@dataclass
class Part:
    """Images, integer labels and class names of one split of one dataset."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]


def load_parts(work: Path) -> dict[str, Part]:
    """Each dataset's train and test parts by name (``gz1_test``...), plus ``gz1_test_rot`` rotated 90°."""
    parts = {}
    for dataset in DATASETS:
        for path in split(dataset, work):
            with np.load(path) as data:
                names = [str(n) for n in data["class_names"]]
                parts[path.stem] = Part(data["images"], data["labels"], names)
    test = parts["gz1_test"]
    rotated = np.ascontiguousarray(np.rot90(test.images, 1, axes=(1, 2)))
    parts["gz1_test_rot"] = Part(rotated, test.labels, test.class_names)
    return parts


def embed_batches(encoder: Encoder, dataset: str, images: np.ndarray, tta: bool) -> np.ndarray:
    """Embeddings of ``images`` by a network encoder (any ``dataset``), in batches of ~``BATCH`` passes."""
    step = BATCH // 8 if tta else BATCH
    return np.concatenate([encoder.embed(images[i : i + step], tta=tta) for i in range(0, len(images), step)])


def pixels(images: np.ndarray) -> np.ndarray:
    """uint8 images area-downsampled to ``PCA_SIDE`` px, flattened, each standardised to mean 0, std 1."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(PCA_SIDE, PCA_SIDE), mode="area").flatten(1).numpy()
    return (x - x.mean(axis=1, keepdims=True)) / (x.std(axis=1, keepdims=True) + 1e-6)


def dihedral(images: np.ndarray) -> list[np.ndarray]:
    """The 8 rotations and flips of (B, H, W, C) images."""
    return [np.rot90(v, k, axes=(1, 2)) for v in (images, images[:, :, ::-1]) for k in range(4)]


class PixelPCA:
    """Baseline encoder: ``pixels`` projected by a PCA fitted on the train split of each dataset."""

    def __init__(self, parts: dict[str, Part]):
        self.parts = parts
        self.pcas: dict[str, PCA] = {}

    def __call__(self, dataset: str, images: np.ndarray, tta: bool) -> np.ndarray:
        """PCA features of ``images``; with ``tta`` the mean over their 8 rotations and flips."""
        if dataset not in self.pcas:
            train = pixels(self.parts[f"{dataset}_train"].images)
            self.pcas[dataset] = PCA(PCA_DIM, random_state=0).fit(train)
        pca = self.pcas[dataset]
        return np.mean([pca.transform(pixels(v)) for v in (dihedral(images) if tta else [images])], axis=0)


def make_embedder(spec: str, device: str, parts: dict[str, Part], input_size: int) -> Embed:
    """The embedding function named by ``spec`` (``pixel-pca`` or a ``load_encoder`` spec)."""
    if spec == "pixel-pca":
        return PixelPCA(parts)
    encoder = load_encoder(spec, device)
    encoder.input_size = input_size
    return partial(embed_batches, encoder)


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as contiguous float32 (inner product = cosine similarity)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def neighbours(db: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    """Indices of the ``k`` rows of ``db`` most cosine-similar to each query; query i never gets row i."""
    _, found = faiss.knn(unit(queries), unit(db), k + 1, metric=faiss.METRIC_INNER_PRODUCT)
    others = found != np.arange(len(queries))[:, None]
    others[others.all(axis=1), k] = False  # row i not among the k + 1 found: drop the farthest instead
    return found[others].reshape(len(queries), k)


def knn_precision(features: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """kNN precision@K among the same galaxies: mean over galaxies, and mean over classes."""
    same = (labels[neighbours(features, features)] == labels[:, None]).mean(axis=1)
    return float(same.mean()), float(np.mean([same[labels == c].mean() for c in np.unique(labels)]))


def rotation_overlap(plain: np.ndarray, rotated: np.ndarray) -> float:
    """Mean fraction of the top-K neighbours shared by each galaxy and its rotated copy."""
    a, b = neighbours(plain, plain), neighbours(plain, rotated)
    return float(np.mean([len(np.intersect1d(x, y)) / K for x, y in zip(a, b, strict=True)]))


def probe(
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    per_class: int,
    score: Callable[[np.ndarray, np.ndarray], float],
) -> tuple[float, float]:
    """Mean and std over ``DRAWS`` draws of the test score of logistic regression on ``per_class`` labels."""
    (x, y), scores = train, []
    for draw in range(DRAWS):
        rng = np.random.default_rng(draw)
        rows = np.concatenate(
            [
                rng.choice(pool, min(per_class, len(pool)), replace=False)
                for pool in (np.flatnonzero(y == c) for c in np.unique(y))
            ]
        )
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        model.fit(x[rows], y[rows])
        scores.append(score(test[1], model.predict(test[0])))
    return float(np.mean(scores)), float(np.std(scores))


def evaluate(embed: Embed, parts: dict[str, Part]) -> dict[str, float | tuple[float, float]]:
    """Every measure of one encoder, by table column."""
    f = {(name, tta): embed(name.split("_")[0], parts[name].images, tta) for name, tta in FEATURE_SETS}

    def labelled(name: str) -> tuple[np.ndarray, np.ndarray]:
        known = parts[name].labels >= 0  # GZ2 has unlabelled galaxies (-1)
        return f[name, False][known], parts[name].labels[known]

    row: dict[str, float | tuple[float, float]] = {}
    row["GZ1 P@10"], row["GZ1 P@10 bal."] = knn_precision(*labelled("gz1_test"))
    row["GZ1 TTA"], row["GZ1 TTA bal."] = knn_precision(f["gz1_test", True], parts["gz1_test"].labels)
    for n in PROBE_SIZES:
        row[f"rings {n}/cl"] = probe(labelled("rings_train"), labelled("rings_test"), n, accuracy_score)
    for n in PROBE_SIZES:
        row[f"GZ1 {n}/cl"] = probe(labelled("gz1_train"), labelled("gz1_test"), n, balanced_accuracy_score)
    row["GZ2 P@10"], row["GZ2 P@10 bal."] = knn_precision(*labelled("gz2_test"))
    row["GZ2 100/cl"] = probe(labelled("gz2_train"), labelled("gz2_test"), 100, balanced_accuracy_score)
    row["rot."] = rotation_overlap(f["gz1_test", False], f["gz1_test_rot", False])
    row["rot. TTA"] = rotation_overlap(f["gz1_test", True], f["gz1_test_rot", True])
    return row


def cell(value: float | tuple[float, float]) -> str:
    """A table cell: 3 decimals, or mean ± std with 2."""
    return f"{value[0]:.2f} ± {value[1]:.2f}" if isinstance(value, tuple) else f"{value:.3f}"


def table(rows: dict[str, dict[str, float | tuple[float, float]]], seconds: dict[str, float]) -> str:
    """The markdown table: one row per encoder, one column per measure, then the time taken."""
    header = ["encoder", *next(iter(rows.values())), "time (s)"]
    body = [[spec, *map(cell, row.values()), f"{seconds[spec]:.0f}"] for spec, row in rows.items()]
    widths = [max(map(len, column)) for column in zip(header, *body, strict=True)]
    rule = ["-" * w for w in widths]
    padded = ([c.ljust(w) for c, w in zip(r, widths, strict=True)] for r in (header, rule, *body))
    return "\n".join("| " + " | ".join(r) + " |" for r in padded)


def targets(rows: dict[str, dict[str, float | tuple[float, float]]]) -> str:
    """The targets, each with ✓ or ✗ for the ``default`` row (or the first row)."""
    spec = "default" if "default" in rows else next(iter(rows))
    lines = [f"Targets, for `{spec}`" + ("" if spec == "default" else " (no `default` row)") + ":"]
    for description, column, threshold in TARGETS:
        value = rows[spec][column]
        mean = value[0] if isinstance(value, tuple) else value
        lines.append(f"- {description} ≥ {threshold}: {cell(value)} {'✓' if mean >= threshold else '✗'}")
    return "\n".join(lines)


def short_classes(part: Part) -> str:
    """A footnote naming the classes with fewer train examples than the largest probe asks for."""
    counts = np.bincount(part.labels, minlength=len(part.class_names))
    few = [f"{name} {n}" for name, n in zip(part.class_names, counts, strict=True) if n < max(PROBE_SIZES)]
    return f"GZ1 classes with fewer train examples than asked for use all they have: {', '.join(few)}."


def machine(device: str) -> str:
    """Device, CPU model and thread count, GPU, torch version and today's date, on one line."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")]
    cpu = models[0] if models else platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (
        f"device {device}; CPU {cpu} ({torch.get_num_threads()} threads); {gpu}; "
        f"torch {torch.__version__}; {date.today().isoformat()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--encoders", nargs="+", default=list(DEFAULT_SPECS), metavar="SPEC")
    parser.add_argument("--work", type=Path, help="folder for the split files (default: a temporary one)")
    parser.add_argument("--device", default=default_device())
    parser.add_argument("--input-size", type=int, help="px every network sees (default: the default's)")
    args = parser.parse_args()
    input_size = args.input_size or load_encoder(DEFAULT_SPEC, "cpu").input_size
    rows, seconds, notes = {}, {}, []
    with tempfile.TemporaryDirectory() as tmp:
        parts = load_parts(args.work or Path(tmp))
        for spec in args.encoders:
            start = time.perf_counter()
            try:
                embed = make_embedder(spec, args.device, parts, input_size)
            except EncoderError as exc:
                notes.append(f"`{spec}` skipped: {exc}")
                print(notes[-1], file=sys.stderr)
                continue
            rows[spec] = evaluate(embed, parts)
            seconds[spec] = time.perf_counter() - start
            print(f"{spec}: {seconds[spec]:.0f} s", file=sys.stderr)
    sizes = ", ".join(
        f"{name} {np.sum(part.labels >= 0)}" for name, part in parts.items() if name.endswith("_test")
    )
    print(machine(args.device))
    print(
        f"test galaxies: {sizes}; networks see {input_size} px; "
        f"probes: {DRAWS} draws of N labels/class from the train splits\n"
    )
    if rows:
        print(LEGEND + "\n")
        print(table(rows, seconds) + "\n")
        print(targets(rows) + "\n")
    notes.append(short_classes(parts["gz1_train"]))
    print("Notes:\n" + "\n".join(f"- {note}" for note in notes))


if __name__ == "__main__":
    main()
