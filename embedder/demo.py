"""The demo collection: real Hubble Deep Field galaxies plus GalSim-simulated ones, built offline.

``build_demo`` needs nothing but installed packages: the real galaxies are cut from the Hubble Deep Field
image that scikit-image ships, the rest are drawn by :mod:`galsearch.embedder.simulate`. The build is
deterministic for a given seed, resumes after an interruption, and returns an already built demo at once.

Catalog columns: ``origin`` ("hubble_deep_field" or "galsim"), ``class_name`` and ``label`` (the
simulated classes are ``simulate.CLASSES``; the real galaxies get class "hdf" with label ``HDF_LABEL``
= ``len(CLASSES)``), ``ra``/``dec`` (degrees), ``mag``; the real galaxies add ``flux`` (from sep), the
simulated ones ``hlr_arcsec`` and ``psf_fwhm``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import sep
from astropy.wcs import WCS
from skimage.data import hubble_deep_field

from .collection import MANIFEST, Collection, open_collection
from .errors import CollectionError
from .ingest import ingest
from .simulate import CLASSES, simulate_galaxies
from .sources import Item
from .stretch import Stretch

DEMO_VERSION = 1  # bump when the demo's content changes, so that old builds are not reused
HDF_LABEL = len(CLASSES)
HDF_CENTER = (189.2058, 62.2161)  # RA, Dec (deg) of the Hubble Deep Field North
HDF_WIDTH_ARCMIN = 2.6  # approximate span of the 1000-pixel-wide scikit-image HDF picture
HDF_ZERO_POINT = 34.0  # puts the pseudo-magnitudes of the 8-bit picture roughly where HDF galaxies are
DETECT_SIGMA = 3.0  # sep detection threshold in background rms
MIN_AREA = 10  # pixels above the threshold for a detection
MIN_PIXELS = 25  # smallest source kept, in pixels above the threshold
MIN_FLUX = 1000.0  # faintest source kept, in background-subtracted grey levels
CROWDED_RADIUS = 16  # pixels: a neighbour with CROWDED_FLUX of the flux this close blends with the source
CROWDED_FLUX = 0.3
BRIGHTER_FLUX = 1.5  # a source is dropped if its stamp holds a neighbour this many times brighter
SIM_CENTER = (150.0, 2.2)  # RA, Dec (deg) of the 1 x 1 deg patch the simulated galaxies are placed in
SIM_STRETCH = Stretch("asinh", lower_percentile=15.0, upper_percentile=99.7, a=0.25)


def default_demo_path() -> Path:
    """Where the demo lives by default: ``$GALSEARCH_HOME/demo`` (``~/.cache/galsearch/demo``)."""
    home = os.environ.get("GALSEARCH_HOME") or Path.home() / ".cache" / "galsearch"
    return Path(home).expanduser() / "demo"


def build_demo(
    path: str | Path, *, seed: int = 0, n_simulated: int = 3000, size: int = 64, progress: bool = True
) -> Collection:
    """Build the demo collection at ``path`` or finish an interrupted build; return a finished one as is."""
    if seed < 0 or n_simulated < 0 or size < 16:
        raise ValueError(f"need seed >= 0, n_simulated >= 0, size >= 16; got {seed}, {n_simulated}, {size}")
    path = Path(path)
    parameters = {"version": DEMO_VERSION, "seed": seed, "n_simulated": n_simulated, "size": size}
    if (path / MANIFEST).exists():
        coll = open_collection(path)
        if _is_complete(coll, parameters):
            return coll
    else:
        coll = _start(path, parameters)
    source = DemoSource(parameters, set(coll.catalog["id"]))
    if len(source):
        ingest(source, path, progress=progress)
    with coll.writing():
        coll.record_source({"demo": parameters, "stage": "complete"})
    return open_collection(path)


def _start(path: Path, parameters: dict) -> Collection:
    """Create an empty collection at ``path`` that records the demo parameters it is being built with."""
    if path.is_dir() and any(path.iterdir()):
        raise CollectionError(f"cannot build the demo in {path}: the directory is not empty")
    size = parameters["size"]
    preprocessing = {"size": size, "channels": 3, "stretch": SIM_STRETCH.to_dict()}
    coll = Collection.create(path, (size, size, 3), preprocessing, name="galsearch demo")
    with coll.writing():
        coll.record_source({"demo": parameters, "stage": "started"})
    return coll


def _is_complete(coll: Collection, parameters: dict) -> bool:
    """Whether ``coll`` is a finished demo built with ``parameters``; raise if it is another collection."""
    entries = [entry for entry in coll.manifest["sources"] if "demo" in entry]
    if not entries:
        raise CollectionError(f"{coll.path} holds a collection that is not the demo; choose another path")
    if entries[0]["demo"] != parameters:
        raise CollectionError(
            f"{coll.path} holds a demo built with {entries[0]['demo']}, not {parameters}; "
            "choose another path or delete that directory"
        )
    return any(entry.get("stage") == "complete" for entry in entries)


class DemoSource:
    """The demo's items not yet in the collection (HDF stamps, then simulated galaxies); its text names it."""

    def __init__(self, parameters: dict, present: set[str]):
        self.parameters = parameters
        self.seed, self.n, self.size = parameters["seed"], parameters["n_simulated"], parameters["size"]
        self.hdf = [item for item in hdf_items(self.size) if item.id not in present]
        self.start = next((i for i in range(self.n) if _sim_id(i) not in present), self.n)

    def __len__(self) -> int:
        return len(self.hdf) + self.n - self.start

    def __iter__(self) -> Iterator[Item]:
        yield from self.hdf
        yield from simulated_items(self.n, self.seed, self.size, self.start)

    def __str__(self) -> str:
        return "galsearch demo " + ", ".join(f"{k}={v}" for k, v in self.parameters.items())


# ---- real galaxies: the Hubble Deep Field --------------------------------------------------------


def hdf_items(size: int = 64) -> list[Item]:
    """``size``-pixel uint8 RGB stamps of the clean, isolated galaxies of scikit-image's Hubble Deep Field."""
    rgb = hubble_deep_field()
    sources = detect_hdf_sources(rgb, size)
    coords = hdf_wcs(rgb.shape).pixel_to_world(sources["x"], rgb.shape[0] - 1 - sources["y"])
    items = []
    for k, (source, coord) in enumerate(zip(sources, coords, strict=True), start=1):
        x, y = (round(float(source[axis])) for axis in ("x", "y"))
        top, left = y - size // 2, x - size // 2
        stamp = rgb[top : top + size, left : left + size]
        columns = {
            "origin": "hubble_deep_field",
            "class_name": "hdf",
            "label": HDF_LABEL,
            "ra": float(coord.ra.deg),
            "dec": float(coord.dec.deg),
            "mag": float(HDF_ZERO_POINT - 2.5 * np.log10(source["flux"])),
            "flux": float(source["flux"]),
        }
        items.append(Item(f"hdf-{k:04d}", f"skimage hubble_deep_field x={x} y={y}", stamp, columns))
    return items


def detect_hdf_sources(rgb: np.ndarray, size: int = 64) -> np.ndarray:
    """sep detections of an RGB picture that are bright, unblended and the brightest in their stamp."""
    grey = np.ascontiguousarray(rgb.mean(axis=2, dtype=np.float32))
    background = sep.Background(grey)
    found = sep.extract(grey - background, DETECT_SIGMA, err=background.globalrms, minarea=MIN_AREA)
    x, y, flux = found["x"], found["y"], found["flux"]
    half = size // 2
    inside = _stamp_fits(x, grey.shape[1], size) & _stamp_fits(y, grey.shape[0], size)
    distance = np.hypot(x[:, None] - x, y[:, None] - y)
    ratio = flux[None, :] / flux[:, None]
    crowded = ((distance < CROWDED_RADIUS) & (distance > 0) & (ratio > CROWDED_FLUX)).any(axis=1)
    outshone = ((distance < half) & (ratio > BRIGHTER_FLUX)).any(axis=1)
    clean = (found["flag"] & sep.OBJ_TRUNC) == 0
    keep = inside & clean & ~crowded & ~outshone & (found["npix"] >= MIN_PIXELS) & (flux >= MIN_FLUX)
    return found[keep]


def _stamp_fits(centre: np.ndarray, length: int, size: int) -> np.ndarray:
    """Whether a ``size``-pixel stamp around each rounded ``centre`` fits on an axis of ``length`` pixels."""
    first = np.round(centre).astype(int) - size // 2
    return (first >= 0) & (first + size <= length)


def hdf_wcs(shape: tuple[int, ...]) -> WCS:
    """An approximate TAN WCS for the HDF picture: centred on HDF-North, north up, east left.

    The picture carries no astrometry, so coordinates from this WCS are only good to about an arcminute
    (pointing, orientation and scale are assumed, not measured).
    """
    height, width = shape[:2]
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = HDF_CENTER
    wcs.wcs.crpix = [(width + 1) / 2, (height + 1) / 2]
    scale = HDF_WIDTH_ARCMIN / 60 / width
    wcs.wcs.cdelt = [-scale, scale]
    return wcs


# ---- simulated galaxies ---------------------------------------------------------------------------


def _sim_id(index: int) -> str:
    return f"sim-{index + 1:05d}"


def simulated_items(n: int, seed: int = 0, size: int = 64, start: int = 0) -> Iterator[Item]:
    """Items for simulated galaxies ``start`` .. ``n``-1, placed uniformly in a 1 x 1 deg patch."""
    ra, dec = sky_positions(n, seed)
    for galaxy in simulate_galaxies(n, seed=seed, size=size, start=start):
        i = galaxy.index
        columns = {"origin": "galsim", "ra": float(ra[i]), "dec": float(dec[i]), **galaxy.columns()}
        yield Item(_sim_id(i), f"galsim seed={seed} index={i}", galaxy.image, columns)


def sky_positions(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """RA, Dec (deg) of ``n`` points of ``seed``, uniform on the sky in a 1 x 1 deg patch at SIM_CENTER."""
    rng = np.random.default_rng(seed)
    ra0, dec0 = SIM_CENTER
    sin_dec = rng.uniform(np.sin(np.radians(dec0 - 0.5)), np.sin(np.radians(dec0 + 0.5)), n)
    ra = ra0 + rng.uniform(-0.5, 0.5, n) / np.cos(np.radians(dec0))
    return ra, np.degrees(np.arcsin(sin_dec))
