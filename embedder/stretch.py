"""Astronomical display stretches that turn raw fluxes into 8-bit images for display and encoders."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
from astropy.visualization import (
    AsinhStretch,
    AsymmetricPercentileInterval,
    LinearStretch,
    LogStretch,
    SqrtStretch,
)

StretchKind = Literal["asinh", "linear", "log", "sqrt"]
_STRETCHES = {"asinh": AsinhStretch, "linear": LinearStretch, "log": LogStretch, "sqrt": SqrtStretch}


@dataclass(frozen=True)
class Stretch:
    """Per-channel percentile clip followed by a stretch; ``a`` is the asinh/log softening parameter."""

    kind: StretchKind = "asinh"
    lower_percentile: float = 0.5
    upper_percentile: float = 99.5
    a: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in _STRETCHES:
            raise ValueError(f"unknown stretch {self.kind!r}; choose one of {sorted(_STRETCHES)}")
        if not 0 <= self.lower_percentile < self.upper_percentile <= 100:
            raise ValueError(
                f"percentiles must satisfy 0 <= lower < upper <= 100, got "
                f"{self.lower_percentile}, {self.upper_percentile}"
            )

    def to_dict(self) -> dict:
        """The stretch as a JSON-ready dict (stored in the collection manifest)."""
        return asdict(self)

    def _transform(self):
        if self.kind == "asinh":
            return AsinhStretch(a=self.a)
        if self.kind == "log":
            return LogStretch(a=1 / self.a)
        return _STRETCHES[self.kind]()

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Stretch an (H, W, C) float image channel by channel into float32 values in [0, 1]."""
        interval = AsymmetricPercentileInterval(self.lower_percentile, self.upper_percentile)
        transform = self._transform()
        out = np.empty(image.shape, dtype=np.float32)
        for c in range(image.shape[2]):
            band = image[..., c].astype(np.float64)
            out[..., c] = transform(interval(band, clip=True), clip=True)
        return out


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Quantise a float image in [0, 1] to uint8."""
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
