"""Deterministic train/test splits of the real galaxies in ../shared/data (never committed here).

    python benchmarks/splits.py OUT_DIR   # writes {gz1,gz2,rings}_{train,test}.npz

The default encoder is trained on the train parts only; benchmarks evaluate on the test parts. The two
spiral classes of GZ1 differ only by handedness, which a rotation- and flip-invariant encoder cannot (and
should not) see, so they are merged into one ``spiral`` class. GZ2's unlabelled galaxies (label -1) are
split like a class of their own.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DATASETS = {"gz1": "gz1_sdss_dev.npz", "gz2": "gz2_kaggle_dev.npz", "rings": "gz_decals_rings_dev.npz"}
TEST_FRACTION = 0.3
SEED = 0


def mean_range(values: list[int]) -> str:
    """Counts over seeds as a table cell: "mean (min-max)", or the one value."""
    if len(values) == 1:
        return str(values[0])
    return f"{np.mean(values):.1f} ({min(values)}-{max(values)})"


def shared_file(name: str) -> Path:
    """Path of a shared data file; exits with a clear message when the folder is absent."""
    path = SHARED_DATA / DATASETS[name]
    if not path.is_file():
        sys.exit(f"{path} not found: the real-galaxy data lives in ../shared/data beside the repository")
    return path


def merge_spirals(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """GZ1 labels with the two spiral classes merged into 'spiral' (the class ids after it shift down)."""
    names = list(data["class_names"])
    if "spiral_anticlockwise" not in names:
        return data
    old = names.index("spiral_anticlockwise")
    labels = data["labels"].copy()
    labels[labels == old] = names.index("spiral_clockwise")
    labels[labels > old] -= 1
    merged = [n for n in names if n != "spiral_anticlockwise"]
    merged[merged.index("spiral_clockwise")] = "spiral"
    return {**data, "labels": labels, "class_names": np.array(merged)}


def split(name: str, out_dir: Path) -> tuple[Path, Path]:
    """Write stratified train/test .npz files (the source's layout) for dataset ``name``; return them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = merge_spirals(dict(np.load(shared_file(name))))
    n = len(data["images"])
    train, test = train_test_split(
        np.arange(n), test_size=TEST_FRACTION, random_state=SEED, stratify=data["labels"]
    )
    paths = []
    for part, rows in (("train", np.sort(train)), ("test", np.sort(test))):
        arrays = {k: v[rows] if v.ndim and len(v) == n else v for k, v in data.items()}
        path = out_dir / f"{name}_{part}.npz"
        np.savez(path, **arrays)
        paths.append(path)
    return paths[0], paths[1]


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "work")
    for dataset in DATASETS:
        print(*split(dataset, target))
