"""The demo: simulated galaxies (embedder.simulate) plus Hubble Deep Field stamps (embedder.demo)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from skimage.data import hubble_deep_field

from galsearch.embedder import demo
from galsearch.embedder.collection import CATALOG, IMAGES, MANIFEST, Collection
from galsearch.embedder.demo import (
    HDF_CENTER,
    HDF_LABEL,
    SIM_STRETCH,
    DemoSource,
    build_demo,
    default_demo_path,
)
from galsearch.embedder.errors import CollectionError
from galsearch.embedder.ingest import ingest
from galsearch.embedder.simulate import CLASSES, FRACTIONS, simulate_galaxies

N_SIM = 120


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Collection:
    return build_demo(tmp_path_factory.mktemp("demo") / "demo", seed=0, n_simulated=N_SIM, progress=False)


@pytest.fixture(scope="module")
def sample() -> list:
    """1000 simulated galaxies, straight from the simulation API."""
    return list(simulate_galaxies(1000, seed=7, size=48))


def _of_class(sample: list, name: str) -> list[np.ndarray]:
    return [g.image for g in sample if g.class_name == name]


# ---- the simulation ------------------------------------------------------------------------------


def test_every_class_appears_with_its_fraction(sample):
    counts = pd.Series([g.class_name for g in sample]).value_counts()
    for name, fraction in zip(CLASSES, FRACTIONS, strict=True):
        assert abs(counts.get(name, 0) - 1000 * fraction) <= max(3, 0.1 * 1000 * fraction), name
    assert {"ring", "merger", "lens"} <= set(counts.index)


def test_images_are_float_flux_with_metadata(sample):
    galaxy = sample[0]
    assert galaxy.image.shape == (48, 48, 3) and galaxy.image.dtype == np.float32
    assert galaxy.label == CLASSES.index(galaxy.class_name)
    mags = np.array([g.mag for g in sample])
    assert mags.min() > 16 and mags.max() < 23
    assert all(g.hlr_arcsec >= 0 and 0.5 <= g.psf_fwhm <= 1.0 for g in sample)


def test_same_galaxies_whatever_the_number_of_workers():
    one = list(simulate_galaxies(40, seed=3, size=32, workers=1))
    two = list(simulate_galaxies(40, seed=3, size=32, workers=2))
    resumed = list(simulate_galaxies(40, seed=3, size=32, workers=2, start=30))
    for a, b in zip(one, two, strict=True):
        assert np.array_equal(a.image, b.image) and a.columns() == b.columns()
    assert all(np.array_equal(a.image, b.image) for a, b in zip(one[30:], resumed, strict=True))


def _axis_ratio(image: np.ndarray) -> float:
    """Minor/major axis ratio from the second moments of the r-band pixels above 5 sigma of the noise."""
    band = image[..., 1]
    noise = np.concatenate([band[:4].ravel(), band[-4:].ravel()]).std()
    weight = np.where(band > 5 * noise, band, 0.0).ravel()
    y, x = np.indices(band.shape)
    low, high = np.linalg.eigvalsh(np.cov(np.vstack([x.ravel(), y.ravel()]), aweights=weight))
    return float(np.sqrt(low / high))


def _centre_over_annulus(image: np.ndarray) -> float:
    band = image[..., 1]
    y, x = np.indices(band.shape)
    radius = np.hypot(x - (band.shape[1] - 1) / 2, y - (band.shape[0] - 1) / 2)
    return float(band[radius < 2.5].mean() / band[(radius > 6) & (radius < 11)].mean())


def test_edge_on_disks_are_more_elongated_than_ellipticals(sample):
    edge_on = np.mean([_axis_ratio(im) for im in _of_class(sample, "edge_on")])
    elliptical = np.mean([_axis_ratio(im) for im in _of_class(sample, "elliptical")])
    assert edge_on < 0.55 < 0.7 < elliptical


def test_ellipticals_are_redder_than_clumpy_galaxies(sample):
    def g_over_i(images: list[np.ndarray]) -> np.ndarray:
        return np.array([im[..., 2].sum() / im[..., 0].sum() for im in images])  # channels are (i, r, g)

    assert g_over_i(_of_class(sample, "elliptical")).max() < g_over_i(_of_class(sample, "clumpy")).min()


def test_rings_have_light_away_from_the_centre(sample):
    ring = np.median([_centre_over_annulus(im) for im in _of_class(sample, "ring")])
    elliptical = np.median([_centre_over_annulus(im) for im in _of_class(sample, "elliptical")])
    assert ring < 0.7 * elliptical


# ---- the demo collection -------------------------------------------------------------------------


def test_demo_holds_hdf_stamps_then_simulated_galaxies(built):
    catalog = built.catalog
    hdf = catalog[catalog["origin"] == "hubble_deep_field"]
    sims = catalog[catalog["origin"] == "galsim"]
    assert 150 <= len(hdf) <= 300 and len(sims) == N_SIM and len(catalog) == len(hdf) + N_SIM
    assert hdf["id"].iloc[0] == "hdf-0001" and sims["id"].iloc[0] == "sim-00001"
    assert set(hdf["class_name"]) == {"hdf"} and set(hdf["label"]) == {HDF_LABEL}
    assert set(sims["class_name"]) <= set(CLASSES) and sims["label"].between(0, len(CLASSES) - 1).all()
    assert built.preprocessing["stretch"] == SIM_STRETCH.to_dict()


def test_hdf_stamps_are_unchanged_pixels_at_hdf_north(built):
    catalog = built.catalog
    hdf = catalog.index[catalog["origin"] == "hubble_deep_field"]
    ra, dec = catalog.loc[hdf, "ra"].to_numpy(), catalog.loc[hdf, "dec"].to_numpy()
    assert np.isfinite(ra).all() and np.isfinite(dec).all()
    assert np.abs(dec - HDF_CENTER[1]).max() < 0.03 and np.abs(ra - HDF_CENTER[0]).max() < 0.06
    x, y = (int(v.split("=")[1]) for v in catalog.loc[hdf[0], "source"].split()[-2:])
    assert np.array_equal(built.images[hdf[0]], hubble_deep_field()[y - 32 : y + 32, x - 32 : x + 32])


def test_simulated_galaxies_lie_in_their_patch(built):
    sims = built.catalog[built.catalog["origin"] == "galsim"]
    assert sims["ra"].between(149.5, 150.5).all() and sims["dec"].between(1.7, 2.7).all()
    assert sims[["mag", "hlr_arcsec", "psf_fwhm"]].notna().all().all()


def test_same_seed_same_bytes_other_seed_other_galaxies(built, tmp_path):
    again = build_demo(tmp_path / "again", seed=0, n_simulated=N_SIM, progress=False)
    other = build_demo(tmp_path / "other", seed=1, n_simulated=N_SIM, progress=False)
    assert (again.path / IMAGES).read_bytes() == (built.path / IMAGES).read_bytes()
    pd.testing.assert_frame_equal(again.catalog, built.catalog)
    sims = built.catalog.index[built.catalog["origin"] == "galsim"]
    assert not np.array_equal(other.images[sims], built.images[sims])
    assert not other.catalog.loc[sims, "mag"].equals(built.catalog.loc[sims, "mag"])


def test_a_finished_demo_is_reused_untouched(built):
    files = [built.path / name for name in (MANIFEST, CATALOG, IMAGES)]
    before = [f.stat().st_mtime_ns for f in files]
    again = build_demo(built.path, seed=0, n_simulated=N_SIM, progress=False)
    assert len(again) == len(built) and [f.stat().st_mtime_ns for f in files] == before


def test_an_interrupted_build_is_finished(built, tmp_path):
    path = tmp_path / "partial"
    parameters = {"version": demo.DEMO_VERSION, "seed": 0, "n_simulated": N_SIM, "size": 64}
    demo._start(path, parameters)
    ingest(itertools.islice(DemoSource(parameters, set()), len(built) - 50), path, progress=False)
    finished = build_demo(path, seed=0, n_simulated=N_SIM, progress=False)
    assert (finished.path / IMAGES).read_bytes() == (built.path / IMAGES).read_bytes()
    pd.testing.assert_frame_equal(finished.catalog, built.catalog)


def test_other_parameters_or_other_collections_are_refused(built, tmp_path):
    with pytest.raises(CollectionError, match="demo built with"):
        build_demo(built.path, seed=1, n_simulated=N_SIM, progress=False)
    with pytest.raises(CollectionError, match="demo built with"):
        build_demo(built.path, seed=0, n_simulated=N_SIM + 1, progress=False)
    Collection.create(tmp_path / "mine", (64, 64, 3), preprocessing={})
    with pytest.raises(CollectionError, match="not the demo"):
        build_demo(tmp_path / "mine", progress=False)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(CollectionError, match="not empty"):
        build_demo(tmp_path / "busy", progress=False)


def test_default_path_follows_galsearch_home(monkeypatch, tmp_path):
    monkeypatch.setenv("GALSEARCH_HOME", str(tmp_path))
    assert default_demo_path() == tmp_path / "demo"
    monkeypatch.delenv("GALSEARCH_HOME")
    assert default_demo_path() == Path.home() / ".cache" / "galsearch" / "demo"
