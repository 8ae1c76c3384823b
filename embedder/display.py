"""Which stored bands a picture shows as red, green and blue, and the pictures themselves.

A collection's display mapping names three of its bands (``manifest["display"]["rgb"]``, else
:func:`default_rgb`). The stored channels are already on one asinh scale across every band (the Lupton et al.
2004 stretch of ingest, :mod:`galsearch.embedder.stretch`), which keeps each pixel's band ratios, so the
composite of three bands is those three stored channels: no second stretch.

Effective wavelengths (nm) order the bands, blue to red; they are rounded, since only the order is used:

- u g r i z y: one value per letter for SDSS, Pan-STARRS1, DECam (Legacy Surveys), HSC and LSST, whose
  filters of one letter differ by less than 4 % (Fukugita et al. 1996, AJ 111, 1748; Tonry et al. 2012,
  ApJ 750, 99; LSST SMTN-002, https://smtn-002.lsst.io);
- Y J H K: UKIRT/VISTA near-infrared (Hewett et al. 2006, MNRAS 367, 454);
- VIS, NISP_Y, NISP_J, NISP_H: Euclid's bands (I_E, Y_E, J_E, H_E in Euclid's papers) named as IRSA's
  Euclid archive names them (instrument_bandpass), at the centres of their passbands (Euclid
  Collaboration: Cropper et al. 2025, A&A 697, A2; Schirmer et al. 2022, A&A 662, A92).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import CollectionError

WAVELENGTHS: dict[str, float] = {
    "u": 355.0,
    "g": 475.0,
    "r": 620.0,
    "i": 760.0,
    "z": 890.0,
    "y": 970.0,
    "Y": 1030.0,
    "J": 1250.0,
    "H": 1630.0,
    "K": 2200.0,
    "VIS": 725.0,
    "NISP_Y": 1080.0,
    "NISP_J": 1370.0,
    "NISP_H": 1770.0,
}


def fallback_bands(channels: int) -> list[str]:
    """The names of unnamed channels: L for one, R G B for three, else band0, band1 ..."""
    if channels == 1:
        return ["L"]
    return ["R", "G", "B"] if channels == 3 else [f"band{i}" for i in range(channels)]


def default_rgb(bands: Sequence[str]) -> list[str]:
    """The bands shown as (red, green, blue) when none are chosen.

    One band is shown in grey (the band three times). Bands that are all known filters are ordered by
    wavelength and the reddest, the middle one (index (N-1)//2 from the blue end) and the bluest are taken:
    griz gives z, r, g and grizy gives y, i, g. Otherwise the stored order stands for red to blue: the first,
    middle and last bands (three bands: channels 0, 1, 2 as R, G, B).
    """
    bands = [str(b) for b in bands]
    if not bands:
        raise CollectionError("a collection has at least one band; got none")
    if all(b in WAVELENGTHS for b in bands):
        ordered = sorted(bands, key=WAVELENGTHS.__getitem__)
        return [ordered[-1], ordered[(len(ordered) - 1) // 2], ordered[0]]
    return [bands[0], bands[(len(bands) - 1) // 2], bands[-1]]


def rgb_channels(bands: Sequence[str], rgb: Sequence[str]) -> tuple[int, int, int]:
    """The stored channel numbers of the bands ``rgb`` (red, green, blue) among ``bands``."""
    bands = [str(b) for b in bands]
    if isinstance(rgb, str) or len(rgb) != 3:
        raise CollectionError(f"a display names 3 bands (red, green, blue), got {rgb!r}")
    unknown = [str(b) for b in rgb if str(b) not in bands]
    if unknown:
        named = ", ".join(map(repr, unknown))
        raise CollectionError(f"no band {named} in this collection; its bands: {bands}")
    red, green, blue = (bands.index(str(b)) for b in rgb)
    return red, green, blue


def composite(images: np.ndarray, channels: Sequence[int]) -> np.ndarray:
    """The uint8 picture (..., H, W, 3) of stored images (..., H, W, C) showing ``channels`` as R, G, B."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim < 3:
        raise CollectionError(f"stored images are uint8 (..., H, W, C), got {images.dtype} {images.shape}")
    picked = [int(c) for c in channels]
    if len(picked) != 3 or not all(0 <= c < images.shape[-1] for c in picked):
        raise CollectionError(f"channels must be 3 of 0..{images.shape[-1] - 1}, got {list(channels)}")
    return np.ascontiguousarray(images[..., picked])
