"""What pictures show: band names, the display mapping of a collection and the pictures made from it
(page galleries, map stamps, map --png thumbnails), for 1, 3 and 5 stored bands."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.visualization import make_lupton_rgb
from PIL import Image

from galsearch.embedder import Collection, CollectionError, Stretch, open_collection
from galsearch.embedder.display import WAVELENGTHS, composite, default_rgb, rgb_channels
from galsearch.embedder.stretch import to_uint8
from galsearch.index import render_map, save_map_png
from galsearch.index.mapview import stamp_uri
from galsearch.index.projection import thumbnail_rows, umap_coordinates
from galsearch.ui.map_tab import _stamp_grid
from galsearch.ui.state import AppState

GRIZY = ["g", "r", "i", "z", "y"]


def make_collection(path: Path, images: np.ndarray, bands: list[str] | None = None) -> Collection:
    """A collection holding ``images`` (n, H, W, C) as stored, with ``bands`` recorded when given."""
    preprocessing = {"size": images.shape[1], "channels": images.shape[3], "stretch": Stretch().to_dict()}
    preprocessing |= {"bands": bands} if bands else {}
    coll = Collection.create(path, images.shape[1:], preprocessing)
    rows = pd.DataFrame({"id": [f"g{i}" for i in range(len(images))], "source": "test"})
    with coll.writing():
        coll.append_galaxies(images, rows)
    return open_collection(path)


def random_images(n: int, channels: int, side: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, side, side, channels), dtype=np.uint8)


def decoded(uri: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as picture:
        return np.asarray(picture.convert("RGB"))


# ---- band names and the default mapping -----------------------------------------------------------


@pytest.mark.parametrize(
    ("bands", "rgb"),
    [
        (["g", "r", "i", "z"], ["z", "r", "g"]),
        (GRIZY, ["y", "i", "g"]),
        (["z", "g", "y", "r", "i"], ["y", "i", "g"]),  # ordered by wavelength, not as stored
        (["u", "g", "r", "i", "z", "y"], ["y", "r", "u"]),
        (["VIS", "NISP_Y", "NISP_J", "NISP_H"], ["NISP_H", "NISP_Y", "VIS"]),
        (["a", "b", "c"], ["a", "b", "c"]),  # unknown names: stored order as R, G, B
        (["R", "G", "B"], ["R", "G", "B"]),
        (["band0", "band1", "band2", "band3", "band4"], ["band0", "band2", "band4"]),
        (["L"], ["L", "L", "L"]),
        (["r"], ["r", "r", "r"]),
    ],
)
def test_default_rgb(bands, rgb):
    assert default_rgb(bands) == rgb


def test_wavelengths_order_the_filters_blue_to_red():
    order = ["u", "g", "r", "VIS", "i", "z", "y", "Y", "NISP_Y", "J", "NISP_J", "H", "NISP_H", "K"]
    assert sorted(WAVELENGTHS, key=WAVELENGTHS.__getitem__) == order


def test_rgb_channels_and_their_errors():
    assert rgb_channels(GRIZY, ["z", "r", "g"]) == (3, 1, 0)
    assert rgb_channels(["L"], ["L", "L", "L"]) == (0, 0, 0)
    with pytest.raises(CollectionError, match=r"no band 'q', 'w' in this collection; its bands: \['g', 'r'"):
        rgb_channels(GRIZY, ["q", "r", "w"])
    with pytest.raises(CollectionError, match=r"names 3 bands .*\['z', 'r'\]"):
        rgb_channels(GRIZY, ["z", "r"])
    with pytest.raises(CollectionError, match=r"names 3 bands .*'zrg'"):
        rgb_channels(GRIZY, "zrg")


def test_composite_picks_the_stored_channels():
    images = random_images(4, 5)
    assert np.array_equal(composite(images, (3, 1, 0)), images[..., [3, 1, 0]])
    assert composite(images[0], (2, 2, 2)).shape == (8, 8, 3)
    with pytest.raises(CollectionError, match=r"3 of 0..4, got \[5, 1, 0\]"):
        composite(images, (5, 1, 0))
    with pytest.raises(CollectionError, match="uint8"):
        composite(images.astype(np.float32), (0, 1, 2))


def test_bands_as_recorded_or_by_channel_count(tmp_path):
    assert make_collection(tmp_path / "one", random_images(2, 1)).bands == ["L"]
    assert make_collection(tmp_path / "three", random_images(2, 3)).bands == ["R", "G", "B"]
    assert make_collection(tmp_path / "four", random_images(2, 4)).bands == [f"band{i}" for i in range(4)]
    named = make_collection(tmp_path / "five", random_images(2, 5), GRIZY)
    assert named.bands == GRIZY and named.display_rgb == ["y", "i", "g"]
    assert named.display_channels == (4, 2, 0)
    assert named.info()["bands"] == GRIZY and named.info()["display_rgb"] == ["y", "i", "g"]
    with pytest.raises(CollectionError, match=r"names bands \['g', 'r'\] for 5 stored channels"):
        Collection.create(tmp_path / "wrong", (8, 8, 5), {"bands": ["g", "r"]})


# ---- the mapping chosen per collection ------------------------------------------------------------


def test_set_display_persists_and_refuses_unknown_bands(tmp_path):
    coll = make_collection(tmp_path / "c", random_images(3, 5), GRIZY)
    coll.set_display(["z", "r", "g"])
    assert coll.display_rgb == ["z", "r", "g"]
    again = open_collection(coll.path)
    assert again.display_rgb == ["z", "r", "g"] and again.display_channels == (3, 1, 0)
    assert json.loads((coll.path / "manifest.json").read_text())["display"] == {"rgb": ["z", "r", "g"]}
    with pytest.raises(CollectionError, match="no band 'K'"):
        again.set_display(["K", "r", "g"])
    with pytest.raises(CollectionError, match="names 3 bands"):
        again.set_display(["z"])
    assert open_collection(coll.path).display_rgb == ["z", "r", "g"]  # a refused mapping leaves it as it was
    with coll.writing(), pytest.raises(CollectionError, match="being written"):
        again.set_display(["g", "g", "g"])  # another writer holds the lock
    again.set_display(["g", "g", "g"])
    assert open_collection(coll.path).display_rgb == ["g", "g", "g"]


def test_a_damaged_display_is_reported_when_opened(tmp_path):
    coll = make_collection(tmp_path / "c", random_images(2, 5), GRIZY)
    manifest = json.loads((coll.path / "manifest.json").read_text())
    manifest["display"] = {"rgb": ["z", "r", "B"]}
    (coll.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CollectionError, match="display cannot be shown: no band 'B'"):
        open_collection(coll.path)


def test_rgb_of_a_row_rows_or_a_slice(tmp_path):
    images = random_images(6, 5)
    coll = make_collection(tmp_path / "c", images, GRIZY)
    coll.set_display(["i", "z", "r"])
    chosen = images[..., [2, 3, 1]]
    assert np.array_equal(coll.rgb(4), chosen[4]) and coll.rgb(4).dtype == np.uint8
    assert np.array_equal(coll.rgb(np.array([5, 0, 5])), chosen[[5, 0, 5]])
    assert np.array_equal(coll.rgb([1, 2]), chosen[[1, 2]])
    assert np.array_equal(coll.rgb(slice(1, 4)), chosen[1:4])
    assert np.array_equal(coll.rgb([1, 2], grey=True), chosen[[1, 2]])  # three bands: no grey
    coll.set_display(["z", "z", "z"])
    assert np.array_equal(coll.rgb([1, 2], grey=True), images[[1, 2]][..., [3]])
    assert np.array_equal(coll.rgb([1, 2]), images[[1, 2]][..., [3, 3, 3]])


# ---- pictures of a 5-band collection --------------------------------------------------------------


@pytest.fixture(scope="module")
def five_band(tmp_path_factory) -> tuple[Collection, np.ndarray]:
    """A 12-galaxy grizy collection, each galaxy flat in every band (values 20..235, one per galaxy and
    band), with random embeddings and their map; and the per-galaxy band values (12, 5)."""
    values = np.random.default_rng(1).integers(20, 236, (12, 5)).astype(np.uint8)
    images = np.ascontiguousarray(np.broadcast_to(values[:, None, None, :], (12, 16, 16, 5)))
    coll = make_collection(tmp_path_factory.mktemp("display") / "c", images, GRIZY)
    with coll.writing():
        coll.start_embeddings({"architecture": "random-vectors", "dim": 8}, 8)
        coll.append_embeddings(np.random.default_rng(2).normal(0, 1, (12, 8)))
    coll = open_collection(coll.path)
    umap_coordinates(coll)
    return coll, values


def colour_count(picture: np.ndarray, colour: np.ndarray) -> int:
    return int((picture == colour).all(axis=-1).sum())


def test_map_png_thumbnails_show_the_chosen_bands(five_band, tmp_path):
    coll, values = five_band
    coll.set_display(["y", "i", "g"])  # the default, set explicitly: the test's collection is shared
    row = thumbnail_rows(umap_coordinates(coll), 1)[0]
    for rgb, channels in ((["y", "i", "g"], [4, 2, 0]), (["z", "r", "g"], [3, 1, 0])):
        coll.set_display(rgb)
        coll = open_collection(coll.path)
        path = save_map_png(render_map(coll, thumbnails=1), tmp_path / "map.png")
        with Image.open(path) as png:
            picture = np.asarray(png.convert("RGB"))
        assert colour_count(picture, values[row, channels]) >= 16 * 16  # the stamp, at least 16 px a side
    assert colour_count(picture, values[row, [4, 2, 0]]) == 0  # the mapping chosen before is gone
    coll.set_display(["y", "i", "g"])


def test_page_stamps_and_galleries_show_the_chosen_bands(five_band):
    coll, values = five_band
    coll.set_display(["z", "r", "g"])
    state = AppState(coll.path)
    rows = np.array([7, 2, 11])
    chosen = values[rows][:, [3, 1, 0]]
    for (picture, caption), colour, row in zip(state.gallery(rows), chosen, rows, strict=True):
        assert picture.shape[2] == 3 and (picture == colour).all() and caption == f"g{row}"
    hover = decoded(stamp_uri(state.collection().rgb(7, grey=True)))  # the map's hover stamp (PNG)
    assert hover.shape == (16, 16, 3) and (hover == chosen[0]).all()
    grid = _stamp_grid(state, rows)  # the map's galleries (WebP)
    uris = [part.split('"', 1)[0] for part in grid.split('src="')[1:]]
    for uri, colour in zip(uris, chosen, strict=True):
        assert np.abs(decoded(uri).astype(int) - colour).max() <= 3
    coll.set_display(["y", "i", "g"])
    assert (state.gallery(rows[:1])[0][0] == values[7, [4, 2, 0]]).all()  # the page follows a new mapping


# ---- 1 and 3 bands: pictures as before the display mapping ---------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
def test_one_and_three_band_pictures_are_unchanged(tmp_path, channels):
    images = random_images(5, channels, side=12)
    coll = make_collection(tmp_path / "c", images)
    rows = np.array([3, 0, 4])
    as_rgb = np.repeat(images, 3, axis=3) if channels == 1 else images
    assert np.array_equal(coll.rgb(rows), as_rgb[rows])
    assert np.array_equal(coll.rgb(rows, grey=True), images[rows])  # what map --png thumbnails drew
    for row in rows:  # the map's hover (PNG) and gallery (WebP) stamps: the same bytes as from stored pixels
        assert stamp_uri(coll.rgb(int(row), grey=True)) == stamp_uri(images[row])
        assert stamp_uri(coll.rgb(int(row), grey=True), "webp") == stamp_uri(images[row], "webp")
    assert np.array_equal(AppState(coll.path).gallery(rows[:1])[0][0], as_rgb[3])  # the browser enlarges it


def test_a_composite_of_stored_bands_keeps_the_colours_of_make_lupton_rgb():
    """Stored channels are on one Lupton scale across the bands (embedder.stretch), so three of them have
    the band ratios that astropy's make_lupton_rgb gives from the raw fluxes of those three bands."""
    yy, xx = np.mgrid[:48, :48] - 23.5
    bulge, disc = np.exp(-np.hypot(xx, yy) / 3), np.exp(-np.hypot(xx, yy) / 10)
    red_bulge, blue_disc = np.array([0.3, 0.6, 1.0, 1.3, 1.5]), np.array([1.0, 0.9, 0.8, 0.7, 0.6])  # grizy
    raw = 100 * (bulge[..., None] * red_bulge + 0.3 * disc[..., None] * blue_disc)
    raw += np.random.default_rng(0).normal(0, 0.2, raw.shape)
    stretch = Stretch()
    ours = composite(to_uint8(stretch.apply(raw)), (3, 1, 0)).astype(float)
    low = np.percentile(raw.mean(axis=2), stretch.lower_percentile)
    reference = make_lupton_rgb(raw[..., 3], raw[..., 1], raw[..., 0], minimum=low, stretch=5, Q=8)
    reference = reference.astype(float)
    measured = (ours.min(axis=2) > 40) & (reference.min(axis=2) > 40) & (reference.max(axis=2) < 255)
    assert measured.sum() > 50
    for picture in (ours, reference):
        picture[~measured] = np.nan
    for channel in (0, 2):  # z/r and g/r
        ratio = ours[..., channel] / ours[..., 1], reference[..., channel] / reference[..., 1]
        assert np.nanmax(np.abs(ratio[0] / ratio[1] - 1)) < 0.06
