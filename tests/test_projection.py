"""The UMAP map: cached coordinates that separate classes, and pictures whose pixels map back exactly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_ENCODER, write_blob_npz
from matplotlib.colors import to_rgb
from PIL import Image
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier

from galsearch.embedder import Collection, CollectionError, embed, ingest, open_collection
from galsearch.index import MapPicture, projection, render_map, save_map_png, umap_coordinates
from galsearch.index.projection import (
    COORDS_FILE,
    INFO_FILE,
    MAP_DIR,
    PLAIN_COLOUR,
    has_map,
    thumbnail_rows,
    umap_seconds,
)

N = 64


@pytest.fixture(scope="module")
def mapped(tmp_path_factory) -> tuple[Collection, np.ndarray]:
    """An embedded 64-galaxy blob collection with a float column holding NaNs, and its map (made once)."""
    folder = tmp_path_factory.mktemp("map")
    ingest(write_blob_npz(folder / "blobs.npz", N), folder / "c", progress=False)
    coll = open_collection(folder / "c")
    with coll.writing():
        coll.set_columns({"flux": np.where(np.arange(N) % 7 == 0, np.nan, np.linspace(1, 2, N))})
    embed(coll, TINY_ENCODER, device="cpu", progress=False)
    coll = open_collection(coll.path)
    return coll, umap_coordinates(coll)


def copy_of(coll: Collection, folder: Path) -> Collection:
    """An independent copy of a collection (its map cache included)."""
    return open_collection(shutil.copytree(coll.path, folder / "copy"))


# ---- coordinates ---------------------------------------------------------------------------------


def test_coordinates_are_finite_and_separate_the_classes(mapped):
    coll, coords = mapped
    assert coords.shape == (N, 2) and coords.dtype == np.float32 and np.isfinite(coords).all()
    labels = coll.catalog["label"].to_numpy()
    assert cross_val_score(KNeighborsClassifier(1), coords, labels, cv=4).mean() > 0.9


def test_the_cache_is_reused_and_records_what_made_it(mapped):
    coll, coords = mapped
    files = [coll.path / MAP_DIR / COORDS_FILE, coll.path / MAP_DIR / INFO_FILE]
    stamps = [f.stat().st_mtime_ns for f in files]
    again = umap_coordinates(open_collection(coll.path))
    assert np.array_equal(again, coords) and [f.stat().st_mtime_ns for f in files] == stamps
    assert np.array_equal(np.fromfile(files[0], np.float32).reshape(N, 2), coords)
    info = json.loads(files[1].read_text())
    assert info["count"] == N and info["params"]["metric"] == "cosine"
    assert info["encoder"]["weights_sha256"] == coll.encoder["weights_sha256"]
    assert info["encoder"]["tta"] == coll.encoder["tta"]


def test_another_encoder_recomputes_the_map(mapped, tmp_path):
    coll, coords = mapped
    copy = copy_of(coll, tmp_path)
    assert has_map(copy) and np.array_equal(umap_coordinates(copy), coords)  # the copied cache still fits
    embed(copy, "random:test_vit", device="cpu", replace=True, progress=False)
    copy = open_collection(copy.path)
    assert not has_map(copy)
    remapped = umap_coordinates(copy)
    assert remapped.shape == (N, 2) and not np.array_equal(remapped, coords)
    info = json.loads((copy.path / MAP_DIR / INFO_FILE).read_text())
    assert info["encoder"]["weights_sha256"] == copy.encoder["weights_sha256"]
    assert copy.encoder["weights_sha256"] != coll.encoder["weights_sha256"]


def test_the_neighbour_graph_is_the_exact_cosine_one(mapped):
    vectors = np.asarray(mapped[0].embeddings, dtype=np.float32)
    indices, distances = projection._exact_neighbours(vectors, 5)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cosine = 1 - unit @ unit.T
    expected = np.argsort(cosine, axis=1, kind="stable")[:, :5]
    assert (indices[:, 0] == np.arange(N)).all()  # itself first, at distance 0
    assert np.allclose(distances, np.take_along_axis(cosine, expected, axis=1), atol=1e-5)
    assert np.allclose(np.take_along_axis(cosine, indices, axis=1), distances, atol=1e-5)


def test_large_collections_are_fitted_on_a_sample_and_transformed(mapped, tmp_path, monkeypatch):
    coll, coords = mapped
    copy = copy_of(coll, tmp_path)
    monkeypatch.setattr(projection, "FIT_SAMPLE", 40)
    monkeypatch.setattr(projection, "CHUNK_ROWS", 10)
    sampled = umap_coordinates(copy)  # the sample size is part of the cache's identity: recomputed
    assert sampled.shape == (N, 2) and np.isfinite(sampled).all() and not np.array_equal(sampled, coords)
    assert json.loads((copy.path / MAP_DIR / INFO_FILE).read_text())["fit_sample"] == 40


def test_unembedded_collections_raise_and_tiny_ones_map(tmp_path):
    ingest(write_blob_npz(tmp_path / "few.npz", 6), tmp_path / "few", bands=[0], progress=False)
    few = open_collection(tmp_path / "few")
    with pytest.raises(CollectionError, match="galsearch embed"):
        umap_coordinates(few)
    with pytest.raises(CollectionError, match="galsearch embed"):
        render_map(few)
    assert not has_map(few)
    embed(few, TINY_ENCODER, device="cpu", progress=False)
    few = open_collection(few.path)
    assert not has_map(few)
    assert umap_coordinates(few).shape == (6, 2) and has_map(few)
    picture = render_map(few, thumbnails=4)  # 1-channel stamps, drawn in grey
    assert picture.image.shape == (700, 900, 3)
    assert (picture.image != render_map(few).image).any()


MAP_IN_A_NEW_PROCESS = """
import numpy as np
from umap import layouts, umap_
from galsearch.index.projection import _compute
_compute(np.random.default_rng(1).normal(size=(100, 16)).astype(np.float32), progress=False)
epoch = layouts._nb_optimize_layout_euclidean_single_epoch
for kernel in umap_.smooth_knn_dist, umap_.compute_membership_strengths, epoch:
    print(kernel.stats.cache_hits.total(), kernel.stats.cache_misses.total())
"""


def test_after_compile_umap_a_new_process_maps_without_compiling(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}  # an empty cache, as on a new install
    compile_umap = "from galsearch.index.projection import compile_umap; compile_umap()"
    subprocess.run([sys.executable, "-c", compile_umap], env=env, check=True)
    mapped = subprocess.run(
        [sys.executable, "-c", MAP_IN_A_NEW_PROCESS], env=env, check=True, capture_output=True, text=True
    )
    # UMAP's three costly kernels that it leaves out of numba's cache: each loaded, none compiled
    assert mapped.stdout.split() == ["1", "0"] * 3


def test_the_first_map_estimate_follows_the_measurements():
    assert 1 < umap_seconds(64) < umap_seconds(3_000) < 10 < umap_seconds(10_000) < umap_seconds(50_000)
    assert umap_seconds(50_000) < umap_seconds(50_001) - 15  # past the sample, UMAP's own neighbour search
    assert umap_seconds(1_000_000) > 7_000


# ---- pictures ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(640, 480), (901, 333)])
def test_pixels_map_back_to_the_galaxies_drawn_there(mapped, size):
    coll, coords = mapped
    picture = render_map(coll, size=size)
    assert isinstance(picture, MapPicture) and picture.image.shape == (size[1], size[0], 3)
    assert picture.image.dtype == np.uint8
    blue = np.array(to_rgb(PLAIN_COLOUR)) * 255
    for row in (0, 17, 40, 63):
        px, py = picture.pixel_of(row)
        assert picture.nearest(px, py) == row
        assert np.allclose(picture.to_map(px, py), coords[row], atol=1e-4)
        assert np.abs(picture.image[int(py), int(px)] - blue).max() < 8  # the galaxy's dot is drawn there
    assert picture.nearest(*picture.pixel_of(5) + np.array([1.0, -1.0])) in range(N)


def test_box_selections(mapped):
    coll, _ = mapped
    picture = render_map(coll, size=(640, 480))
    assert np.array_equal(picture.rows_in_box((0, 0), (640, 480)), np.arange(N))
    assert np.array_equal(picture.rows_in_box((640, 480), (0, 0)), np.arange(N))
    px, py = picture.pixel_of(5)
    assert 5 in picture.rows_in_box((px + 3, py + 3), (px - 3, py - 3))
    assert 5 in picture.rows_in_box((px - 3, py + 3), (px + 3, py - 3))
    assert len(picture.rows_in_box((-50, -50), (-10, -10))) == 0


def test_colouring_by_categories_numbers_and_missing_values(mapped):
    coll, _ = mapped
    plain = render_map(coll).image
    by_label = render_map(coll, "label").image  # integers with two values: categories with a legend
    by_name = render_map(coll, "class_name").image  # strings
    by_flux = render_map(coll, "flux").image  # floats with NaNs: viridis, a colour bar, grey for missing
    values = np.where(np.arange(N) < 4, np.nan, np.arange(N, dtype=float))
    by_values = render_map(coll, "my score", values=values).image
    pictures = [plain, by_label, by_name, by_flux, by_values]
    assert all(p.shape == (700, 900, 3) for p in pictures)
    assert all((a != b).any() for i, a in enumerate(pictures) for b in pictures[i + 1 :])
    assert np.array_equal(by_label, render_map(coll, "label").image)  # deterministic
    with pytest.raises(CollectionError, match="no catalog column 'nope'"):
        render_map(coll, "nope")
    with pytest.raises(ValueError, match="one value per mapped galaxy"):
        render_map(coll, "short", values=np.zeros(3))


def test_highlighted_galaxies_are_drawn_on_top(mapped):
    coll, _ = mapped
    plain = render_map(coll, "label")
    marked = render_map(coll, "label", highlight=np.array([3, 9]))
    assert (plain.image != marked.image).any()
    assert np.array_equal(plain.pixels, marked.pixels)
    with pytest.raises(ValueError, match="highlight rows"):
        render_map(coll, highlight=np.array([N]))


def test_thumbnails_spread_over_the_map(mapped):
    coll, coords = mapped
    rows = thumbnail_rows(coords, 9)
    assert 1 <= len(rows) <= 9 and len(set(rows.tolist())) == len(rows)
    assert len(thumbnail_rows(coords, 200)) <= N
    plain, stamped = render_map(coll), render_map(coll, thumbnails=9)
    assert stamped.image.shape == plain.image.shape and (plain.image != stamped.image).any()


def test_the_png_is_written_and_readable(mapped, tmp_path):
    coll, _ = mapped
    picture = render_map(coll, "class_name", size=(500, 400))
    path = save_map_png(picture, tmp_path / "map.png")
    assert path == tmp_path / "map.png"
    with Image.open(path) as png:
        assert png.size == (500, 400)
        assert np.array_equal(np.asarray(png.convert("RGB")), picture.image)
