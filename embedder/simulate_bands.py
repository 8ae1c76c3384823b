"""Simulated multi-band galaxies (g, r, i, z, y by default) with spectra and bandpasses, drawn with GalSim.

A galaxy is built from the components of :mod:`galsearch.embedder.simulate` (bulge, disk, spiral arms,
ring...), each carrying the spectrum (SED) of its stellar population: one of GalSim's bundled
Coleman-Wu-Weedman
templates (E, Sbc, Scd, Im), redshifted to the galaxy's redshift. A component's flux in a band is its SED
integrated over the band's throughput: GalSim's bundled LSST curves, each cut where its neighbour's curve
takes over, so that the bands tile the spectrum without overlap. Each band has its own Moffat PSF (seeing
~ wavelength^-0.2) and Gaussian noise (deeper in g and r than in z and y). Images are float fluxes in
counts (r-band magnitude = ZERO_POINT - 2.5 log10 counts), channels in the order of ``bands``.

Classes come in three kinds (``KINDS``), each kind to be told apart on its own:

* ``shape``: elliptical, spiral, edge-on and ring galaxies with the same populations' spectra;
* ``colour``: spirals of the same shapes whose populations have other spectra (quenched to star-forming);
* ``zy``: spirals of the same shapes and spectra, one class with extra light beyond the i band
  (``ZY_EXCESS``: its z and y fluxes, and only those, multiplied by 1 + excess), like a dusty or
  high-redshift population whose colour shows only in the reddest bands.

Classes of one kind are twins: galaxy ``j`` of each draws the same shape, magnitude, redshift and PSF
(from ``(seed, kind, j)``); only its spectra and its noise (``(seed, class, j)``) differ. So galaxy ``j`` of
the two ``zy`` classes has the same g, r and i fluxes, and only a colour can tell the classes apart.
Galaxy ``index`` is galaxy ``index // len(classes)`` of class ``index % len(classes)``: it depends only on
(seed, index, size, bands).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path

import galsim
import numpy as np
import pandas as pd

from .simulate import PSF_FWHM_RANGE, RENDERERS, ZERO_POINT, draw, process_context

BANDS = ("g", "r", "i", "z", "y")
LSST_BANDS = ("u", "g", "r", "i", "z", "y")  # in wavelength order: neighbours share a cut
KINDS = ("shape", "colour", "zy")
NOISE_SIGMA = {"u": 0.35, "g": 0.18, "r": 0.2, "i": 0.25, "z": 0.35, "y": 0.5}  # counts per pixel
SEEING_SLOPE = -0.2  # PSF FWHM ~ wavelength ** SEEING_SLOPE
MAG_RANGE = (17.5, 20.5)  # r band
REDSHIFTS = np.round(np.arange(0.05, 0.301, 0.01), 2)  # a grid, so that band fluxes are cached
ZY_EXCESS = 1.0  # the zy_excess class: z and y fluxes doubled (0.75 mag redder i - z)
TEMPLATES = {"E": "CWW_E_ext.sed", "Sbc": "CWW_Sbc_ext.sed", "Scd": "CWW_Scd_ext.sed", "Im": "CWW_Im_ext.sed"}
# Each renderer's components in the order it returns them, by stellar population.
COMPONENTS = {
    "elliptical": ("old",),
    "spiral": ("old", "disk", "young"),
    "edge_on": ("disk", "old"),
    "ring": ("old", "young"),
}
POPULATIONS = {"old": "E", "disk": "Sbc", "young": "Im"}  # spectra of the shape and zy classes


@dataclass(frozen=True)
class BandClass:
    """A simulated class: its kind, morphology, the spectrum of each population, and any z/y excess."""

    name: str
    kind: str
    morphology: str
    populations: dict[str, str] = field(default_factory=lambda: dict(POPULATIONS))
    zy_excess: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS or self.morphology not in COMPONENTS:
            raise ValueError(
                f"class {self.name}: kind must be one of {KINDS} and morphology one of {tuple(COMPONENTS)}, "
                f"got {self.kind!r}, {self.morphology!r}"
            )
        spectra = {self.populations.get(p) for p in COMPONENTS[self.morphology]}
        if not spectra <= set(TEMPLATES) or self.zy_excess < 0:
            raise ValueError(
                f"class {self.name}: populations {self.populations} need spectra among {tuple(TEMPLATES)} "
                f"for {COMPONENTS[self.morphology]}, and a z/y excess >= 0 (got {self.zy_excess})"
            )


CLASSES = (
    BandClass("elliptical", "shape", "elliptical"),
    BandClass("spiral", "shape", "spiral"),
    BandClass("edge_on", "shape", "edge_on"),
    BandClass("ring", "shape", "ring"),
    BandClass("quenched", "colour", "spiral", {"old": "E", "disk": "E", "young": "Sbc"}),
    BandClass("star_forming", "colour", "spiral", {"old": "Sbc", "disk": "Scd", "young": "Im"}),
    BandClass("zy_normal", "zy", "spiral"),
    BandClass("zy_excess", "zy", "spiral", zy_excess=ZY_EXCESS),
)


@dataclass(frozen=True)
class BandGalaxy:
    """One simulated galaxy: a float32 flux image (H, W, bands) and its true properties."""

    index: int
    image: np.ndarray
    label: int  # index into the classes
    class_name: str
    kind: str
    twin: int  # galaxy ``twin`` of its class: classes of one kind share the shapes of equal twins
    fluxes: dict[str, float]  # true (noiseless) total flux per band, in counts
    redshift: float
    psf_fwhm: float  # r band, arcsec

    def columns(self) -> dict[str, int | float | str]:
        """The catalog columns of this galaxy (everything but the index and the image)."""
        return {
            "label": self.label,
            "class_name": self.class_name,
            "kind": self.kind,
            "twin": self.twin,
            "redshift": self.redshift,
            "psf_fwhm": self.psf_fwhm,
        } | {f"flux_{band}": flux for band, flux in self.fluxes.items()}


def simulate_band_galaxy(
    index: int,
    seed: int = 0,
    size: int = 64,
    bands: tuple[str, ...] = BANDS,
    classes: tuple[BandClass, ...] = CLASSES,
) -> BandGalaxy:
    """Draw galaxy ``index`` of ``seed`` in ``bands`` on a ``size`` x ``size`` stamp."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    if unknown := [b for b in bands if b not in LSST_BANDS]:
        raise ValueError(f"unknown bands {unknown}: choose among {', '.join(LSST_BANDS)}")
    label, twin = index % len(classes), index // len(classes)
    cls = classes[label]
    rng = np.random.default_rng([seed, KINDS.index(cls.kind), twin])  # the same for twins
    mag = rng.uniform(*MAG_RANGE)
    redshift = float(rng.choice(REDSHIFTS))
    components = RENDERERS[cls.morphology](rng, 10 ** (-0.4 * (mag - ZERO_POINT)))
    fwhm = rng.uniform(*PSF_FWHM_RANGE)
    offset = rng.uniform(-0.5, 0.5, 2)
    image = np.zeros((size, size, len(bands)))
    totals = np.zeros(len(bands))
    populations = COMPONENTS[cls.morphology]
    for (profile, _), population in zip(components, populations, strict=True):
        template = cls.populations[population]
        r_flux = profile.flux
        for k, band in enumerate(bands):
            flux = (
                r_flux
                * band_flux(template, redshift, band, cls.zy_excess)
                / band_flux(template, redshift, "r")
            )
            psf = galsim.Moffat(beta=3.5, fwhm=fwhm * (_wavelength(band) / _wavelength("r")) ** SEEING_SLOPE)
            image[..., k] += draw(galsim.Convolve(profile.withFlux(flux), psf), size, offset)
            totals[k] += flux
    noise = np.random.default_rng([seed, 100 + label, twin])
    sigma = np.array([NOISE_SIGMA[b] for b in bands]) * noise.uniform(0.8, 1.25)
    image += noise.normal(size=image.shape) * sigma
    return BandGalaxy(
        index,
        image.astype(np.float32),
        label,
        cls.name,
        cls.kind,
        twin,
        dict(zip(bands, totals.tolist(), strict=True)),
        redshift,
        fwhm,
    )


def simulate_bands(
    n: int,
    seed: int = 0,
    size: int = 64,
    bands: tuple[str, ...] = BANDS,
    classes: tuple[BandClass, ...] = CLASSES,
    workers: int = 2,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Galaxies 0 .. ``n``-1 of ``seed``: float32 images (n, size, size, bands) and their catalog (``id``
    ``band-SEED-INDEX`` and :meth:`BandGalaxy.columns`)."""
    images = np.empty((n, size, size, len(bands)), np.float32)
    rows = []
    for galaxy in simulate_band_galaxies(n, seed, size, bands, classes, workers):
        images[galaxy.index] = galaxy.image
        rows.append({"id": f"band-{seed}-{galaxy.index:06d}"} | galaxy.columns())
    return images, pd.DataFrame(rows)


def simulate_band_galaxies(
    n: int,
    seed: int = 0,
    size: int = 64,
    bands: tuple[str, ...] = BANDS,
    classes: tuple[BandClass, ...] = CLASSES,
    workers: int = 2,
) -> Iterator[BandGalaxy]:
    """Yield galaxies 0 .. ``n``-1 of ``seed`` in order (classes interleaved), drawn by ``workers``
    processes."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    draw = partial(simulate_band_galaxy, seed=seed, size=size, bands=tuple(bands), classes=tuple(classes))
    if workers <= 1 or n < 4 * workers:
        yield from map(draw, range(n))
        return
    with process_context().Pool(workers) as pool:
        yield from pool.imap(draw, range(n), chunksize=8)


@cache
def bandpass(band: str) -> galsim.Bandpass:
    """The LSST throughput of ``band``, cut where its neighbours' curves cross it (bands do not overlap)."""
    k = LSST_BANDS.index(band)
    curve = _lsst(band)
    blue = _crossing(LSST_BANDS[k - 1], band) if k > 0 else None
    red = _crossing(band, LSST_BANDS[k + 1]) if k + 1 < len(LSST_BANDS) else None
    return curve.truncate(blue_limit=blue, red_limit=red)


@cache
def band_flux(template: str, redshift: float, band: str, zy_excess: float = 0.0) -> float:
    """Photon flux of the ``template`` spectrum at ``redshift`` through ``band``; with ``zy_excess``, the
    spectrum has 1 + zy_excess times the light beyond the i band's red cut (the z and y bands)."""
    sed = galsim.SED(str(_share("SEDs", TEMPLATES[template])), wave_type="ang", flux_type="flambda")
    sed = sed.atRedshift(redshift)
    if zy_excess:
        cut = _crossing("i", "z")
        step = galsim.LookupTable(
            [100.0, cut, cut + 1e-3, 3000.0], [1.0, 1.0, 1 + zy_excess, 1 + zy_excess], interpolant="linear"
        )
        sed = sed * galsim.SED(step, wave_type="nm", flux_type="1")
    return float(sed.calculateFlux(bandpass(band)))


def _share(*parts: str) -> Path:
    return Path(galsim.meta_data.share_dir, *parts)


@cache
def _lsst(band: str) -> galsim.Bandpass:
    return galsim.Bandpass(str(_share("bandpasses", f"LSST_{band}.dat")), wave_type="nm")


@cache
def _crossing(blue: str, red: str) -> float:
    """The wavelength (nm, 0.5 nm steps) where the throughputs of two neighbouring LSST bands cross."""
    a, b = _lsst(blue), _lsst(red)
    wave = np.arange(b.blue_limit, a.red_limit, 0.5)
    difference = a(wave) - b(wave)
    return float(wave[np.flatnonzero(np.diff(np.sign(difference)))[0]])


@cache
def _wavelength(band: str) -> float:
    return float(bandpass(band).effective_wavelength)
