"""Band mixers: how 3-band weights read N bands, where several bands feed one input (red from i, z and y).

A mixer is a (3, N) array, rows red, green and blue: each input of the 3-band encoder is that weighted sum
of the bands' [0, 1] pixels. ``encoders.adapt_bands`` folds it into the first convolution; ``embed``
measures one per collection (``calibrated_mixer``) and records it with the embeddings (``recorded_mixer``).
Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .display import WAVELENGTHS
from .errors import EncoderError

RGB = 3  # the band count of pretrained weights that are adapted to other band counts
RGB_BANDS = ("i", "r", "g")  # the filters 3-band weights are taken to see as red, green and blue
APERTURE = 8  # px: radius of the central aperture whose band sums give a galaxy's flux ratios
BORDER = 4  # px: width of the stamp's outer frame whose pixel differences give a band's noise


def band_channels(bands: list[str] | None) -> list[int] | None:
    """For each band, the input channel of 3-band weights (0 red, 1 green, 2 blue: the SDSS i, r and g bands
    of Galaxy Zoo's composites, on which the default encoder trained) nearest it in log wavelength
    (:data:`embedder.display.WAVELENGTHS`); None unless every band is a known filter and every channel
    gets one."""
    if bands is None or not all(b in WAVELENGTHS for b in bands):
        return None
    centres = np.log([WAVELENGTHS[b] for b in RGB_BANDS])
    nearest = [int(np.argmin(np.abs(np.log(WAVELENGTHS[b]) - centres))) for b in bands]
    return nearest if set(nearest) == {0, 1, 2} else None


def shares_inputs(bands: list[str] | None) -> bool:
    """Whether 3-band weights adapted to ``bands`` by wavelength (:func:`band_channels`) feed some input
    several bands (e.g. red: i, z and y), whose shares a band mixer then sets."""
    order = band_channels(bands)
    return order is not None and len(order) > len(set(order))


def calibrated_mixer(images: np.ndarray, bands: list[str]) -> np.ndarray:
    """The (3, N) band mixer for 3-band weights measured on uint8 (B, H, W, N) images of known filters
    ``bands`` (a sample of the collection to embed): each band feeds the input nearest it in wavelength
    (:func:`band_channels`), scaled to the level of the band of that input nearest its filter (by the
    median over galaxies of their central-aperture flux ratio), and the bands of an input are averaged
    with inverse-variance weights (noise from the differences of neighbouring pixels in the stamps'
    outer frame, in those scaled units): the coadd of highest signal-to-noise, with the colours of a
    typical galaxy those of the filters the weights were trained on."""
    order = band_channels(bands)
    if order is None or images.ndim != 4 or images.shape[-1] != len(bands):
        raise EncoderError(
            f"a calibrated band mixer needs (B, H, W, {len(bands)}) images of known filters that cover red, "
            f"green and blue; got images of shape {images.shape} and bands {list(bands)}"
        )
    yy, xx = np.mgrid[: images.shape[1], : images.shape[2]]
    centre = ((yy - (images.shape[1] - 1) / 2) ** 2 + (xx - (images.shape[2] - 1) / 2) ** 2) <= APERTURE**2
    flux = images[:, centre, :].astype(np.float64).sum(axis=1) + 1.0  # (B, N)
    frame = np.ones(images.shape[1:3], bool)
    if min(images.shape[1:3]) > 2 * BORDER:
        frame[BORDER:-BORDER, BORDER:-BORDER] = False
    pairs = frame[:, 1:] & frame[:, :-1]  # horizontal neighbours both in the frame
    steps = images[:, :, 1:][:, pairs].astype(np.float64) - images[:, :, :-1][:, pairs]
    noise = np.median(np.sqrt((steps**2).mean(axis=1) / 2), axis=0)  # (N,) per band
    log_wave = np.log([WAVELENGTHS[b] for b in bands])
    mixer = np.zeros((RGB, len(bands)))
    for c, filter_name in enumerate(RGB_BANDS):
        members = np.flatnonzero(np.array(order) == c)
        reference = members[np.argmin(np.abs(log_wave[members] - np.log(WAVELENGTHS[filter_name])))]
        scale = np.median(flux[:, [reference]] / flux[:, members], axis=0)
        weight = 1 / np.maximum(scale * noise[members], 1e-6) ** 2
        mixer[c, members] = scale * weight / weight.sum()
    return mixer


def recorded_mixer(fingerprint: dict | None) -> np.ndarray | None:
    """The band mixer folded into the encoder of ``fingerprint`` (an embedding record), if any."""
    mixer = ((fingerprint or {}).get("provenance") or {}).get("band_mixer")
    return None if mixer is None else np.asarray(mixer, dtype=np.float64)


@dataclass
class BandMixer:
    """What each input of a 3-band encoder reads: ``weights`` (3, N), rows red, green, blue, of ``bands``."""

    weights: np.ndarray
    bands: list[str]

    def rows(self) -> list[list[tuple[str, float]]]:
        """(band, weight) pairs of the red, green and blue inputs."""
        return [list(zip(self.bands, map(float, row), strict=True)) for row in self.weights]

    def __str__(self) -> str:
        """E.g. ``red = 0.70 i + 0.31 z + 0.08 y, green = 1.00 r, blue = 1.00 g``."""
        inputs = (" + ".join(f"{w:.2f} {band}" for band, w in row if w) for row in self.rows())
        return ", ".join(
            f"{colour} = {mix}" for colour, mix in zip(("red", "green", "blue"), inputs, strict=True)
        )
