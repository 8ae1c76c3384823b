"""Astronomical display stretches that turn raw fluxes into 8-bit images for display and encoders."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

StretchKind = Literal["asinh", "linear", "log", "sqrt"]
KINDS = ("asinh", "linear", "log", "sqrt")


@dataclass(frozen=True)
class Stretch:
    """Percentile clip followed by a stretch; ``a`` is the asinh/log softening parameter.

    With ``joint`` (the default) one clip interval is shared by all channels, which keeps the colours of
    multi-band images (as in Lupton et al. 2004); otherwise each channel is clipped on its own.
    """

    kind: StretchKind = "asinh"
    lower_percentile: float = 0.5
    upper_percentile: float = 99.5
    a: float = 0.1
    joint: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown stretch {self.kind!r}; choose one of {sorted(KINDS)}")
        if not 0 <= self.lower_percentile < self.upper_percentile <= 100:
            raise ValueError(
                f"percentiles must satisfy 0 <= lower < upper <= 100, got "
                f"{self.lower_percentile}, {self.upper_percentile}"
            )

    def __str__(self) -> str:
        softening = f" (a={self.a:g})" if self.kind in ("asinh", "log") else ""
        channels = "all channels together" if self.joint else "each channel"
        clip = f"{self.lower_percentile:g}-{self.upper_percentile:g} percentile clip of {channels}"
        return f"{self.kind}{softening} stretch after a {clip}"

    def to_dict(self) -> dict:
        """The stretch as a JSON-ready dict (stored in the collection manifest)."""
        return asdict(self)

    def _transform(self):
        from astropy.visualization import AsinhStretch, LinearStretch, LogStretch, SqrtStretch

        if self.kind == "asinh":
            return AsinhStretch(a=self.a)
        if self.kind == "log":
            return LogStretch(a=1 / self.a)
        return {"linear": LinearStretch, "sqrt": SqrtStretch}[self.kind]()

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Stretch an (H, W, C) float image into float32 values in [0, 1]."""
        from astropy.visualization import AsymmetricPercentileInterval

        interval = AsymmetricPercentileInterval(self.lower_percentile, self.upper_percentile)
        transform = self._transform()
        image = image.astype(np.float64)
        if self.joint:
            return transform(interval(image, clip=True), clip=True).astype(np.float32)
        out = np.empty(image.shape, dtype=np.float32)
        for c in range(image.shape[2]):
            out[..., c] = transform(interval(image[..., c], clip=True), clip=True)
        return out


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Quantise a float image in [0, 1] to uint8."""
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
