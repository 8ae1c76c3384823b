"""Astronomical display stretches that turn raw fluxes into 8-bit images for display and encoders.

The default, ``lupton``, is the colour-preserving asinh stretch of Lupton et al. (2004, PASP 116, 133)
for any number of bands: the asinh curve is applied to the mean of the bands, and every band of a pixel is
scaled by the same factor, so the ratios of band fluxes at a pixel (its colour) survive the stretch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

StretchKind = Literal["lupton", "asinh", "linear", "log", "sqrt"]
KINDS = ("lupton", "asinh", "linear", "log", "sqrt")


@dataclass(frozen=True)
class Stretch:
    """Percentile clip followed by a stretch; ``a`` is the asinh/log softening parameter.

    ``lupton`` (the default) scales the intensity I, the mean of the bands, from a black point (its lower
    percentile, or 0 when that is negative, as for sky-subtracted fluxes) to its upper percentile, and
    multiplies every band by f(I)/I with f the asinh curve; a pixel whose brightest band would exceed the
    top of the scale is divided by that band's value, so bright pixels keep their hue. The ratios of
    band fluxes above the black point survive.
    The other kinds stretch every pixel value alike: with ``joint`` one clip interval is shared by all
    channels, which keeps their order of brightness but not their ratios.

    ``joint=False`` stretches each channel on its own (its own clip interval, for ``lupton`` the asinh
    of that channel): every band then fills the 8-bit range, which erases colour; only on request.
    ``band_scales`` multiplies each band's flux (stored channel order) before anything else: per-band
    zero points that put the bands on one flux scale (default: all 1).
    """

    kind: StretchKind = "lupton"
    lower_percentile: float = 0.5
    upper_percentile: float = 99.5
    a: float = 0.1
    joint: bool = True
    band_scales: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown stretch {self.kind!r}; choose one of {sorted(KINDS)}")
        if not 0 <= self.lower_percentile < self.upper_percentile <= 100:
            raise ValueError(
                f"percentiles must satisfy 0 <= lower < upper <= 100, got "
                f"{self.lower_percentile}, {self.upper_percentile}"
            )
        if self.kind in ("lupton", "asinh", "log") and not self.a > 0:
            raise ValueError(f"the softening a must be positive, got {self.a}")
        if self.band_scales is not None:
            scales = tuple(float(s) for s in self.band_scales)
            if not scales or not all(math.isfinite(s) and s > 0 for s in scales):
                raise ValueError(
                    f"band scales must be positive numbers, one per band; got {self.band_scales}"
                )
            object.__setattr__(self, "band_scales", scales)

    def __str__(self) -> str:
        softening = f" (a={self.a:g})" if self.kind in ("lupton", "asinh", "log") else ""
        clip = f"{self.lower_percentile:g}-{self.upper_percentile:g} percentile clip"
        if not self.joint:
            text = f"{self.kind}{softening} stretch after a {clip} of each channel"
        elif self.kind == "lupton":
            text = f"lupton{softening} stretch keeping band ratios, after a {clip} of the mean of the bands"
        else:
            text = f"{self.kind}{softening} stretch after a {clip} of all channels together"
        if self.band_scales is not None:
            text += f", bands scaled by {', '.join(f'{s:g}' for s in self.band_scales)}"
        return text

    def to_dict(self) -> dict:
        """The stretch as a JSON-ready dict (stored in the collection manifest)."""
        fields = asdict(self)
        if self.band_scales is not None:
            fields["band_scales"] = list(self.band_scales)
        return fields

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Stretch an (H, W, C) float image into float32 values in [0, 1]."""
        image = image.astype(np.float64)
        if self.band_scales is not None:
            if len(self.band_scales) != image.shape[2]:
                raise ValueError(
                    f"{len(self.band_scales)} band scales for an image of {image.shape[2]} band(s)"
                )
            image = image * np.asarray(self.band_scales)
        if self.joint:
            return self._stretch(image)
        return np.concatenate([self._stretch(image[..., [c]]) for c in range(image.shape[2])], axis=2)

    def _stretch(self, image: np.ndarray) -> np.ndarray:
        """The stretch of all the channels of an (H, W, C) float64 image together, as float32."""
        from astropy.visualization import AsymmetricPercentileInterval

        interval = AsymmetricPercentileInterval(self.lower_percentile, self.upper_percentile)
        if self.kind != "lupton":
            return self._transform()(interval(image, clip=True), clip=True).astype(np.float32)
        intensity = image.mean(axis=2)
        low, high = interval.get_limits(intensity)
        low = max(low, 0.0)  # sky-subtracted fluxes scatter below 0: black stays 0, so band ratios stay
        if not high > low:  # no intensity above the black point in the clip percentiles: use its range
            low, high = float(intensity.min()), float(intensity.max())
        scaled = (image - low) / ((high - low) or 1.0)
        level = scaled.mean(axis=2)
        stretched = np.arcsinh(np.clip(level, 0, None) / self.a) / np.arcsinh(1 / self.a)
        factor = np.divide(stretched, level, out=np.zeros_like(level), where=level > 0)
        out = np.clip(scaled * factor[..., None], 0, None)
        peak = out.max(axis=2, keepdims=True)
        return np.divide(out, peak, out=out, where=peak > 1).astype(np.float32)

    def _transform(self):
        from astropy.visualization import AsinhStretch, LinearStretch, LogStretch, SqrtStretch

        if self.kind == "asinh":
            return AsinhStretch(a=self.a)
        if self.kind == "log":
            return LogStretch(a=1 / self.a)
        return {"linear": LinearStretch, "sqrt": SqrtStretch}[self.kind]()


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Quantise a float image in [0, 1] to uint8."""
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
