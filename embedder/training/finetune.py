"""Fine-tune on small labelled sets: heads on frozen embeddings or partly unfrozen encoders.

Protocol: a test part of the labels (``test_fraction``, stratified; or separate ``test_labels``) is held
out for the reported metrics, or, with ``folds``, the metrics are cross-validated (every label predicted
by a head trained on the other folds, :mod:`.crossval`) and the head is trained on all the labels; of
the labels a head trains on, ``val_fraction`` stops training early (best validation loss) and, for
binary tasks, sets the decision threshold that reaches ``target_recall``. Without ``early_stopping`` a
head trains on all its labels for a fixed number of epochs (:data:`FIXED_EPOCHS` on frozen embeddings),
and its binary threshold comes from out-of-fold scores of heads trained the same way on folds of them:
with a few dozen labels, a fifth of them (a handful of the rare class) need not decide when training
ends. Classes are weighted by inverse frequency. With ``unfreeze = N`` the last N parameter groups of
the timm encoder (its blocks, the final norm counting as one, as timm's ``group_matcher`` orders them)
train with the head, each group's learning rate ``layer_decay`` times that of the group after it, on
augmented views.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    roc_auc_score,
    roc_curve,
)
from sklearn.model_selection import train_test_split
from tqdm.auto import tqdm

from ..collection import Collection, read_rows
from ..embed import encoder_of
from ..encoders import Encoder, default_device, layer_decay_groups, train_mode
from ..errors import GalsearchError
from .augment import Augment
from .heads import Head, HeadNet, head_folder, head_path, load_head, output_count
from .labels import Labels

MIN_LABELS = 10
EVAL_CHUNK = 256  # galaxies per forward pass when evaluating
MIN_IMPROVEMENT = 1e-3  # of the validation loss, for an epoch to count as progress
# Epochs of a frozen head without early stopping, chosen on a validation hunt (mergers of the GZ1 *train*
# split, ImageNet embeddings; docs/classifier.md, "A classifier from a hunt's ratings").
FIXED_EPOCHS = 100
THRESHOLD_FOLDS = 5  # without early stopping, the binary threshold comes from out-of-fold scores


@dataclass(frozen=True)
class FinetuneConfig:
    """How to train a head (defaults depend on whether the encoder is unfrozen)."""

    head: str = "linear"
    unfreeze: int = 0
    lr: float | None = None  # 3e-3 on frozen embeddings, 3e-4 when unfreezing
    weight_decay: float = 1e-2
    layer_decay: float = 0.75
    freeze_bn: bool = True  # unfrozen BatchNorm layers keep the encoder's running statistics
    epochs: int | None = None  # 300 frozen, 30 unfrozen (early stopping ends most runs sooner), or
    # FIXED_EPOCHS without early stopping on frozen embeddings
    patience: int | None = None  # epochs without validation improvement: 30 frozen, 5 unfrozen
    early_stopping: bool = True  # False: train on all labels for the epochs (see the module's docstring)
    batch_size: int = 64
    val_fraction: float = 0.2
    target_recall: float = 0.99
    seed: int = 0
    device: str | None = None

    @property
    def frozen(self) -> bool:
        return self.unfreeze == 0

    def resolved(self) -> FinetuneConfig:
        """This config with its defaults filled in."""
        epochs = 30 if not self.frozen else 300 if self.early_stopping else FIXED_EPOCHS
        return replace(
            self,
            lr=self.lr or (3e-3 if self.frozen else 3e-4),
            epochs=self.epochs or epochs,
            patience=self.patience or (30 if self.frozen else 5),
            device=self.device or default_device(),
        )


DEFAULT_CONFIG = FinetuneConfig()  # a frozen default for other modules' signatures


@dataclass
class FinetuneResult:
    """A trained head, its test metrics and where it was saved."""

    head: Head
    metrics: dict
    folder: Path | None
    seconds: float
    trials: pd.DataFrame | None = None  # --auto: every trial
    budget_s: float | None = None  # --auto: the time budget
    out_of_fold: np.ndarray | None = None  # folds: each label's scores from a head that did not train on it
    notes: list[str] = field(default_factory=list)  # e.g. why fewer folds ran than were asked for

    def summary(self) -> str:
        lines = list(self.notes)
        if self.trials is not None:
            lines += ["auto: every trial (cross-validated score: balanced accuracy, or minus RMSE)"]
            lines += [self.trials.to_string(index=False, float_format=lambda v: f"{v:.3g}"), ""]
        if self.budget_s is not None and self.seconds > self.budget_s:
            lines += [
                f"the time budget of {self.budget_s:g} s was exceeded: the first, cheapest trial always runs "
                "to the end; give --time-budget more seconds to compare settings"
            ]
        lines += [f"trained a {describe_config(self.head.training['config'])} head in {self.seconds:.1f} s"]
        if "folds" in self.metrics:
            lines += [
                f"cross-validated metrics on all {self.metrics['n']} labels ({self.metrics['folds']} folds: "
                "each label predicted by a head that did not train on it; the saved head trained on all):"
            ]
        else:
            lines += [f"metrics on {self.metrics['n']} held-out labels:"]
        shown = ("confusion_matrix", "folds")
        lines += [f"  {k}: {_fmt(v)}" for k, v in self.metrics.items() if k not in shown]
        if "confusion_matrix" in self.metrics:
            lines.append(
                f"  confusion matrix (rows true {self.head.classes}): {self.metrics['confusion_matrix']}"
            )
        if self.folder:
            lines.append(f"saved to {self.folder}")
        return "\n".join(lines)


def describe_config(config: dict) -> str:
    where = (
        "frozen embeddings" if config["unfreeze"] == 0 else f"{config['unfreeze']} unfrozen encoder groups"
    )
    if config.get("early_stopping") is False:
        where += f", {config['epochs']} epochs on all labels"
    return f"{config['head']} ({where}, lr {config['lr']:g}, weight decay {config['weight_decay']:g})"


def _fmt(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


# ---- training --------------------------------------------------------------------------------------


def _split(labels: Labels, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of a (train, held-out) split, stratified by class when every class has two members."""
    positions = np.arange(len(labels))
    stratum = labels.stratum
    if stratum is not None and np.bincount(stratum).min() < 2:
        stratum = None
    held = max(1, round(fraction * len(labels)))
    if stratum is not None:
        held = max(held, len(np.unique(stratum)))
    return train_test_split(positions, test_size=held, random_state=seed, stratify=stratum)


def _loss(
    task: str, logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None
) -> torch.Tensor:
    if task == "regress":
        return F.binary_cross_entropy_with_logits(logits, targets)
    return F.cross_entropy(logits, targets, weight=weights)


class _Inputs:
    """Model input for labelled rows: stored embeddings (frozen) or augmented images through the encoder."""

    def __init__(self, collection: Collection, encoder: Encoder | None, device: torch.device):
        self.collection, self.encoder, self.device = collection, encoder, device
        self.augment = Augment()
        self.stored = collection.embeddings if encoder is None else collection.images  # one memory map

    def _read(self, rows: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(read_rows(self.stored, rows)).to(self.device)

    @torch.no_grad()
    def features(self, rows: np.ndarray) -> torch.Tensor:
        """Un-augmented model input for ``rows``, in chunks, without gradients (for evaluation)."""
        return torch.cat(
            [self(rows[i : i + EVAL_CHUNK], False, None) for i in range(0, len(rows), EVAL_CHUNK)]
        )

    def __call__(self, rows: np.ndarray, train: bool, generator: torch.Generator | None) -> torch.Tensor:
        if self.encoder is None:
            return self._read(rows).float()
        x = self._read(rows).permute(0, 3, 1, 2).float().div_(255)
        if train:
            x = self.augment(x, generator)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            return self.encoder.model(self.encoder.prepare(x)).float()


def _parameter_groups(encoder: Encoder, config: FinetuneConfig) -> list[dict]:
    """Unfreeze the encoder's last ``config.unfreeze`` groups, with layer-wise decayed learning rates."""
    groups = layer_decay_groups(encoder.model, config.lr, config.layer_decay)
    if config.unfreeze > len(groups):
        raise GalsearchError(
            f"{encoder.architecture} has {len(groups)} parameter groups; cannot unfreeze {config.unfreeze}"
        )
    for p in encoder.model.parameters():
        p.requires_grad_(False)
    unfrozen = groups[-config.unfreeze :]
    for group in unfrozen:
        for p in group["params"]:
            p.requires_grad_(True)
    return unfrozen


def fit_head(
    collection: Collection,
    labels: Labels,
    config: FinetuneConfig = FinetuneConfig(),
    deadline: float | None = None,
    progress: bool = False,
) -> Head:
    """Train a head on ``labels`` (a validation part of them stops training, or, without early stopping,
    out-of-fold scores set the binary threshold); stops at ``deadline``."""
    config = config.resolved()
    if len(labels) < MIN_LABELS:
        raise GalsearchError(f"{len(labels)} labels are too few to train on: give at least {MIN_LABELS}")
    if config.early_stopping:
        train, val = _split(labels, config.val_fraction, config.seed)
    else:
        train, val = np.arange(len(labels)), None
    net, inputs, best = _train(collection, labels, config, train, val, deadline, progress)
    head = _head(collection, labels, config, net, inputs, best)
    if labels.task == "binary" and val is not None:
        positive = _scores(head, inputs, labels.rows[val])[:, 1]
        head.threshold = _threshold(positive, labels.targets[val], config.target_recall)
    elif labels.task == "binary":
        head.threshold = _out_of_fold_threshold(collection, labels, config, deadline)
    return head


def _head(
    collection: Collection,
    labels: Labels,
    config: FinetuneConfig,
    net: HeadNet,
    inputs: _Inputs,
    best: float | None,
) -> Head:
    """The head of a trained ``net``: what it predicts, for which encoder, and how it was trained."""
    return Head(
        net,
        config.head,
        labels.task,
        labels.classes,
        labels.columns,
        collection.encoder,
        inputs.encoder,
        training={"config": asdict(config), "labels": len(labels), "best_val_loss": best},
    )


def _out_of_fold_threshold(
    collection: Collection, labels: Labels, config: FinetuneConfig, deadline: float | None
) -> float:
    """The threshold reaching ``config.target_recall`` on binary labels, each scored by a head trained as
    the final one is (all labels, fixed epochs) on :data:`THRESHOLD_FOLDS` folds of the others (fewer
    when the positive class is smaller; 0.5 when a class has a single label)."""
    if np.bincount(labels.targets, minlength=2).min() < 2:
        return 0.5
    from .crossval import fold_splits  # crossval builds on this module

    positive = np.zeros(len(labels))
    for train, held in fold_splits(labels, THRESHOLD_FOLDS, config.seed)[0]:
        net, inputs, _ = _train(collection, labels, config, train, None, deadline, False)
        fold = _head(collection, labels, config, net, inputs, None)
        positive[held] = _scores(fold, inputs, labels.rows[held])[:, 1]
    return _threshold(positive, labels.targets, config.target_recall)


def _train(
    collection: Collection,
    labels: Labels,
    config: FinetuneConfig,
    train: np.ndarray,
    val: np.ndarray | None,
    deadline: float | None,
    progress: bool,
) -> tuple[HeadNet, _Inputs, float | None]:
    """A head net trained on label positions ``train``, its input (with its own encoder when unfrozen) and
    its best validation loss: trained until the loss on ``val`` stops improving (the best epoch kept),
    or for ``config.epochs`` without ``val``."""
    torch.manual_seed(config.seed)
    device = torch.device(config.device)
    encoder = None if config.frozen else encoder_of(collection, str(device))
    inputs = _Inputs(collection, encoder, device)
    outputs = output_count(labels.task, labels.classes, labels.columns)
    sample = inputs.features(labels.rows[train])
    net = HeadNet(config.head, sample.shape[1], outputs, sample.mean(0), sample.std(0)).to(device)
    weights = None
    if labels.task != "regress":
        counts = np.bincount(labels.targets[train], minlength=outputs).clip(min=1)
        weights = torch.tensor(len(train) / (outputs * counts), dtype=torch.float32, device=device)
    groups = [{"params": list(net.parameters()), "lr": config.lr}]
    if encoder is not None:
        groups += _parameter_groups(encoder, config)
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    targets = torch.from_numpy(np.array(labels.targets)).to(device)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    best, stale, best_state = math.inf, 0, None
    bar = tqdm(range(config.epochs), desc="fine-tuning", unit="epoch", disable=not progress)
    for _ in bar:
        net.train()
        if encoder is not None:
            train_mode(encoder.model, config.freeze_bn)
        for batch in np.array_split(
            rng.permutation(train), max(1, math.ceil(len(train) / config.batch_size))
        ):
            loss = _loss(
                labels.task, net(inputs(labels.rows[batch], True, generator)), targets[batch], weights
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if val is not None:
            val_loss = _evaluate_loss(net, encoder, inputs, labels, val, targets, weights)
            bar.set_postfix(val_loss=f"{val_loss:.3f}")
            if val_loss < best - MIN_IMPROVEMENT:
                best, stale = val_loss, 0
                best_state = copy.deepcopy(
                    (net.state_dict(), encoder.model.state_dict() if encoder else None)
                )
            else:
                stale += 1
        if stale >= config.patience or (deadline is not None and time.monotonic() > deadline):
            break
    bar.close()  # also when stopped early: the web page's progress tracking would read on from its iterator
    if best_state is not None:
        net.load_state_dict(best_state[0])
        if encoder is not None:
            encoder.model.load_state_dict(best_state[1])
    if encoder is not None:
        encoder.model.eval()
        for p in encoder.model.parameters():
            p.requires_grad_(False)
    net.eval()
    return net, inputs, best if val is not None else None


@torch.no_grad()
def _evaluate_loss(net, encoder, inputs, labels, val, targets, weights) -> float:
    net.eval()
    if encoder is not None:
        encoder.model.eval()
    logits = net(inputs.features(labels.rows[val]))
    return float(_loss(labels.task, logits, targets[val], weights))


@torch.no_grad()
def _scores(head: Head, inputs: _Inputs, rows: np.ndarray) -> np.ndarray:
    return head.scores(inputs.features(rows)).cpu().numpy()


def _threshold(scores: np.ndarray, truth: np.ndarray, target_recall: float) -> float:
    """The highest threshold on the positive probability whose recall reaches ``target_recall``."""
    if truth.sum() == 0:
        return 0.5
    _, tpr, thresholds = roc_curve(truth, scores)
    return float(min(thresholds[np.argmax(tpr >= target_recall)], 1.0))


# ---- evaluation ------------------------------------------------------------------------------------


def head_scores(head: Head, collection: Collection, rows: np.ndarray) -> np.ndarray:
    """The head's scores for the given rows of ``collection``."""
    device = next(head.net.buffers()).device
    return _scores(head, _Inputs(collection, head.encoder, device), np.asarray(rows))


def metrics(scores: np.ndarray, labels: Labels, threshold: float | np.ndarray | None = None) -> dict:
    """Accuracy, balanced accuracy, ROC AUC and confusion matrix (classes) or RMSE per column (regress).

    Binary labels are decided at ``threshold`` on the positive probability: one number (reported), or one
    per label (cross-validation: the threshold of the head that scored it).
    """
    truth = labels.targets
    if labels.task == "regress":
        rmse = np.sqrt(((scores - truth) ** 2).mean(axis=0))
        out = {f"rmse_{c}": float(v) for c, v in zip(labels.columns, rmse, strict=True)}
        return {"rmse": float(np.sqrt(((scores - truth) ** 2).mean())), **out, "n": len(truth)}
    predicted = scores.argmax(1)
    if labels.task == "binary":
        predicted = (scores[:, 1] >= threshold).astype(int)
    out = {
        "accuracy": float(accuracy_score(truth, predicted)),
        "balanced_accuracy": float(balanced_accuracy_score(truth, predicted)),
    }
    present = np.unique(truth)
    if len(present) == len(labels.classes):
        auc = (
            roc_auc_score(truth, scores[:, 1])
            if len(present) == 2
            else roc_auc_score(truth, scores, multi_class="ovr")
        )
        out["roc_auc"] = float(auc)
    if labels.task == "binary":
        tp = int(((predicted == 1) & (truth == 1)).sum())
        fp = int(((predicted == 1) & (truth == 0)).sum())
        if np.ndim(threshold) == 0:
            out["threshold"] = float(threshold)
        out["recall"] = tp / max(int((truth == 1).sum()), 1)
        out["false_discovery_rate"] = fp / max(tp + fp, 1)
    out["n"] = len(truth)
    out["confusion_matrix"] = confusion_matrix(truth, predicted, labels=range(len(labels.classes))).tolist()
    return out


def main_score(task: str, result: dict) -> float:
    """The number to maximise when comparing heads: balanced accuracy, or minus the RMSE."""
    return -result["rmse"] if task == "regress" else result["balanced_accuracy"]


# ---- the finetune command --------------------------------------------------------------------------


def finetune(
    collection: Collection,
    labels: Labels,
    config: FinetuneConfig = FinetuneConfig(),
    *,
    name: str | None = None,
    test_labels: Labels | None = None,
    test_fraction: float = 0.25,
    folds: int | None = None,
    auto_budget_s: float | None = None,
    plots: bool = True,
    progress: bool = False,
) -> FinetuneResult:
    """Train a head, measure it on held-out labels and, given a ``name``, save it as COLLECTION/heads/NAME.

    With ``folds`` the metrics are cross-validated instead (:func:`~.crossval.cross_validate`: every
    label predicted by a head trained on the other folds) and the head is trained on all the labels.
    With ``auto_budget_s`` the settings come from :func:`auto_tune` on the training labels, and the
    search plus the final training fit in that many seconds (cross-validation runs after, beyond the
    budget; its metrics are then slightly optimistic, the settings having been chosen on the same
    labels). Saved with the head: PNG plots (confusion matrix, ROC) and, for ``--auto``, every trial
    (``trials.csv``).
    """
    start = time.monotonic()
    folder = None if name is None else head_folder(collection, name)  # a bad name fails before training
    if folds is not None and test_labels is not None:
        raise GalsearchError("measure on test labels or by cross-validation (folds), not both")
    cross = folds is not None
    train, test = (labels, labels) if cross else _train_test(labels, test_labels, test_fraction, config.seed)
    trials, deadline = None, None
    if auto_budget_s:
        config, trials = auto_tune(
            collection, train, auto_budget_s, seed=config.seed, device=config.device, progress=progress
        )
        deadline = start + auto_budget_s
    head = fit_head(collection, train, config, deadline=deadline, progress=progress)
    out_of_fold, notes = None, []
    if cross:
        from .crossval import cross_validate  # crossval builds on this module

        validation = cross_validate(collection, labels, config, folds, progress)
        scores = out_of_fold = validation.scores
        notes = [validation.note] if validation.note else []
        head.metrics = dict(validation.metrics)
        if head.task == "binary":
            head.metrics["threshold"] = float(head.threshold)  # the saved head's, which predict applies
    else:
        scores = head_scores(head, collection, test.rows)
        head.metrics = metrics(scores, test, head.threshold)
    if folder is not None:
        head.save(folder)
        if trials is not None:
            trials.to_csv(folder / "trials.csv", index=False)
        if plots and head.task != "regress":
            from .plots import plot_confusion, plot_roc

            plot_confusion(head.metrics["confusion_matrix"], head.classes, folder / "confusion.png")
            plot_roc(scores, test.targets, head.classes, folder / "roc.png")
    seconds = time.monotonic() - start
    return FinetuneResult(head, head.metrics, folder, seconds, trials, auto_budget_s, out_of_fold, notes)


def _train_test(
    labels: Labels, test_labels: Labels | None, fraction: float, seed: int
) -> tuple[Labels, Labels]:
    if test_labels is not None:
        if (test_labels.task, test_labels.classes, test_labels.columns) != (
            labels.task,
            labels.classes,
            labels.columns,
        ):
            raise GalsearchError(
                f"the test labels have classes {test_labels.classes} (columns {test_labels.columns}); "
                f"the training labels {labels.classes} (columns {labels.columns})"
            )
        return labels, test_labels
    train, test = _split(labels, fraction, seed)
    return labels.subset(train), labels.subset(test)


def learning_curve(
    collection: Collection,
    labels: Labels,
    sizes: list[int],
    config: FinetuneConfig = FinetuneConfig(),
    *,
    draws: int = 5,
    test_labels: Labels | None = None,
    test_fraction: float = 0.25,
    progress: bool = False,
) -> pd.DataFrame:
    """Test metrics of heads trained on ``size`` labels per class (regression: in all), ``draws`` times."""
    pool, test = _train_test(labels, test_labels, test_fraction, config.seed)
    rows = []
    jobs = [(size, draw) for size in sizes for draw in range(draws)]
    for size, draw in tqdm(jobs, desc="learning curve", disable=not progress):
        rng = np.random.default_rng([config.seed, size, draw])
        if labels.task == "regress":
            chosen = rng.choice(len(pool), min(size, len(pool)), replace=False)
        else:
            chosen = np.concatenate(
                [
                    rng.permutation(np.flatnonzero(pool.targets == c))[:size]
                    for c in range(len(labels.classes))
                ]
            )
        head = fit_head(collection, pool.subset(chosen), replace(config, seed=config.seed + draw))
        result = metrics(head_scores(head, collection, test.rows), test, head.threshold)
        result.pop("confusion_matrix", None)
        rows.append({"labels_per_class": size, "draw": draw, "trained_on": len(chosen), **result})
    return pd.DataFrame(rows)


def summarize_curve(curve: pd.DataFrame, task: str) -> pd.DataFrame:
    """Mean and standard deviation of the main metric per label count."""
    column = "rmse" if task == "regress" else "balanced_accuracy"
    grouped = curve.groupby("labels_per_class")
    return pd.DataFrame(
        {
            "trained_on": grouped["trained_on"].mean(),
            f"{column}_mean": grouped[column].mean(),
            f"{column}_std": grouped[column].std(ddof=0),
        }
    ).reset_index()


# ---- --auto ----------------------------------------------------------------------------------------

AUTO_FROZEN = {"head": ("linear", "mlp"), "lr": (1e-3, 3e-3, 1e-2), "weight_decay": (1e-4, 1e-2, 1e-1)}
AUTO_UNFROZEN = {"unfreeze": (1, 2, 4), "lr": (1e-4, 3e-4), "weight_decay": (1e-2,)}


def auto_configs(seed: int) -> list[FinetuneConfig]:
    """The search space of ``--auto``: the cheapest setting (the default frozen linear head), the other
    frozen-head settings, then unfrozen ones."""
    frozen = [
        FinetuneConfig(head=h, lr=lr, weight_decay=wd, seed=seed)
        for h in AUTO_FROZEN["head"]
        for lr in AUTO_FROZEN["lr"]
        for wd in AUTO_FROZEN["weight_decay"]
    ]
    unfrozen = [
        FinetuneConfig(unfreeze=n, lr=lr, weight_decay=wd, seed=seed)
        for n in AUTO_UNFROZEN["unfreeze"]
        for lr in AUTO_UNFROZEN["lr"]
        for wd in AUTO_UNFROZEN["weight_decay"]
    ]
    cheapest = replace(FinetuneConfig(seed=seed), lr=FinetuneConfig().resolved().lr)  # the defaults
    frozen.remove(cheapest)
    rng = np.random.default_rng(seed)
    return [cheapest, *(frozen[i] for i in rng.permutation(len(frozen)))] + [
        unfrozen[i] for i in rng.permutation(len(unfrozen))
    ]


def auto_tune(
    collection: Collection,
    labels: Labels,
    budget_s: float,
    *,
    folds: int = 3,
    seed: int = 0,
    device: str | None = None,
    progress: bool = False,
) -> tuple[FinetuneConfig, pd.DataFrame]:
    """Cross-validate settings from :func:`auto_configs` until ``budget_s`` is spent; best config and trials.

    Leaves a quarter of the budget for training the chosen head; a trial whose folds would run past the
    budget is stopped and marked ``cut short``. The first, cheapest trial always runs to the end, so that
    a budget too small for this machine still gives a head (and the result says the budget was exceeded).
    """
    start = time.monotonic()
    search_end = start + 0.75 * budget_s
    from .crossval import fold_splits  # crossval builds on this module

    split, _ = fold_splits(labels, folds, seed)  # fewer folds when a class has fewer labels
    trials = []
    bar = tqdm(auto_configs(seed), desc="auto", unit="trial", disable=not progress)
    for config in bar:
        first = not trials
        if not first and time.monotonic() > search_end:
            break
        config = replace(config, device=device)
        trial_start, scores, cut = time.monotonic(), [], False
        for train, test in split:
            if not first and time.monotonic() > search_end:
                cut = True
                break
            deadline = None if first else search_end
            head = fit_head(collection, labels.subset(train), config, deadline=deadline)
            held = labels.subset(test)
            scores.append(
                main_score(
                    labels.task, metrics(head_scores(head, collection, held.rows), held, head.threshold)
                )
            )
        trials.append(
            {
                "head": config.head,
                "unfreeze": config.unfreeze,
                "lr": config.resolved().lr,
                "weight_decay": config.weight_decay,
                "cv_score": float(np.mean(scores)) if scores and not cut else float("nan"),
                "seconds": time.monotonic() - trial_start,
                "status": "cut short" if cut else "done",
            }
        )
    table = pd.DataFrame(trials)
    done = table[table["status"] == "done"]
    best = done.loc[done["cv_score"].idxmax()]
    config = FinetuneConfig(
        head=best["head"],
        unfreeze=int(best["unfreeze"]),
        lr=float(best["lr"]),
        weight_decay=float(best["weight_decay"]),
        seed=seed,
        device=device,
    )
    return config, table


# ---- predictions -----------------------------------------------------------------------------------


def predict(
    collection: Collection, head: str | Path, device: str | None = None, progress: bool = False
) -> list[str]:
    """Write the head's predictions for every galaxy as catalog columns; returns the column names.

    ``head`` is the name of a head saved in the collection, or a ``Path`` to a head folder.
    """
    folder = head_path(collection, head)
    name = folder.name
    loaded = load_head(folder, device)
    scores = loaded.predict_scores(collection, progress=progress)
    if loaded.task == "regress":
        columns = {f"{name}_{c}": scores[:, i] for i, c in enumerate(loaded.columns)}
    elif loaded.task == "binary":
        columns = {f"{name}_prob": scores[:, 1], name: scores[:, 1] >= loaded.threshold}
    else:
        columns = {
            name: np.array(loaded.classes, dtype=object)[scores.argmax(1)],
            f"{name}_prob": scores.max(1),
        }
        columns.update({f"{name}_prob_{c}": scores[:, i] for i, c in enumerate(loaded.classes)})
    with collection.writing():
        collection.set_columns(columns)
    return list(columns)
