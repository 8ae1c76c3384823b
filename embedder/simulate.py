"""Simulated three-band galaxy images of known morphology, drawn with GalSim, for the demo and for tests.

Every galaxy is built from components (bulge, disk, spiral arms, star-forming knots, ring, lensed arcs...),
each with the colour of its stellar population: bulges are red, disks bluer, star-forming regions bluest.
Each component is convolved with a Moffat PSF of random width, drawn at 0.2"/pixel, coloured and summed;
Gaussian pixel noise is added last. Channels are ordered (i, r, g) so that an image displays as RGB.

A galaxy depends only on (seed, index): the same galaxy comes out whatever ``n`` or the number of
worker processes. Classes follow a golden-ratio sequence over the index, so any run of ``n`` consecutive
galaxies holds close to ``FRACTIONS`` of each class (the rare classes included) and they are interleaved.
"""

from __future__ import annotations

import math
import multiprocessing
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

import galsim
import numpy as np

CLASSES = ("elliptical", "spiral", "edge_on", "clumpy", "compact", "ring", "merger", "lens")
FRACTIONS = (0.30, 0.30, 0.15, 0.12, 0.10, 0.01, 0.01, 0.01)
BANDS = ("i", "r", "g")
PIXEL_SCALE = 0.2  # arcsec per pixel
ZERO_POINT = 27.0  # mag = ZERO_POINT - 2.5 log10(total r-band flux in counts)
NOISE_SIGMA = np.array([0.25, 0.2, 0.18])  # counts per pixel in (i, r, g)
PSF_FWHM_RANGE = (0.55, 1.0)  # arcsec
MAG_RANGE = {
    "elliptical": (17.5, 21.0),
    "spiral": (17.0, 21.0),
    "edge_on": (17.5, 21.0),
    "clumpy": (17.5, 21.0),
    "compact": (18.0, 21.5),
    "ring": (17.0, 20.0),
    "merger": (17.0, 20.5),
    "lens": (17.0, 19.5),
}

# Flux per band (i, r, g) relative to r of the stellar populations: g-r ~ 0.75, 0.35 and 0 mag.
RED = np.array([1.45, 1.0, 0.50])
DISK = np.array([1.15, 1.0, 0.72])
BLUE = np.array([0.95, 1.0, 1.0])
SERSIC_N = (2.5, 3.0, 3.5, 4.0, 4.5, 5.0)  # a few fixed indices: GalSim caches each one's tables
FINE_SCALE = PIXEL_SCALE / 2  # arcsec per pixel of the numpy-drawn components
FINE_SIDE = 128
GOLDEN = (math.sqrt(5) - 1) / 2

Component = tuple[galsim.GSObject, np.ndarray]  # a profile carrying its r-band flux, and its colour


@dataclass(frozen=True)
class SimulatedGalaxy:
    """One simulated galaxy: a float32 flux image (H, W, 3) in bands (i, r, g) and its true properties."""

    index: int
    image: np.ndarray
    label: int  # index into CLASSES
    class_name: str
    mag: float  # r band, from the total flux with ZERO_POINT
    hlr_arcsec: float  # r-band half-light radius, the PSF's removed in quadrature (approximate)
    psf_fwhm: float  # arcsec

    def columns(self) -> dict[str, int | float | str]:
        """The catalog columns of this galaxy (everything but the index and the image)."""
        return {
            "label": self.label,
            "class_name": self.class_name,
            "mag": self.mag,
            "hlr_arcsec": self.hlr_arcsec,
            "psf_fwhm": self.psf_fwhm,
        }


def simulate_galaxies(
    n: int, seed: int = 0, size: int = 64, workers: int = 2, start: int = 0
) -> Iterator[SimulatedGalaxy]:
    """Yield galaxies ``start`` .. ``n``-1 of ``seed`` in order, drawn by ``workers`` processes."""
    if n < 0 or start < 0:
        raise ValueError(f"n and start must be >= 0, got n={n}, start={start}")
    draw = partial(simulate_galaxy, seed=seed, size=size)
    indices = range(start, n)
    if workers <= 1 or len(indices) < 4 * workers:
        yield from map(draw, indices)
        return
    with process_context().Pool(workers) as pool:
        yield from pool.imap(draw, indices, chunksize=16)


def process_context() -> multiprocessing.context.BaseContext:
    """Fork on Linux, so workers start at once (a spawned one re-imports ``embedder``, torch included)."""
    return multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")


def simulate_galaxy(index: int, seed: int = 0, size: int = 64) -> SimulatedGalaxy:
    """Draw galaxy ``index`` of ``seed`` on a ``size`` x ``size`` stamp."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    rng = np.random.default_rng([seed, index])
    label = class_of(index, seed)
    mag = rng.uniform(*MAG_RANGE[CLASSES[label]])
    components = RENDERERS[CLASSES[label]](rng, 10 ** (-0.4 * (mag - ZERO_POINT)))
    psf = galsim.Moffat(beta=3.5, fwhm=rng.uniform(*PSF_FWHM_RANGE))
    offset = rng.uniform(-0.5, 0.5, 2)
    image = np.zeros((size, size, 3))
    for profile, colour in components:
        image += draw(galsim.Convolve(profile, psf), size, offset)[..., None] * colour
    observed = _half_light_radius(image[..., 1])
    psf_only = _half_light_radius(draw(psf, size, offset))
    hlr = math.sqrt(max(observed**2 - psf_only**2, 0.0)) * PIXEL_SCALE
    image += rng.normal(size=image.shape) * NOISE_SIGMA * rng.uniform(0.8, 1.25)
    return SimulatedGalaxy(index, image.astype(np.float32), label, CLASSES[label], float(mag), hlr, psf.fwhm)


def class_of(index: int, seed: int = 0) -> int:
    """The class label of galaxy ``index`` of ``seed`` (a golden-ratio sequence through ``FRACTIONS``)."""
    start = np.random.default_rng(seed).random()
    position = (start + index * GOLDEN) % 1.0
    return min(int(np.searchsorted(np.cumsum(FRACTIONS), position, side="right")), len(CLASSES) - 1)


def draw(profile: galsim.GSObject, size: int, offset: np.ndarray) -> np.ndarray:
    """The profile drawn on a ``size`` x ``size`` stamp at the survey pixel scale."""
    return profile.drawImage(nx=size, ny=size, scale=PIXEL_SCALE, offset=tuple(offset)).array


def _half_light_radius(image: np.ndarray) -> float:
    """Radius in pixels around the light centroid of a noiseless image that holds half its flux."""
    y, x = np.indices(image.shape)
    total = image.sum()
    cx, cy = (x * image).sum() / total, (y * image).sum() / total
    radius = np.hypot(x - cx, y - cy).ravel()
    order = np.argsort(radius)
    cumulative = np.cumsum(image.ravel()[order])
    return float(radius[order][np.searchsorted(cumulative, total / 2)])


# ---- components ------------------------------------------------------------------------------------


def _angle(rng: np.random.Generator) -> galsim.Angle:
    return rng.uniform(0, math.pi) * galsim.radians


def _tint(colour: np.ndarray, rng: np.random.Generator, scatter: float = 0.08) -> np.ndarray:
    """The colour with a random per-galaxy scatter, still normalised to r = 1."""
    tinted = colour * np.exp(rng.normal(0, scatter, 3))
    return tinted / tinted[1]


def _fine_grid(side: int = FINE_SIDE, scale: float = FINE_SCALE) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) in arcsec of the pixel centres of a ``side`` x ``side`` grid centred on the origin."""
    axis = (np.arange(side) - (side - 1) / 2) * scale
    return np.meshgrid(axis, axis)


def _from_array(
    pixels: np.ndarray,
    flux: float,
    q: float = 1.0,
    beta: galsim.Angle | None = None,
    scale: float = FINE_SCALE,
) -> galsim.GSObject:
    """A face-on light distribution on a fine grid as a profile, inclined to axis ratio ``q`` at ``beta``."""
    profile = galsim.InterpolatedImage(galsim.Image(pixels, scale=scale), flux=flux)
    return profile.shear(q=q, beta=beta).dilate(math.sqrt(q)) if q < 1 else profile


def _inclined_disk(
    rng: np.random.Generator, hlr: float, inclination: float, pa: galsim.Angle, flux: float
) -> galsim.GSObject:
    """A thick exponential disk of face-on half-light radius ``hlr`` seen at ``inclination`` degrees."""
    disk = galsim.InclinedExponential(
        inclination * galsim.degrees, half_light_radius=hlr, scale_h_over_r=rng.uniform(0.06, 0.15), flux=flux
    )
    return disk.rotate(pa)


def _bulge(rng: np.random.Generator, hlr: float, flux: float, pa: galsim.Angle) -> galsim.GSObject:
    return galsim.DeVaucouleurs(half_light_radius=hlr, flux=flux).shear(q=rng.uniform(0.7, 1.0), beta=pa)


def _elliptical(rng: np.random.Generator, flux: float) -> list[Component]:
    n = float(rng.choice(SERSIC_N))
    profile = galsim.Sersic(n=n, half_light_radius=rng.uniform(0.4, 1.5), flux=flux)
    return [(profile.shear(q=rng.uniform(0.45, 1.0), beta=_angle(rng)), _tint(RED, rng))]


def _spiral_arms(rng: np.random.Generator, scale_radius: float) -> np.ndarray:
    """A face-on logarithmic spiral pattern of 2 or 3 arms on an exponential disk, empty at the centre."""
    x, y = _fine_grid()
    radius = np.hypot(x, y) + 1e-3
    pitch = np.radians(rng.uniform(12, 30))
    arms = int(rng.choice([2, 2, 3]))
    winding = arms * (np.arctan2(y, x) - rng.choice([-1, 1]) * np.log(radius / scale_radius) / np.tan(pitch))
    pattern = ((1 + np.cos(winding + rng.uniform(0, 2 * np.pi))) / 2) ** rng.uniform(2, 5)
    return np.exp(-radius / scale_radius) * pattern * (1 - np.exp(-((radius / scale_radius) ** 2)))


def _spiral(rng: np.random.Generator, flux: float) -> list[Component]:
    hlr, inclination, pa = rng.uniform(1.0, 2.4), rng.uniform(0, 70), _angle(rng)
    bulge_flux = flux * rng.uniform(0.1, 0.35)
    arm_flux = (flux - bulge_flux) * rng.uniform(0.45, 0.75)
    disk_flux = flux - bulge_flux - arm_flux
    arms = _spiral_arms(rng, hlr / 1.678)
    q = math.cos(math.radians(inclination))
    return [
        (_bulge(rng, hlr * rng.uniform(0.15, 0.35), bulge_flux, pa), _tint(RED, rng)),
        (_inclined_disk(rng, hlr, inclination, pa, disk_flux), _tint(DISK, rng)),
        (_from_array(arms, arm_flux, q, pa), _tint(BLUE, rng)),
    ]


def _edge_on(rng: np.random.Generator, flux: float) -> list[Component]:
    hlr, pa = rng.uniform(0.6, 1.8), _angle(rng)
    bulge_flux = flux * rng.uniform(0.0, 0.25)
    disk = _inclined_disk(rng, hlr, rng.uniform(80, 90), pa, flux - bulge_flux)
    bulge = _bulge(rng, hlr * rng.uniform(0.15, 0.3), bulge_flux, pa)
    return [(disk, _tint(DISK, rng)), (bulge, _tint(RED, rng))]


def _clumpy(rng: np.random.Generator, flux: float) -> list[Component]:
    hlr, inclination, pa = rng.uniform(0.8, 1.8), rng.uniform(0, 60), _angle(rng)
    knot_flux = flux * rng.uniform(0.4, 0.7)
    q = math.cos(math.radians(inclination))
    knots = galsim.RandomKnots(
        int(rng.integers(4, 16)),
        half_light_radius=hlr,
        flux=knot_flux,
        rng=galsim.BaseDeviate(int(rng.integers(1, 2**31))),
    )
    knots = galsim.Convolve(knots, galsim.Gaussian(sigma=rng.uniform(0.03, 0.12)))
    return [
        (_inclined_disk(rng, hlr, inclination, pa, flux - knot_flux), _tint(DISK, rng)),
        (knots.shear(q=q, beta=pa).dilate(math.sqrt(q)), _tint(BLUE, rng)),
    ]


def _compact(rng: np.random.Generator, flux: float) -> list[Component]:
    colour = _tint(RED + rng.uniform() * (BLUE - RED), rng)
    if rng.uniform() < 0.5:
        return [(galsim.DeltaFunction(flux=flux), colour)]
    profile = galsim.Exponential(half_light_radius=rng.uniform(0.05, 0.2), flux=flux)
    return [(profile.shear(q=rng.uniform(0.6, 1.0), beta=_angle(rng)), colour)]


def _ring(rng: np.random.Generator, flux: float) -> list[Component]:
    """A red bulge inside a clumpy blue star-forming ring (radius 1.3-2.5")."""
    x, y = _fine_grid()
    radius, angle = np.hypot(x, y), np.arctan2(y, x)
    ring_radius = rng.uniform(1.3, 2.5)
    width = ring_radius * rng.uniform(0.08, 0.16)
    phases = rng.uniform(0, 2 * np.pi, 2)
    clumps = (1 + 0.5 * np.cos(3 * angle + phases[0])) * (1 + 0.4 * np.cos(5 * angle + phases[1]))
    ring = np.exp(-0.5 * ((radius - ring_radius) / width) ** 2) * clumps
    bulge_flux = flux * rng.uniform(0.3, 0.55)
    pa = _angle(rng)
    return [
        (_bulge(rng, rng.uniform(0.2, 0.45), bulge_flux, pa), _tint(RED, rng)),
        (_from_array(ring, flux - bulge_flux, rng.uniform(0.6, 1.0), pa), _tint(BLUE, rng)),
    ]


def _tidal_tail(rng: np.random.Generator, start: np.ndarray, direction: float) -> np.ndarray:
    """A curved, fading stream of light leaving ``start`` (arcsec) towards ``direction`` (radians)."""
    t = np.linspace(0, 1, 60)[:, None]
    length, curl = rng.uniform(2.0, 4.0), rng.choice([-1, 1]) * rng.uniform(0.8, 2.0)
    path = start + length * t * np.hstack([np.cos(direction + curl * t), np.sin(direction + curl * t)])
    x, y = _fine_grid()
    width = rng.uniform(0.2, 0.4)
    distance2 = (x[..., None] - path[:, 0]) ** 2 + (y[..., None] - path[:, 1]) ** 2
    return (np.exp(-0.5 * distance2 / width**2) * (1 - 0.8 * t[:, 0])).max(axis=-1)


def _merger(rng: np.random.Generator, flux: float) -> list[Component]:
    """Two tidally stretched galaxies 1.2-3" apart, with a tidal tail from the first."""
    separation, axis = rng.uniform(1.2, 3.0), rng.uniform(0, 2 * np.pi)
    direction = np.array([math.cos(axis), math.sin(axis)])
    tail_flux = flux * rng.uniform(0.12, 0.25)
    first_share = rng.uniform(0.5, 0.75)
    components = []
    for sign, share in ((-1, first_share), (1, 1 - first_share)):
        n = float(rng.choice([1.0, 2.5, 4.0]))
        galaxy = galsim.Sersic(n=n, half_light_radius=rng.uniform(0.4, 1.0), flux=(flux - tail_flux) * share)
        galaxy = galaxy.shear(g=rng.uniform(0.15, 0.4), beta=axis * galsim.radians)
        offset = sign * separation / 2 * direction
        components.append((galaxy.shift(*offset), _tint(RED + rng.uniform() * (DISK - RED), rng)))
    start = -separation / 2 * direction
    tail = _tidal_tail(rng, start, axis + np.pi + rng.uniform(-0.6, 0.6))
    return [*components, (_from_array(tail, tail_flux), _tint(DISK, rng))]


def _lensed_source(rng: np.random.Generator, einstein_radius: float) -> tuple[np.ndarray, float]:
    """A small exponential source seen through a singular isothermal sphere, and the grid scale (arcsec)."""
    scale = PIXEL_SCALE / 4
    x, y = _fine_grid(2 * math.ceil((einstein_radius + 1.5) / scale), scale)
    theta = np.hypot(x, y) + 1e-6
    beta_x, beta_y = x - einstein_radius * x / theta, y - einstein_radius * y / theta
    offset = rng.uniform(0.1, 0.45) * einstein_radius
    angle = rng.uniform(0, 2 * np.pi)
    dx, dy = beta_x - offset * math.cos(angle), beta_y - offset * math.sin(angle)
    q, phi = rng.uniform(0.5, 1.0), rng.uniform(0, np.pi)
    major = dx * math.cos(phi) + dy * math.sin(phi)
    minor = -dx * math.sin(phi) + dy * math.cos(phi)
    return np.exp(-np.hypot(major, minor / q) / rng.uniform(0.05, 0.15)), scale


def _lens(rng: np.random.Generator, flux: float) -> list[Component]:
    """A red elliptical lensing a blue background source into arcs (Einstein radius 1.3-2.3")."""
    arc_flux = flux * rng.uniform(0.25, 0.45)
    lens = galsim.Sersic(n=4.0, half_light_radius=rng.uniform(0.35, 0.8), flux=flux - arc_flux)
    arcs, scale = _lensed_source(rng, rng.uniform(1.3, 2.3))
    return [
        (lens.shear(q=rng.uniform(0.7, 1.0), beta=_angle(rng)), _tint(RED, rng)),
        (_from_array(arcs, arc_flux, scale=scale), _tint(BLUE, rng)),
    ]


RENDERERS: dict[str, Callable[[np.random.Generator, float], list[Component]]] = {
    "elliptical": _elliptical,
    "spiral": _spiral,
    "edge_on": _edge_on,
    "clumpy": _clumpy,
    "compact": _compact,
    "ring": _ring,
    "merger": _merger,
    "lens": _lens,
}
