"""Fine-tuned heads: a small network on embeddings, optionally with its own (partly retrained) encoder.

A saved head is a folder: ``head.safetensors`` (weights, with the task, classes, target columns,
decision threshold, metrics and the fingerprint of the encoder whose embeddings it reads in its
metadata) and, for a partly unfrozen encoder, ``encoder.safetensors`` (a galsearch encoder checkpoint).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from ..band_mixer import recorded_mixer
from ..collection import Collection
from ..embed import same_encoder
from ..encoders import Encoder, load_encoder, save_encoder
from ..errors import GalsearchError

HEAD_FILE = "head.safetensors"
ENCODER_FILE = "encoder.safetensors"
HEADS_DIR = "heads"
HEAD_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")  # a folder name, and a prefix of catalog columns
KINDS = ("linear", "mlp")
MLP_HIDDEN = 256
PREDICT_BATCH = 256  # images per forward pass of a fine-tuned encoder
PREDICT_CHUNK = 65_536  # embeddings per step of a frozen head
# A feature whose spread among the training labels is below this fraction of the median spread carries
# nothing to learn from there (ImageNet features of galaxies are often exactly 0): it is ignored, since
# standardising it would blow its few non-zero values elsewhere up by orders of magnitude.
MIN_SPREAD = 1e-3


class HeadNet(nn.Module):
    """Standardise the embedding (features that do not vary in training ignored), then a linear layer or a
    one-hidden-layer MLP."""

    def __init__(self, kind: str, dim: int, outputs: int, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        if kind not in KINDS:
            raise GalsearchError(f"unknown head {kind!r}: choose one of {', '.join(KINDS)}")
        self.register_buffer("mean", mean.float().reshape(1, dim))
        std = std.float().reshape(1, dim).clamp_min(1e-6)
        self.register_buffer("std", std.masked_fill(std < MIN_SPREAD * std.median(), torch.inf))
        if kind == "linear":
            self.layers = nn.Linear(dim, outputs)
        else:
            self.layers = nn.Sequential(
                nn.Linear(dim, MLP_HIDDEN), nn.GELU(), nn.Dropout(0.2), nn.Linear(MLP_HIDDEN, outputs)
            )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers((features - self.mean) / self.std)


@dataclass
class Head:
    """A trained head and what it means: task, classes or target columns, threshold, provenance."""

    net: HeadNet
    kind: str
    task: str
    classes: list[str]
    columns: list[str]
    encoder_fingerprint: dict
    encoder: Encoder | None = None  # set when the encoder was partly retrained with the head
    threshold: float | None = None  # binary: decision threshold on the positive-class probability
    metrics: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        """Class probabilities (n, classes) or predicted fractions (n, columns) from embeddings."""
        logits = self.net(features)
        return logits.sigmoid() if self.task == "regress" else logits.softmax(dim=1)

    @torch.inference_mode()
    def predict_scores(self, collection: Collection, progress: bool = False) -> np.ndarray:
        """Scores for every galaxy of ``collection`` (from its embeddings, or its images if fine-tuned)."""
        self.net.eval()
        device = next(self.net.buffers()).device
        if self.encoder is None:
            self._check_embeddings(collection)
            embeddings = collection.embeddings
            chunks = range(0, len(embeddings), PREDICT_CHUNK)
            return np.concatenate(
                [
                    self.scores(torch.from_numpy(np.array(embeddings[i : i + PREDICT_CHUNK])).to(device))
                    .cpu()
                    .numpy()
                    for i in chunks
                ]
            )
        self.encoder.model.eval()
        out = []
        for start in tqdm(range(0, len(collection), PREDICT_BATCH), desc="predicting", disable=not progress):
            images = np.asarray(collection.images[start : start + PREDICT_BATCH])
            features = torch.from_numpy(self.encoder.embed(images)).to(device)
            out.append(self.scores(features).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes) or len(self.columns)))

    def _check_embeddings(self, collection: Collection) -> None:
        if collection.encoder is None or not same_encoder(collection.encoder, self.encoder_fingerprint):
            have = (collection.encoder or {}).get("spec", "no embeddings")
            spec = self.encoder_fingerprint.get("spec")
            mixers = [recorded_mixer(f) for f in (collection.encoder, self.encoder_fingerprint)]
            if have == spec and any(m is not None for m in mixers):
                raise GalsearchError(
                    f"this head reads embeddings of {spec!r} adapted to N bands through another band mixer "
                    f"than {collection.path}'s: embed both collections with one encoder saved by "
                    "`galsearch calibrate-bands`, and train the head again"
                )
            raise GalsearchError(
                f"this head reads embeddings of {spec!r}, but {collection.path} holds {have!r}: re-embed it "
                "with that encoder (--replace)"
            )
        if collection.counts["embedded"] < len(collection):
            raise GalsearchError(
                f"{collection.path} has {len(collection) - collection.counts['embedded']} galaxies not "
                "embedded yet: run galsearch embed first"
            )

    def save(self, folder: str | Path) -> Path:
        """Write the head (and its encoder, if fine-tuned) into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {
            "kind": self.kind,
            "task": self.task,
            "classes": self.classes,
            "columns": self.columns,
            "encoder_fingerprint": self.encoder_fingerprint,
            "threshold": self.threshold,
            "metrics": self.metrics,
            "training": self.training,
            "fine_tuned_encoder": self.encoder is not None,
            "dim": int(self.net.mean.shape[1]),
            "outputs": output_count(self.task, self.classes, self.columns),
        }
        if self.encoder is not None:
            save_encoder(self.encoder, folder / ENCODER_FILE, training=self.training)
        state = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        save_file(state, folder / HEAD_FILE, metadata={"galsearch_head": json.dumps(meta)})
        return folder


def output_count(task: str, classes: list[str], columns: list[str]) -> int:
    """Outputs of a head: one per target column (regress) or per class."""
    return len(columns) if task == "regress" else len(classes)


def head_folder(collection: Collection, name: str) -> Path:
    """COLLECTION/heads/NAME; refuses a name, or a link, that would lead out of the heads folder."""
    if not HEAD_NAME.fullmatch(name) or ".." in name:
        raise GalsearchError(
            f"a head name is 1-100 letters, digits, '_', '-' or '.' (starting with a letter, digit or '_', "
            f"no '..'), e.g. rings; got {name[:100]!r}"
        )
    heads = collection.path / HEADS_DIR
    folder = heads / name
    if folder.is_symlink() or not folder.resolve().is_relative_to(heads.resolve()):
        raise GalsearchError(f"{folder} is a link; a head must be a folder inside {heads}")
    return folder


def head_path(collection: Collection, head: str | Path) -> Path:
    """A head folder: a ``Path`` as given, or the name of a head saved in ``collection``."""
    return head if isinstance(head, Path) else head_folder(collection, head)


def load_head(folder: str | Path, device: str | None = None) -> Head:
    """Load a head saved by :meth:`Head.save`."""
    folder = Path(folder)
    file = folder / HEAD_FILE
    if not file.is_file():
        raise GalsearchError(f"no head at {folder}: {HEAD_FILE} is missing")
    from safetensors import safe_open

    with safe_open(str(file), "pt") as f:
        meta = json.loads((f.metadata() or {}).get("galsearch_head", "null") or "null")
    if not meta:
        raise GalsearchError(f"{file} is not a galsearch head (no metadata)")
    state = load_file(file)
    net = HeadNet(meta["kind"], meta["dim"], meta["outputs"], state["mean"], state["std"])
    net.load_state_dict(state)
    encoder = load_encoder(str(folder / ENCODER_FILE), device) if meta["fine_tuned_encoder"] else None
    if encoder is not None:
        net.to(encoder.device)
    elif device:
        net.to(device)
    return Head(
        net,
        meta["kind"],
        meta["task"],
        meta["classes"],
        meta["columns"],
        meta["encoder_fingerprint"],
        encoder,
        meta["threshold"],
        meta["metrics"],
        meta["training"],
    )
