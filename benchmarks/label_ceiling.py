"""How far the GZ1 labels carry an encoder: kNN precision of embeddings fitted to the labels themselves.

    python benchmarks/label_ceiling.py [--encoders SPEC ...] [--work DIR] [--device cpu]

For each encoder (``encoder_quality.py`` specs, default ``default pixel-pca``), a logistic regression
is fitted on the features of all the GZ1 train galaxies and their labels (its regularisation chosen by
5-fold cross-validated log loss, for calibrated probabilities). Its class probabilities p on the test
split are then used as an embedding: the cosine similarity of √p vectors is the Bhattacharyya overlap
of two galaxies' predicted classes, so this is about the best that training on these labels can make
of those features for kNN search. The table gives the probe's test accuracy, the kNN precision@10 of
the features themselves and of √p.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from encoder_quality import knn_precision, load_parts, machine, make_embedder
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from galsearch.embedder.encoders import default_device


def ceiling(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> list[float]:
    """Test accuracy, balanced accuracy, and P@10 (overall, balanced) of features and of √p."""
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    grid = {"logisticregression__C": np.logspace(-3, 2, 6)}
    model = GridSearchCV(pipeline, grid, scoring="neg_log_loss", cv=5).fit(*train)
    (x, y), p = test, model.predict_proba(test[0])
    predicted = model.classes_[p.argmax(axis=1)]
    return [
        accuracy_score(y, predicted),
        balanced_accuracy_score(y, predicted),
        *knn_precision(x, y),
        *knn_precision(np.sqrt(p), y),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--encoders", nargs="+", default=["default", "pixel-pca"], metavar="SPEC")
    parser.add_argument("--work", type=Path, help="folder for the split files (default: a temporary one)")
    parser.add_argument("--device", default=default_device())
    args = parser.parse_args()
    header = ["encoder", "probe acc.", "probe bal. acc.", "P@10", "P@10 bal.", "√p P@10", "√p P@10 bal."]
    print(machine(args.device) + "\n")
    print("| " + " | ".join(header) + " |\n|" + " --- |" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        parts = load_parts(args.work or Path(tmp))
        for spec in args.encoders:
            embed = make_embedder(spec, args.device, parts)
            train, test = parts["gz1_train"], parts["gz1_test"]
            row = ceiling(
                (embed("gz1", train.images, False), train.labels),
                (embed("gz1", test.images, False), test.labels),
            )
            print(f"| {spec} | " + " | ".join(f"{v:.3f}" for v in row) + " |")


if __name__ == "__main__":
    main()
