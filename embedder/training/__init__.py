"""Training: encoders (``pretrain``: SimCLR, labels and vote fractions, from random or pretrained weights)
and fine-tuning heads on a collection's embeddings or a partly unfrozen encoder (``finetune``), with the
augmentations, label files and plots they use.

Public names load their submodule on first use, like ``embedder``'s.
"""

from typing import TYPE_CHECKING

from galsearch.embedder.lazy import lazy_package

if TYPE_CHECKING:
    from .finetune import FinetuneResult, auto_tune, finetune, learning_curve, predict
    from .heads import Head, load_head
    from .labels import LabelError, Labels, read_labels
    from .pretrain import PretrainReport, pretrain

__all__ = [
    "FinetuneResult",
    "Head",
    "LabelError",
    "Labels",
    "PretrainReport",
    "auto_tune",
    "finetune",
    "learning_curve",
    "load_head",
    "predict",
    "pretrain",
    "read_labels",
]

lazy_package(
    __name__,
    {
        "finetune": ("FinetuneResult", "auto_tune", "finetune", "learning_curve", "predict"),
        "heads": ("Head", "load_head"),
        "labels": ("LabelError", "Labels", "read_labels"),
        "pretrain": ("PretrainReport", "pretrain"),
    },
)
