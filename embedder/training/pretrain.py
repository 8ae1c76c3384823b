"""Train an encoder on one or more collections: self-supervised, supervised, or both at once.

The self-supervised objective is SimCLR (NT-Xent between two augmented views of each galaxy). It was
chosen over BYOL/DINO because it trains one network with no momentum teacher — half the forward passes,
which matters on a CPU — and is stable at the batch sizes (128 to 512) that fit here; its negatives also
keep rare morphologies from collapsing onto the common ones. When the collections carry labels, a
linear head per collection adds class-weighted cross-entropy on the same features (``supervised``
trains with that alone, ``both`` sums the two losses). Galaxy Zoo vote fractions (``vote_columns``) add
a head that learns each fraction as a soft binary target (cross-entropy against the fraction of
volunteers who gave that answer): zoobot's Dirichlet-multinomial loss needs the vote counts, which
catalogues that publish fractions alone do not give.

``init`` starts from the weights of any encoder ``load_encoder`` takes (ImageNet, a hub id, a galsearch
checkpoint) instead of random ones, with what fine-tuning needs: the init's own normalisation, a lower
learning rate, the usual one-epoch linear warm-up, and BatchNorm layers that keep the init's running
statistics (those of 128-image batches cost 0.07 kNN precision on GZ1). ``layer_decay`` < 1 lowers the
learning rate block by block from the top down, as ``finetune --unfreeze`` does; from ImageNet weights it
did no better than one rate for all, so it is off by default (docs/benchmarks.md: these measurements).

Training checkpoints at every epoch end (and every few minutes within an epoch) to ``OUT.state.pt``;
a re-run resumes there, bit-for-bit on the CPU, since data order and augmentations are drawn from
generators whose state is saved. The loss log is ``OUT.log.csv``. The result is a self-describing
safetensors checkpoint (architecture, input size, channels, band names, normalisation) that ``--encoder OUT``
loads.

Bands: the collections must share their bands (names where recorded, else their number; one-band collections
join any as grey). The network takes that many bands (3 when all are grey); an ``init`` with 3-band weights is
adapted to them as ``embed`` adapts it (:func:`galsearch.embedder.encoders.match_bands`), and the trained
encoder records the band names.
"""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..collection import Collection, open_collection, read_rows
from ..cpu_memory import keep_freed_memory
from ..embed import band_names
from ..encoders import (
    Encoder,
    create_backbone,
    default_device,
    embedding_dim,
    layer_decay_groups,
    load_encoder,
    match_bands,
    save_encoder,
    train_mode,
    weights_digest,
)
from ..errors import GalsearchError
from ..storage import atomic_write
from .augment import Augment

Method = Literal["ssl", "supervised", "both"]
CHECKPOINT_SECONDS = 300.0
LOG_EVERY = 10
ARCHITECTURE, LR, INIT_LR = "convnext_atto", 2e-3, 5e-4  # INIT_LR: from --init weights
INPUT_SIZE = 64


@dataclass
class PretrainConfig:
    """Everything that defines a training run (a resumed run must match it)."""

    collections: list[str]
    architecture: str = ARCHITECTURE
    input_size: int = INPUT_SIZE
    method: Method = "both"
    label_column: str = "label"
    vote_columns: list[str] = field(default_factory=list)
    epochs: int = 30
    batch_size: int = 128
    lr: float = LR
    weight_decay: float = 0.05
    temperature: float = 0.2
    drop_path: float = 0.0
    seed: int = 0
    init: str | None = None  # the spec of an encoder to start from, instead of random weights
    init_sha256: str | None = None  # its weights' digest: a resumed run must start from the same
    layer_decay: float = 1.0  # learning-rate factor per timm block, from the top down
    freeze_bn: bool = False  # BatchNorm layers keep their running statistics (eval mode)
    embed_dim: int | None = None  # a linear embedding of this size on the pooled features (None: none)
    balance: bool = False  # every collection an equal share of each epoch, whatever its size


@dataclass
class PretrainReport:
    """What a training run produced."""

    out: Path
    steps: int
    epochs: int
    seconds: float
    images_per_second: float
    first_loss: float
    last_loss: float
    resumed_from_epoch: int = 0
    log: list[dict] = field(default_factory=list, repr=False)
    encoder: Encoder | None = field(default=None, repr=False)

    def summary(self) -> str:
        """One human-readable line."""
        resumed = f", resumed at epoch {self.resumed_from_epoch}" if self.resumed_from_epoch else ""
        return (
            f"trained {self.epochs} epochs ({self.steps} steps{resumed}) in {self.seconds:.0f} s, "
            f"{self.images_per_second:.0f} images/s; loss {self.first_loss:.3f} -> {self.last_loss:.3f}; "
            f"wrote {self.out}"
        )


class _Data:
    """Images (resized to the input size, in [0, 1]) and per-collection labels, read batch by batch."""

    def __init__(self, collections: list[Collection], config: PretrainConfig):
        self.collections = collections
        self.channels, self.bands = common_bands(collections)
        self.size = config.input_size
        self.where = np.concatenate(
            [np.stack([np.full(len(c), i), np.arange(len(c))], axis=1) for i, c in enumerate(collections)]
        )
        self.classes: list[list] = []
        labels = []
        for coll in collections:
            column = coll.catalog.get(config.label_column) if config.method != "ssl" else None
            values, classes = _labels(column, len(coll))
            self.classes.append(classes)
            labels.append(values)
        self.labels = np.concatenate(labels)
        self.votes = (
            np.concatenate([_votes(c, config.vote_columns) for c in collections])
            if config.vote_columns
            else None
        )
        if self.votes is not None and np.isnan(self.votes).all():
            catalogs = [c.catalog for c in collections]
            numeric = {n for cat in catalogs for n, v in cat.items() if pd.api.types.is_numeric_dtype(v)}
            raise GalsearchError(
                f"no collection has any of the vote columns {', '.join(config.vote_columns)}; "
                f"numeric columns: {', '.join(sorted(numeric))}"
            )
        if config.method != "ssl" and not any(self.classes) and self.votes is None:
            raise GalsearchError(
                f"method {config.method!r} needs labels, but no collection has a usable "
                f"{config.label_column!r} column; use --method ssl, --labels COLUMN or --votes COLUMN..."
            )

    def __len__(self) -> int:
        return len(self.where)

    def images(self, indices: np.ndarray, device: torch.device) -> torch.Tensor:
        """Float (B, C, S, S) images in [0, 1] for the given global indices, in their order."""
        out = torch.empty(len(indices), self.channels, self.size, self.size, device=device)
        for i, coll in enumerate(self.collections):
            mask = self.where[indices, 0] == i
            if not mask.any():
                continue
            batch = torch.from_numpy(read_rows(coll.images, self.where[indices[mask], 1])).to(device)
            x = batch.permute(0, 3, 1, 2).float().div_(255)
            x = x.expand(-1, self.channels, -1, -1) if x.shape[1] == 1 else x
            if x.shape[-1] != self.size:
                x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True)
            out[torch.from_numpy(np.flatnonzero(mask)).to(device)] = x
        return out


def common_bands(collections: list[Collection]) -> tuple[int, list[str] | None]:
    """The number of bands and their names (None: none recorded) shared by ``collections``; one-band
    collections join any others as grey, and alone make 3 bands."""
    counts = {c.image_shape[2] for c in collections} - {1}
    named = {tuple(names) for c in collections if (names := band_names(c)) and len(names) > 1}
    if len(counts) > 1 or len(named) > 1:
        each = "; ".join(f"{c.path.name} {band_names(c) or c.image_shape[2]}" for c in collections)
        raise GalsearchError(f"pretrain trains one network on collections of the same bands, not: {each}")
    return (counts.pop() if counts else 3), (list(named.pop()) if named else None)


def _votes(collection: Collection, columns: list[str]) -> np.ndarray:
    """(N, len(columns)) vote fractions of a collection, NaN where it lacks a column or a value."""
    out = np.full((len(collection), len(columns)), np.nan, np.float32)
    for k, name in enumerate(columns):
        if name not in collection.catalog:
            continue
        column = collection.catalog[name]
        if not pd.api.types.is_numeric_dtype(column):
            raise GalsearchError(f"{collection.path}: vote column {name!r} is not numeric ({column.dtype})")
        values = column.to_numpy(dtype=np.float32, na_value=np.nan)
        bad = np.flatnonzero((values < 0) | (values > 1))
        if len(bad):
            raise GalsearchError(
                f"{collection.path}: vote fractions must lie in [0, 1], but {name!r} has "
                f"{values[bad[0]]} in row {bad[0]} ({len(bad)} rows out of range)"
            )
        out[:, k] = values
    return out


def _labels(column, n: int) -> tuple[np.ndarray, list]:
    """Class indices (-1 where missing or negative) and the sorted class values of a label column."""
    if column is None:
        return np.full(n, -1), []
    values = column.to_numpy()
    valid = ~column.isna().to_numpy()
    if np.issubdtype(values.dtype, np.number):
        valid &= values >= 0
    classes = sorted(set(values[valid].tolist()))
    lookup = {c: k for k, c in enumerate(classes)}
    indices = np.array([lookup[v] if ok else -1 for v, ok in zip(values, valid, strict=True)])
    return indices, classes if len(classes) > 1 else []


class _Model(torch.nn.Module):
    """Backbone + SimCLR projection head + one linear classifier per labelled collection + vote head."""

    def __init__(self, config: PretrainConfig, classes: list[list], init: Encoder | None, channels: int):
        super().__init__()
        self.backbone = create_backbone(
            config.architecture,
            input_size=config.input_size,
            drop_path=config.drop_path,
            embed_dim=config.embed_dim,
            in_chans=channels,
        )
        if init is not None:
            try:  # a new embedding layer starts from timm's random init; the rest must all fit
                own = self.backbone.get_classifier().state_dict(prefix=_classifier_prefix(self.backbone))
                weights = init.model.state_dict()
                self.backbone.load_state_dict(weights | {k: v for k, v in own.items() if k not in weights})
            except RuntimeError as exc:  # e.g. a transformer made for another input size
                hint = f"; try --input-size {init.input_size}" if init.input_size != config.input_size else ""
                raise GalsearchError(
                    f"the weights of --init {config.init} do not fit a {config.architecture} built for "
                    f"{config.input_size} px{hint} ({str(exc)[:300]})"
                ) from exc
        dim = embedding_dim(self.backbone)
        self.projection = torch.nn.Sequential(
            torch.nn.Linear(dim, 512), torch.nn.GELU(), torch.nn.Linear(512, 128)
        )
        self.heads = torch.nn.ModuleList(torch.nn.Linear(dim, max(len(c), 1)) for c in classes)
        self.vote_head = torch.nn.Linear(dim, len(config.vote_columns)) if config.vote_columns else None


def _classifier_prefix(model: torch.nn.Module) -> str:
    """The state-dict prefix of a timm model's classifier (``classifier.``, ``head.fc.`` ...)."""
    classifier = model.get_classifier()
    return next(f"{name}." for name, module in model.named_modules() if module is classifier)


class _Trainer:
    """One run's model, optimiser, schedule, random state and loss log: what a checkpoint saves."""

    def __init__(
        self, config: PretrainConfig, data: _Data, out: Path, device: torch.device, init: Encoder | None
    ):
        self.config, self.data, self.device = config, data, device
        self.state_file = out.with_name(out.name + ".state.pt")
        self.log_file = out.with_name(out.name + ".log.csv")
        torch.manual_seed(config.seed)
        self.model = _Model(config, data.classes, init, data.channels)
        if device.type == "cpu":
            keep_freed_memory()
        self.model.to(device, memory_format=torch.channels_last)
        self.steps_per_epoch = len(data) // config.batch_size
        self.optimizer = torch.optim.AdamW(
            self._parameter_groups(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _warmup_cosine(self.steps_per_epoch, config.epochs)
        )
        self.generator = torch.Generator().manual_seed(config.seed)  # draws every augmentation
        self.class_weights = [
            _class_weights(data.labels[data.where[:, 0] == i], len(c)).to(device)
            for i, c in enumerate(data.classes)
        ]
        # Per-channel mean and std: the training images', or those the init's weights expect.
        self.normalisation = (init.mean, init.std) if init else _statistics(data, device)
        self.mean, self.std = (torch.tensor(v, device=device).view(1, -1, 1, 1) for v in self.normalisation)
        self.augment = Augment()
        self.log: list[dict] = []

    def _parameter_groups(self) -> list[dict]:
        """Optimiser groups: the backbone by block with layer-wise decayed learning rates, then the heads."""
        if self.config.layer_decay == 1:
            return [{"params": list(self.model.parameters())}]
        heads = [p for name, p in self.model.named_parameters() if not name.startswith("backbone.")]
        blocks = layer_decay_groups(self.model.backbone, self.config.lr, self.config.layer_decay)
        return [*blocks, {"params": heads}]

    def order(self, epoch: int) -> np.ndarray:
        """The epoch's images (a function of seed and epoch, so a resumed run repeats it)."""
        return epoch_order(self.data.where[:, 0], self.config.seed * 100_003 + epoch, self.config.balance)

    def step(self, indices: np.ndarray) -> dict[str, float]:
        """One optimisation step on two augmented views of the given images; the losses."""
        images = self.data.images(indices, self.device)
        views = torch.cat([self.augment(images, self.generator), self.augment(images, self.generator)])
        views = (views - self.mean) / self.std
        views = views.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            features = self.model.backbone(views).float()
        ssl, sup = _losses(self.model, features, self.data, indices, self.class_weights, self.config)
        loss = ssl + sup
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.schedule.step()
        return {"loss": loss.item(), "ssl": ssl.item(), "supervised": sup.item()}

    def save(self, epoch: int, step: int) -> None:
        """Atomically write the resume point (next epoch and step) and the loss log."""
        state = {
            "config": asdict(self.config),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "generator": self.generator.get_state(),
            "epoch": epoch,
            "step": step,
            "log": self.log,
        }
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write(self.state_file, lambda f: f.write(buffer.getvalue()))
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(self.log[0]) if self.log else ["epoch"])
        writer.writeheader()
        writer.writerows(self.log)
        atomic_write(self.log_file, lambda f: f.write(text.getvalue().encode()))

    def resume(self) -> tuple[int, int]:
        """Load the saved state of the same configuration, if any; the epoch and step to go on from."""
        if not self.state_file.is_file():
            return 0, 0
        try:
            state = torch.load(self.state_file, map_location="cpu", weights_only=True)
        except Exception as exc:  # a damaged state file: say so rather than silently restarting
            raise GalsearchError(
                f"cannot read training state {self.state_file} ({exc}); use --restart"
            ) from exc
        # a setting added since the state was saved takes its default, which does what runs did before it
        saved = {**asdict(PretrainConfig(collections=[])), **state["config"]}
        current = asdict(self.config)
        if differing := [k for k in current if saved[k] != current[k]]:
            settings = "; ".join(f"{k}: {saved[k]!r} then, {current[k]!r} now" for k in differing)
            raise GalsearchError(
                f"{self.state_file} is from a run with other settings ({settings}); "
                "use --restart to start again, or another --out"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.generator.set_state(state["generator"])
        self.log = state["log"]
        return state["epoch"], state["step"]

    def encoder(self, spec: str) -> Encoder:
        """The trained backbone as an :class:`Encoder` that normalises as training did."""
        self.model.eval()
        return Encoder(
            model=self.model.backbone,
            spec=spec,
            architecture=self.config.architecture,
            channels=self.data.channels,
            input_size=self.config.input_size,
            mean=self.normalisation[0],
            std=self.normalisation[1],
            interpolation="bilinear",
            weights_sha256=weights_digest(self.model.backbone),
            bands=self.data.bands,
        )


def pretrain(
    collections: list[str | Path],
    out: str | Path,
    *,
    init: str | None = None,
    architecture: str | None = None,
    input_size: int | None = None,
    method: Method = "both",
    label_column: str = "label",
    vote_columns: list[str] | None = None,
    epochs: int = 30,
    batch_size: int = 128,
    lr: float | None = None,
    layer_decay: float = 1.0,
    freeze_bn: bool | None = None,
    embed_dim: int | None = None,
    drop_path: float = 0.0,
    balance: bool = False,
    seed: int = 0,
    device: str | None = None,
    restart: bool = False,
    progress: bool = True,
) -> PretrainReport:
    """Train an encoder on ``collections`` and write it to ``out`` (a .safetensors file).

    ``init`` is the spec of an encoder to start from (its architecture; ``architecture`` may only repeat
    it); without it training starts from random weights of ``architecture`` (default convnext_atto).
    ``input_size`` defaults to the size ``init`` was trained at by this function (e.g. ``default``'s 96 px:
    training on carries on at its resolution), else to 64 px (ImageNet or hub weights, random ones).
    ``lr`` (default 2e-3 from random weights, 5e-4 from ``init``), ``layer_decay`` (default 1: none) and
    ``freeze_bn`` (default: with ``init``) are explained in the module docstring.
    ``vote_columns`` names catalog columns of vote fractions in [0, 1] to learn besides the labels (with
    ``method`` ``supervised`` or ``both``); ``drop_path`` is the backbone's stochastic-depth rate, a
    regulariser against memorising small data. ``embed_dim`` adds a trained linear layer that maps the
    pooled features to a compact embedding of that length (the init's, when it has one), which every
    loss then reads: the vectors the index stores are that size. ``balance`` gives every collection an
    equal share of each epoch's images, drawn with replacement (a 214-image set of rare objects then weighs
    as much in the losses as 3,000 common ones); without it each image is seen once an epoch.
    """
    out = Path(out)
    if out.suffix != ".safetensors":
        raise GalsearchError(f"--out must end in .safetensors, got {out}")
    if vote_columns and method == "ssl":
        raise GalsearchError("vote fractions are learnt with --method supervised or both, not ssl")
    opened = [open_collection(c) for c in collections]
    channels, bands = common_bands(opened)
    initial = load_encoder(init, "cpu") if init else None
    if initial is not None and architecture not in (None, initial.architecture):
        raise GalsearchError(
            f"--arch {architecture} contradicts --init {init}, which is a {initial.architecture}; drop --arch"
        )
    if initial is not None:
        initial = match_bands(initial, channels, bands, "the training collections")
        if initial.channels != channels:
            raise GalsearchError(
                f"--init {init} takes {initial.channels} bands; the collections have {channels}"
            )
    config = PretrainConfig(
        [str(Path(c).resolve()) for c in collections],
        initial.architecture if initial else architecture or ARCHITECTURE,
        input_size or _trained_size(initial) or INPUT_SIZE,
        method,
        label_column,
        list(vote_columns or []),
        epochs,
        batch_size,
        lr if lr is not None else INIT_LR if initial else LR,
        drop_path=drop_path,
        seed=seed,
        init=init,
        init_sha256=initial.weights_sha256 if initial else None,
        layer_decay=layer_decay,
        freeze_bn=freeze_bn if freeze_bn is not None else initial is not None,
        embed_dim=embed_dim or (initial.model.num_classes or None if initial else None),
        balance=balance,
    )
    data = _Data(opened, config)
    if len(data) < 2 * batch_size:
        raise GalsearchError(
            f"{len(data)} images are too few for batches of {batch_size}; lower --batch-size"
        )
    trainer = _Trainer(config, data, out, torch.device(device or default_device()), initial)
    start_epoch, start_step = (0, 0) if restart else trainer.resume()
    per_epoch = trainer.steps_per_epoch
    started, trained, last_save = time.perf_counter(), 0, time.monotonic()
    bar = tqdm(
        total=epochs * per_epoch,
        initial=start_epoch * per_epoch + start_step,
        desc="pretrain",
        unit="step",
        disable=not progress,
    )
    train_mode(trainer.model, trainer.config.freeze_bn)
    for epoch in range(start_epoch, epochs):
        order = trainer.order(epoch)
        for step in range(start_step if epoch == start_epoch else 0, per_epoch):
            losses = trainer.step(order[step * batch_size : (step + 1) * batch_size])
            trained += batch_size
            bar.update()
            bar.set_postfix(loss=f"{losses['loss']:.3f}", epoch=epoch + 1)
            if step % LOG_EVERY == 0:
                trainer.log.append(
                    {"epoch": epoch, "step": step}
                    | losses
                    | {
                        "lr": trainer.schedule.get_last_lr()[0],
                        "images_per_s": trained / (time.perf_counter() - started),
                    }
                )
            if time.monotonic() - last_save > CHECKPOINT_SECONDS:
                trainer.save(epoch, step + 1)
                last_save = time.monotonic()
        trainer.save(epoch + 1, 0)
        last_save = time.monotonic()
    bar.close()
    encoder = trainer.encoder(str(out))
    provenance = {"init_provenance": initial.provenance} if initial and initial.provenance else {}
    save_encoder(
        encoder,
        out,
        training={k: v for k, v in asdict(config).items() if k != "collections"}
        | {"collections": [Path(c).name for c in config.collections]}
        | provenance,
    )
    seconds = time.perf_counter() - started
    losses = [entry["loss"] for entry in trainer.log] or [float("nan")]
    return PretrainReport(
        out,
        epochs * per_epoch,
        epochs,
        seconds,
        trained / max(seconds, 1e-9),
        losses[0],
        float(np.mean(losses[-5:])),
        start_epoch,
        trainer.log,
        encoder,
    )


def epoch_order(collection_of: np.ndarray, seed: int, balance: bool) -> np.ndarray:
    """Indices of one epoch's images: a permutation, or with ``balance`` a draw (with replacement) of as
    many images in which every collection (``collection_of`` names each image's) has an equal share."""
    generator = torch.Generator().manual_seed(seed)
    if not balance:
        return torch.randperm(len(collection_of), generator=generator).numpy()
    sizes = np.bincount(collection_of)
    weights = torch.from_numpy(1.0 / sizes[collection_of])
    return torch.multinomial(weights, len(collection_of), replacement=True, generator=generator).numpy()


def _trained_size(encoder: Encoder | None) -> int | None:
    """The input size ``encoder`` was trained at by :func:`pretrain`, if it was."""
    if encoder is None or "training" not in (encoder.provenance or {}):
        return None
    return encoder.input_size


def _losses(
    model: _Model,
    features: torch.Tensor,
    data: _Data,
    indices: np.ndarray,
    class_weights: list[torch.Tensor],
    config: PretrainConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SimCLR and supervised losses of a batch whose two views are stacked in ``features``."""
    zero = features.new_zeros(())
    ssl = _nt_xent(model.projection(features), config.temperature) if config.method != "supervised" else zero
    sup = zero
    if config.method != "ssl":
        labels = torch.from_numpy(np.tile(data.labels[indices], 2)).to(features.device)
        task = torch.from_numpy(np.tile(data.where[indices, 0], 2)).to(features.device)
        for i, head in enumerate(model.heads):
            mask = (task == i) & (labels >= 0)
            if data.classes[i] and mask.any():
                sup = sup + F.cross_entropy(head(features[mask]), labels[mask], weight=class_weights[i]) * (
                    mask.sum() / mask.numel()
                )
        if model.vote_head is not None:
            votes = torch.from_numpy(np.tile(data.votes[indices], (2, 1))).to(features.device)
            known = ~votes.isnan()
            if known.any():
                logits = model.vote_head(features)
                sup = sup + F.binary_cross_entropy_with_logits(logits[known], votes[known]) * (
                    known.any(dim=1).float().mean()
                )
    return ssl, sup


def _nt_xent(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's normalised-temperature cross-entropy for 2N projections (view pairs i and i + N)."""
    z = F.normalize(z, dim=1)
    n = z.shape[0] // 2
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(logits, targets)


def _class_weights(labels: np.ndarray, k: int) -> torch.Tensor:
    """Square-root inverse-frequency class weights (rare classes count more, without swamping)."""
    counts = np.bincount(labels[labels >= 0], minlength=max(k, 1)).astype(float)
    weights = np.where(counts > 0, 1 / np.sqrt(np.maximum(counts, 1)), 0.0)
    return torch.tensor(
        weights / weights[counts > 0].mean() if counts.any() else weights, dtype=torch.float32
    )


def _statistics(data: _Data, device: torch.device) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of the training images (a fixed sample of up to 2048)."""
    sample = np.random.default_rng(0).choice(len(data), size=min(len(data), 2048), replace=False)
    images = data.images(np.sort(sample), device)
    mean, std = images.mean(dim=(0, 2, 3)), images.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(mean.tolist()), tuple(std.tolist())


def _warmup_cosine(steps_per_epoch: int, epochs: int):
    """Learning-rate factor: linear warm-up over one epoch, then cosine decay to zero."""
    warmup, total = steps_per_epoch, steps_per_epoch * epochs

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return factor
