"""Ingest from every kind of source, with real files written by the tests, and the collection it builds."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from conftest import write_blob_npz
from PIL import Image

from galsearch.embedder.collection import IMAGES, MANIFEST, CollectionError, open_collection
from galsearch.embedder.errors import IngestError
from galsearch.embedder.ingest import IngestReport, ingest
from galsearch.embedder.stretch import Stretch
from galsearch.ui.cli import main

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gz_decals_rings_dev.npz"
RNG = np.random.default_rng(0)


# ---- helpers ---------------------------------------------------------------------------------------


def tan_wcs(ra: float, dec: float, shape: tuple[int, int], arcsec_per_pixel: float = 0.5) -> WCS:
    """A TAN WCS whose reference point (ra, dec) is the centre of an image of ``shape``."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = [(shape[1] + 1) / 2, (shape[0] + 1) / 2]
    wcs.wcs.cdelt = [-arcsec_per_pixel / 3600, arcsec_per_pixel / 3600]
    return wcs


def galaxy(
    shape: tuple[int, int], x: float, y: float, amplitude: float = 100.0, sigma: float = 2.0
) -> np.ndarray:
    """A Gaussian blob centred on pixel (x, y)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return amplitude * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))


def cutout(shape: tuple[int, int] = (40, 40)) -> np.ndarray:
    """A float32 galaxy cutout with a little noise."""
    centre = ((shape[1] - 1) / 2, (shape[0] - 1) / 2)
    return (galaxy(shape, *centre) + RNG.normal(0, 0.5, shape)).astype(np.float32)


def write_fits(path: Path, data: np.ndarray, wcs: WCS | None = None, **keywords) -> Path:
    """Write ``data`` as a primary-HDU FITS file with an optional WCS and header keywords."""
    header = wcs.to_header() if wcs is not None else fits.Header()
    header.update(keywords)
    fits.PrimaryHDU(data, header=header).writeto(path)
    return path


def write_picture(path: Path, pixels: np.ndarray) -> Path:
    """Write ``pixels`` with PIL (format from the suffix)."""
    Image.fromarray(pixels).save(path)
    return path


def rgb(shape: tuple[int, int] = (32, 32)) -> np.ndarray:
    """A uint8 RGB image with a bright centre."""
    blob = galaxy(shape, shape[1] / 2, shape[0] / 2, amplitude=200, sigma=5)
    return np.clip(
        np.stack([blob, blob * 0.8, blob * 0.6], axis=-1) + RNG.integers(0, 30, (*shape, 3)), 0, 255
    ).astype(np.uint8)


def run(source: Path, collection: Path, **kwargs) -> IngestReport:
    """Ingest quietly."""
    return ingest(source, collection, progress=False, **kwargs)


def reasons(report: IngestReport) -> dict[str, str]:
    """Skip reason by item id."""
    return {s.id: s.reason for s in report.skipped}


def stored(collection: Path, item_id: str) -> np.ndarray:
    """The stored uint8 image of ``item_id``."""
    coll = open_collection(collection)
    return np.array(coll.images[coll.rows_of(item_id)[0]])


# ---- folders of cutouts ------------------------------------------------------------------------------


def test_folder_of_fits_cutouts_carries_wcs_centre_and_header(tmp_path):
    folder = tmp_path / "cutouts"
    folder.mkdir()
    wcs = {
        "a": tan_wcs(150.1, 2.2, (40, 40)),
        "b": tan_wcs(10.5, -30.25, (40, 40)),
        "c": tan_wcs(359.9, 85, (40, 40)),
    }
    wcs["b"].wcs.crpix = [3.0, 7.0]  # reference point off the centre: the centre must come from the WCS
    centres = {item_id: tuple(map(float, w.pixel_to_world_values(19.5, 19.5))) for item_id, w in wcs.items()}
    write_fits(folder / "a.fits", cutout(), wcs["a"], OBJECT="NGC 1", FILTER="r")
    write_fits(folder / "b.fits.gz", cutout(), wcs["b"])
    hdu = fits.CompImageHDU(cutout(), header=wcs["c"].to_header())
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(folder / "c.fz")
    write_fits(folder / "d.fit", cutout())

    report = run(folder, tmp_path / "coll")

    assert (report.stored, report.skipped) == (4, [])
    coll = open_collection(tmp_path / "coll")
    catalog = coll.catalog.set_index("id")
    assert list(coll.catalog["id"]) == ["a", "b", "c", "d"]
    for item_id, (ra, dec) in centres.items():
        assert catalog.loc[item_id, ["ra", "dec"]].tolist() == pytest.approx([ra, dec], abs=1e-9)
    assert centres["a"] == pytest.approx((150.1, 2.2)) and centres["b"] != pytest.approx((10.5, -30.25))
    assert np.isnan(catalog.loc["d", "ra"])
    assert (catalog.loc["a", "object"], catalog.loc["a", "bands"]) == ("NGC 1", "r")
    assert coll.image_shape == (40, 40, 1)
    assert all(np.ptp(image) > 100 for image in coll.images)


def test_folder_of_png_keeps_uint8_pixels_and_drops_alpha(tmp_path):
    folder = tmp_path / "png"
    folder.mkdir()
    pixels = rgb()
    write_picture(folder / "plain.png", pixels)
    write_picture(folder / "with_alpha.png", np.dstack([pixels, np.full((32, 32), 128, np.uint8)]))

    report = run(folder, tmp_path / "coll")

    assert report.stored == 2
    assert open_collection(tmp_path / "coll").image_shape == (32, 32, 3)
    np.testing.assert_array_equal(stored(tmp_path / "coll", "plain"), pixels)
    np.testing.assert_array_equal(stored(tmp_path / "coll", "with_alpha"), pixels)


def test_greyscale_png_passes_8_bit_through_and_stretches_16_bit(tmp_path):
    folder = tmp_path / "grey"
    folder.mkdir()
    ramp = np.tile(np.arange(10, 42, dtype=np.uint8), (32, 1))
    write_picture(folder / "eight.png", ramp)
    write_picture(folder / "sixteen.png", ramp.astype(np.uint16) * 1000)

    run(folder, tmp_path / "coll", stretch=Stretch("linear", 0, 100))

    assert open_collection(tmp_path / "coll").image_shape == (32, 32, 1)
    np.testing.assert_array_equal(stored(tmp_path / "coll", "eight")[..., 0], ramp)
    sixteen = stored(tmp_path / "coll", "sixteen")[..., 0]
    assert (sixteen.min(), sixteen.max()) == (0, 255)


def test_folder_of_jpeg(tmp_path):
    folder = tmp_path / "jpeg"
    folder.mkdir()
    pixels = rgb()
    write_picture(folder / "one.jpg", pixels)
    write_picture(folder / "two.JPEG", pixels)

    report = run(folder, tmp_path / "coll")

    assert report.stored == 2
    assert list(open_collection(tmp_path / "coll").catalog["id"]) == ["one", "two"]
    decoded = np.asarray(Image.open(folder / "two.JPEG"))
    np.testing.assert_array_equal(stored(tmp_path / "coll", "two"), decoded)  # 8-bit, stored as decoded
    assert np.abs(decoded.astype(int) - pixels).mean() < 10  # JPEG is lossy, but it is the same picture


def test_mixed_folder_reports_non_images_and_reads_subfolders(tmp_path):
    folder = tmp_path / "mixed"
    (folder / "sub").mkdir(parents=True)
    write_fits(folder / "galaxy.fits", cutout((32, 32)))
    write_picture(folder / "picture.png", rgb()[..., 0])
    write_picture(folder / "sub" / "deeper.jpg", rgb()[..., 0])
    (folder / "README.txt").write_text("cutouts from the survey")
    (folder / "positions.csv").write_text("ra,dec\n1,2\n")
    (folder / ".DS_Store").write_bytes(b"\0\1")

    report = run(folder, tmp_path / "coll")

    assert report.stored == 3
    assert list(open_collection(tmp_path / "coll").catalog["id"]) == ["galaxy", "picture", "sub/deeper"]
    assert reasons(report) == {
        "README": "not an image file (suffix .txt); expected FITS, PNG or JPEG",
        "positions": "not an image file (suffix .csv); expected FITS, PNG or JPEG",
    }


def test_folder_of_bad_files_skips_each_with_its_reason(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    write_fits(folder / "good1.fits", cutout())
    write_fits(folder / "good2.fits", cutout())
    good = (folder / "good1.fits").read_bytes()
    (folder / "truncated.fits").write_bytes(good[: len(good) // 2])
    (folder / "header_only.fits").write_bytes(good[:1000])
    (folder / "garbage.fits").write_bytes(b"this is not a FITS file\n" * 200)
    (folder / "not_png.png").write_bytes(b"\x89PNG nonsense" * 50)
    write_fits(folder / "all_nan.fits", np.full((40, 40), np.nan, np.float32))
    write_fits(folder / "all_inf.fits", np.full((40, 40), np.inf, np.float32))
    write_fits(folder / "blank.fits", np.full((40, 40), 5.0, np.float32))
    write_fits(folder / "one_dim.fits", np.arange(100, dtype=np.float32))
    write_fits(folder / "four_dim.fits", np.ones((2, 2, 40, 40), np.float32))
    write_fits(folder / "tiny.fits", cutout((4, 4)))
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(Table({"a": [1, 2]}))]).writeto(folder / "table.fits")
    write_fits(folder / "dup.fits", cutout())
    write_picture(folder / "dup.png", rgb((40, 40))[..., 0])
    (folder / "notes.txt").write_text("observing log")

    report = run(folder, tmp_path / "coll")

    assert report.stored == 3  # good1, good2, dup.fits
    assert list(open_collection(tmp_path / "coll").catalog["id"]) == ["dup", "good1", "good2"]
    why = reasons(report)
    expected = {
        "truncated": "truncated FITS file",
        "header_only": "not a readable FITS file",
        "garbage": "not a readable FITS file",
        "all_nan": "all pixels are NaN or infinite",
        "all_inf": "all pixels are NaN or infinite",
        "blank": "blank image",
        "one_dim": "wrong dimensions",
        "four_dim": "wrong dimensions",
        "tiny": "too small",
        "table": "no image data in any HDU",
        "notes": "not an image file (suffix .txt)",
    }
    for item_id, reason in expected.items():
        assert reason in why[item_id], (item_id, why[item_id])
    sources = {s.source: s.reason for s in report.skipped}
    assert "not a readable PNG image" in sources["not_png.png"]
    assert sources["dup.png"] == "duplicate id (an earlier item has it)"
    assert len(report.skipped) == len(expected) + 2
    assert f"{len(expected) + 2} bad items skipped" in report.summary()


def test_partial_nan_edge_is_filled_and_stored(tmp_path):
    folder = tmp_path / "edge"
    folder.mkdir()
    image = cutout()
    image[:, :10] = np.nan  # a survey edge
    write_fits(folder / "edge.fits", image)

    run(folder, tmp_path / "coll")

    pixels = stored(tmp_path / "coll", "edge")
    assert np.ptp(pixels) > 100
    assert pixels[20, 20, 0] == pixels.max()  # the galaxy is still the brightest thing


# ---- multi-band FITS -----------------------------------------------------------------------------------


def three_bands() -> np.ndarray:
    """A (3, 40, 40) cube whose bands differ in brightness and shape."""
    return np.stack([cutout() * k + galaxy((40, 40), 10 * k, 12, 50) for k in (1, 2, 3)]).astype(np.float32)


def test_multiband_cube_and_multi_hdu_give_three_channels_and_bands_reorder(tmp_path):
    folder = tmp_path / "bands"
    folder.mkdir()
    cube = three_bands()
    write_fits(folder / "cube.fits", cube, BAND0="g", BAND1="r", BAND2="z")
    hdus = [fits.ImageHDU(band, name=f"{name.upper()}_BAND") for band, name in zip(cube, "grz", strict=True)]
    for hdu, name in zip(hdus, "grz", strict=True):
        hdu.header["FILTER"] = name
    mask = fits.ImageHDU(np.zeros((40, 40), np.int16), name="MASK")
    fits.HDUList([fits.PrimaryHDU(), *hdus, mask]).writeto(folder / "multi_hdu.fits")

    run(folder, tmp_path / "rgb")
    run(folder, tmp_path / "zrg", bands=[2, 1, 0])

    assert open_collection(tmp_path / "rgb").image_shape == (40, 40, 3)
    for item_id in ("cube", "multi_hdu"):
        forward, reverse = stored(tmp_path / "rgb", item_id), stored(tmp_path / "zrg", item_id)
        np.testing.assert_array_equal(reverse, forward[..., ::-1])
        assert not np.array_equal(forward[..., 0], forward[..., 2])
    np.testing.assert_array_equal(stored(tmp_path / "rgb", "cube"), stored(tmp_path / "rgb", "multi_hdu"))
    catalog = open_collection(tmp_path / "zrg").catalog.set_index("id")
    assert catalog.loc["cube", "bands"] == catalog.loc["multi_hdu", "bands"] == "z,r,g"


def test_five_band_cube_is_stored_whole_and_other_band_counts_are_skipped(tmp_path):
    folder = tmp_path / "five"
    folder.mkdir()
    five = np.concatenate([three_bands(), three_bands()[:2]])
    write_fits(folder / "a_five.fits", five)
    write_fits(folder / "b_three.fits", three_bands())

    report = run(folder, tmp_path / "coll")
    assert report.stored == 1 and open_collection(tmp_path / "coll").image_shape == (40, 40, 5)
    assert reasons(report)["b_three"].startswith(
        "has 3 unnamed bands but the collection has 5 unnamed bands: a collection keeps one set of bands"
    )

    picked = run(folder, tmp_path / "picked", bands=[0, 2, 4])
    assert list(open_collection(tmp_path / "picked").catalog["id"]) == ["a_five"]
    assert reasons(picked) == {"b_three": "bands [0, 2, 4] asked for, but the image has 3 channel(s)"}


# ---- array files ---------------------------------------------------------------------------------------


def array_fields(n: int = 5) -> dict[str, np.ndarray]:
    """The arrays of a labelled npz/HDF5 source of ``n`` float images."""
    return {
        "images": np.stack([cutout((32, 32)) for _ in range(n)]),
        "labels": np.arange(n) % 2,
        "class_names": np.array(["smooth", "featured"]),
        "ids": np.array([f"gal{i}" for i in range(n)]),
        "ra": np.linspace(10, 11, n),
        "dec": np.linspace(-5, -4, n),
        "mag": np.linspace(17, 19, n).astype(np.float32),
        "vote_fractions": RNG.random((n, 2)).astype(np.float32),
        "vote_fraction_names": np.array(["smooth_fraction", "featured_fraction"]),
    }


def check_labelled_catalog(collection: Path, fields: dict[str, np.ndarray]) -> None:
    """The catalog of an ingested array source has every column, in order."""
    catalog = open_collection(collection).catalog
    assert list(catalog["id"]) == [f"gal{i}" for i in range(len(fields["images"]))]
    assert list(catalog["label"]) == list(fields["labels"])
    assert list(catalog["class_name"]) == list(fields["class_names"][fields["labels"]])
    np.testing.assert_allclose(catalog[["ra", "dec"]].to_numpy(), np.c_[fields["ra"], fields["dec"]])
    np.testing.assert_allclose(catalog["mag"], fields["mag"])
    np.testing.assert_allclose(catalog["featured_fraction"], fields["vote_fractions"][:, 1])


def test_npz_with_labels_ids_coordinates_and_extra_columns(tmp_path):
    fields = array_fields()
    np.savez(tmp_path / "galaxies.npz", **fields)

    report = run(tmp_path / "galaxies.npz", tmp_path / "coll")

    assert report.stored == 5
    check_labelled_catalog(tmp_path / "coll", fields)
    assert open_collection(tmp_path / "coll").catalog["source"][2] == "galaxies.npz[2]"


def test_negative_labels_are_unlabelled_galaxies(tmp_path):
    fields = array_fields() | {"labels": np.array([0, -1, 1, -1, 0])}
    np.savez(tmp_path / "galaxies.npz", **fields)

    run(tmp_path / "galaxies.npz", tmp_path / "coll")

    catalog = open_collection(tmp_path / "coll").catalog
    assert list(catalog["label"]) == [0, -1, 1, -1, 0]
    assert list(catalog["class_name"].fillna("-")) == ["smooth", "-", "featured", "-", "smooth"]


def test_hdf5_with_bytes_ids(tmp_path):
    fields = array_fields()
    with h5py.File(tmp_path / "galaxies.h5", "w") as f:
        for name, values in fields.items():
            f[name] = values.astype("S") if values.dtype.kind == "U" else values

    report = run(tmp_path / "galaxies.h5", tmp_path / "coll")

    assert report.stored == 5
    check_labelled_catalog(tmp_path / "coll", fields)


def test_bad_items_in_an_array_file_are_skipped_and_reingest_counts_present(tmp_path):
    images = np.stack([cutout((32, 32)) for _ in range(7)])
    images[1] = np.nan
    images[2] = np.inf
    images[3] = 7.0
    images[4, :, :5] = np.nan  # a masked edge: kept
    ids = np.array(["ok0", "nan", "inf", "blank", "edge", "ok0", "ok6"])
    np.savez(tmp_path / "mixed.npz", images=images, ids=ids)

    first = run(tmp_path / "mixed.npz", tmp_path / "coll")
    second = run(tmp_path / "mixed.npz", tmp_path / "coll")

    assert (first.stored, len(first.skipped)) == (3, 4)
    assert reasons(first) == {
        "nan": "all pixels are NaN or infinite",
        "inf": "all pixels are NaN or infinite",
        "blank": "blank image: every pixel equals 7",
        "ok0": "duplicate id (an earlier item has it)",
    }
    assert (second.stored, second.already_present) == (0, 4)  # ok0 twice, edge, ok6
    assert len(open_collection(tmp_path / "coll")) == 3
    assert np.ptp(stored(tmp_path / "coll", "edge")) > 100


@pytest.mark.parametrize("shape", [(6, 100), (2, 3, 32, 32, 1)], ids=["1-D items", "5-D array"])
def test_array_file_with_wrong_dimensions_is_refused(tmp_path, shape):
    np.savez(tmp_path / "wrong.npz", images=np.ones(shape, np.float32))
    with pytest.raises(IngestError, match=r"'images' must be \(N, H, W\), \(N, H, W, C\) or \(N, C, H, W\)"):
        run(tmp_path / "wrong.npz", tmp_path / "coll")


def test_source_without_any_valid_image_is_refused(tmp_path):
    np.savez(tmp_path / "nan.npz", images=np.full((3, 32, 32), np.nan, np.float32))
    with pytest.raises(IngestError, match=r"no valid images .* all pixels are NaN or infinite"):
        run(tmp_path / "nan.npz", tmp_path / "coll")
    assert not (tmp_path / "coll" / MANIFEST).exists()


# ---- a large image with a source table -----------------------------------------------------------------

FIELD_SHAPE = (300, 260)
# Pixel positions (x, y) of galaxies in the field; the last one is 4 px from the edge (cutout partly off).
GALAXIES = [(60.3, 80.7), (150.0, 150.0), (230.5, 40.2), (120.6, 270.1), (4.0, 160.0)]
OFF_FIELD = [(-50.0, 100.0), (1.0, 1.0)]  # outside; inside but with most of the cutout off the image


def write_field(path: Path, bands: int = 1) -> WCS:
    """A large FITS image (or cube) with WCS and Gaussian galaxies at GALAXIES; returns its WCS."""
    wcs = tan_wcs(185.0, 15.0, FIELD_SHAPE, arcsec_per_pixel=0.25)
    sky = RNG.normal(0, 0.3, FIELD_SHAPE) + sum(galaxy(FIELD_SHAPE, x, y, 80, 1.5) for x, y in GALAXIES)
    data = np.stack([sky * (k + 1) for k in range(bands)]) if bands > 1 else sky
    fits.PrimaryHDU(data.astype(np.float32), header=wcs.to_header()).writeto(path)
    return wcs


def source_table(wcs: WCS) -> dict[str, list]:
    """RA/Dec of GALAXIES then OFF_FIELD, with a magnitude column."""
    ra, dec = wcs.pixel_to_world_values(*np.array(GALAXIES + OFF_FIELD).T)
    return {"ra": list(ra), "dec": list(dec), "mag": [18.0 + i for i in range(len(ra))]}


def check_stamps(collection: Path, ids: list[str], table: dict[str, list]) -> None:
    """Each galaxy's stamp is centred on it and carries its RA/Dec and magnitude."""
    coll = open_collection(collection)
    assert list(coll.catalog["id"]) == ids[: len(GALAXIES)]
    for row, image in enumerate(coll.images):
        peak = np.argwhere(image[..., 0] == image[..., 0].max()).mean(axis=0)
        assert np.abs(peak - 15.5).max() <= 1.5, (ids[row], peak)
    np.testing.assert_allclose(coll.catalog["ra"], table["ra"][: len(GALAXIES)], rtol=0, atol=1e-9)
    np.testing.assert_allclose(coll.catalog["dec"], table["dec"][: len(GALAXIES)], rtol=0, atol=1e-9)
    assert list(coll.catalog["mag"]) == table["mag"][: len(GALAXIES)]


def check_off_field(report: IngestReport, ids: list[str]) -> None:
    """The two off-field rows are skipped with their reasons."""
    why = reasons(report)
    assert why[ids[-2]].startswith("position outside the image")
    assert why[ids[-1]] == "more than half the cutout falls outside the image"
    assert report.stored == len(GALAXIES)


def test_large_image_with_fits_table(tmp_path):
    table = source_table(write_field(tmp_path / "field.fits"))
    rows = Table({**table, "source": ["sdss"] * len(table["ra"])})
    rows.write(tmp_path / "sources.fits")

    report = run(
        tmp_path / "field.fits", tmp_path / "coll", catalog=tmp_path / "sources.fits", cutout_size=32
    )

    ids = [f"sources-{i}" for i in range(len(table["ra"]))]
    check_off_field(report, ids)
    check_stamps(tmp_path / "coll", ids, table)
    catalog = open_collection(tmp_path / "coll").catalog
    assert set(catalog["table_source"]) == {"sdss"}  # a table column named like a catalog column is kept
    assert catalog["source"][0] == "sources.fits[0]"
    assert open_collection(tmp_path / "coll").image_shape == (32, 32, 1)


def test_large_image_with_csv_table(tmp_path):
    table = source_table(write_field(tmp_path / "field.fits"))
    ids = [f"obj-{i}" for i in range(len(table["ra"]))]
    csv = pd.DataFrame({"ID": ids, "RAJ2000": table["ra"], "DEJ2000": table["dec"], "mag": table["mag"]})
    bad_row = pd.DataFrame({"ID": ["bad-dec"], "RAJ2000": [185.0], "DEJ2000": [95.0], "mag": [20.0]})
    pd.concat([csv, bad_row]).to_csv(tmp_path / "sources.csv", index=False)

    report = run(tmp_path / "field.fits", tmp_path / "coll", catalog=tmp_path / "sources.csv", cutout_size=32)

    assert reasons(report)["bad-dec"] == "invalid position ra=185.0, dec=95.0"
    check_off_field(report, ids)
    check_stamps(tmp_path / "coll", ids, table)


def test_large_cube_gives_multiband_stamps(tmp_path):
    table = source_table(write_field(tmp_path / "cube.fits", bands=3))
    Table(table).write(tmp_path / "sources.csv")

    report = run(tmp_path / "cube.fits", tmp_path / "coll", catalog=tmp_path / "sources.csv", cutout_size=32)

    assert report.stored == len(GALAXIES)
    assert open_collection(tmp_path / "coll").image_shape == (32, 32, 3)


def test_large_image_without_wcs_or_table_without_radec_is_refused(tmp_path):
    write_fits(tmp_path / "no_wcs.fits", np.ones((100, 100), np.float32))
    table = source_table(write_field(tmp_path / "field.fits"))
    Table(table).write(tmp_path / "sources.csv")
    Table({"x": [1.0], "y": [2.0]}).write(tmp_path / "pixels.csv")

    with pytest.raises(IngestError, match="has no celestial WCS"):
        run(tmp_path / "no_wcs.fits", tmp_path / "coll", catalog=tmp_path / "sources.csv")
    with pytest.raises(IngestError, match=r"no RA/Dec columns .* its columns are \['x', 'y'\]"):
        run(tmp_path / "field.fits", tmp_path / "coll", catalog=tmp_path / "pixels.csv")


# ---- stretch, resize and what the collection remembers -------------------------------------------------


def test_asinh_shows_more_faint_pixels_than_linear(tmp_path):
    yy, xx = np.mgrid[:64, :64]
    radius = np.hypot(xx - 32, yy - 32)
    image = 1000 * np.exp(-(radius**2) / 4) + 2 * np.exp(-radius / 10) + RNG.normal(0, 0.01, (64, 64))
    np.savez(tmp_path / "one.npz", images=image[None].astype(np.float32))

    run(tmp_path / "one.npz", tmp_path / "asinh", stretch=Stretch("asinh"))
    run(tmp_path / "one.npz", tmp_path / "linear", stretch=Stretch("linear"))

    asinh = np.count_nonzero(stored(tmp_path / "asinh", "one-0"))
    linear = np.count_nonzero(stored(tmp_path / "linear", "one-0"))
    assert asinh > 2 * linear


def test_two_sizes_become_one_and_collection_remembers_preprocessing(tmp_path):
    folder = tmp_path / "sizes"
    folder.mkdir()
    write_picture(folder / "a_small.png", rgb((32, 32)))
    write_picture(folder / "b_large.png", rgb((48, 48)))
    write_picture(folder / "c_wide.png", rgb((48, 64)))

    report = run(folder, tmp_path / "coll", stretch=Stretch("sqrt", 1, 99))

    coll = open_collection(tmp_path / "coll")
    assert report.stored == 3
    assert coll.images.shape == (3, 32, 32, 3)
    manifest = json.loads((tmp_path / "coll" / MANIFEST).read_text())
    assert manifest["preprocessing"] == {
        "size": 32,
        "channels": 3,
        "crop": 1.0,
        "stretch": {
            "kind": "sqrt",
            "lower_percentile": 1,
            "upper_percentile": 99,
            "a": 0.1,
            "joint": True,
            "band_scales": None,
        },
    }
    assert manifest["sources"][0]["stored"] == 3
    run(folder, tmp_path / "coll")  # a later ingest without a stretch uses the stored one
    run(folder, tmp_path / "coll", stretch=Stretch("sqrt", 1, 99))  # or names it again
    with pytest.raises(IngestError, match=r"stretches its images with a sqrt.*not a linear"):
        run(folder, tmp_path / "coll", stretch=Stretch("linear"))
    assert open_collection(tmp_path / "coll").preprocessing["stretch"]["kind"] == "sqrt"


def test_cli_refuses_another_stretch_for_an_existing_collection(tmp_path):
    write_blob_npz(tmp_path / "blobs.npz", 4)
    assert (
        main(["ingest", str(tmp_path / "blobs.npz"), str(tmp_path / "c"), "--quiet", "--stretch", "sqrt"])
        == 0
    )
    again = ["ingest", str(tmp_path / "blobs.npz"), str(tmp_path / "c"), "--quiet"]
    assert main(again) == 0  # no stretch option: the stored one
    assert main([*again, "--percentiles", "1", "99"]) == 1  # sqrt with another clip is another stretch
    assert main([*again, "--stretch", "sqrt"]) == 0
    with pytest.raises(SystemExit):
        main([*again, "--percentiles", "90", "10"])  # a usage error, not a traceback


def test_crop_keeps_the_centre_at_full_resolution_and_is_remembered(tmp_path):
    images = np.stack([rgb((96, 96)) for _ in range(3)])
    np.savez(tmp_path / "wide.npz", images=images, ids=np.array(["a", "b", "c"]))
    run(tmp_path / "wide.npz", tmp_path / "coll", crop=2 / 3)
    coll = open_collection(tmp_path / "coll")
    np.testing.assert_array_equal(coll.images, images[:, 16:80, 16:80])  # the central 64 px, unresampled
    assert coll.preprocessing["crop"] == pytest.approx(2 / 3)
    with pytest.raises(IngestError, match=r"keeps the central 0\.667"):
        run(tmp_path / "wide.npz", tmp_path / "coll", crop=0.5)
    with pytest.raises(IngestError, match=r"in \(0, 1\]"):
        run(tmp_path / "wide.npz", tmp_path / "other", crop=1.5)
    np.savez(tmp_path / "small.npz", images=np.stack([rgb((12, 12))]), ids=np.array(["d"]))
    with pytest.raises(IngestError, match="central 6 after cropping"):
        run(tmp_path / "small.npz", tmp_path / "tiny", crop=0.5)


# ---- crash safety of the collection ---------------------------------------------------------------------


def npz_of(path: Path, ids: list[str]) -> Path:
    """An npz of uint8 RGB images (stored as-is) with the given ids."""
    np.savez(path, images=np.stack([rgb() for _ in ids]), ids=np.array(ids))
    return path


def test_interrupted_append_is_ignored_and_next_ingest_appends_cleanly(tmp_path):
    coll_path = tmp_path / "coll"
    run(npz_of(tmp_path / "first.npz", ["a", "b", "c"]), coll_path)
    before = np.array(open_collection(coll_path).images)
    with open(coll_path / IMAGES, "ab") as f:  # a killed writer left half a batch behind
        f.write(RNG.integers(0, 256, 5000, dtype=np.uint8).tobytes())

    assert len(open_collection(coll_path)) == 3
    second = npz_of(tmp_path / "second.npz", ["d", "e"])
    run(second, coll_path)

    coll = open_collection(coll_path)
    assert list(coll.catalog["id"]) == ["a", "b", "c", "d", "e"]
    assert (coll_path / IMAGES).stat().st_size == 5 * coll.image_row_bytes
    np.testing.assert_array_equal(coll.images[:3], before)
    with np.load(second) as arrays:
        np.testing.assert_array_equal(coll.images[3:], arrays["images"])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: (p / MANIFEST).write_text("{not json"), "manifest.json is not valid JSON"),
        (lambda p: (p / MANIFEST).unlink(), "manifest.json is missing"),
        (lambda p: (p / "catalog.parquet").unlink(), "catalog.parquet is missing"),
        (
            lambda p: pd.DataFrame({"id": ["a", "b"], "source": ["x", "y"]}).to_parquet(
                p / "catalog.parquet"
            ),
            "catalog.parquet has 2 rows but the manifest counts 3 galaxies",
        ),
        (lambda p: (p / "catalog.parquet").write_bytes(b"PAR1 broken"), "catalog.parquet cannot be read"),
        (
            lambda p: (p / IMAGES).write_bytes(b"\0" * 100),
            "images.u8 holds 0 complete rows but the manifest counts 3",
        ),
    ],
    ids=["bad-json", "no-manifest", "no-catalog", "catalog-rows", "bad-catalog", "short-images"],
)
def test_damaged_collection_names_the_problem(tmp_path, damage, message):
    run(npz_of(tmp_path / "first.npz", ["a", "b", "c"]), tmp_path / "coll")
    damage(tmp_path / "coll")
    with pytest.raises(CollectionError, match=message):
        open_collection(tmp_path / "coll")


# ---- the real data ------------------------------------------------------------------------------------


@pytest.mark.skipif(not REAL_DATA.exists(), reason=f"real data not found at {REAL_DATA}")
def test_real_galaxy_zoo_rings(tmp_path):
    report = run(REAL_DATA, tmp_path / "rings")

    coll = open_collection(tmp_path / "rings")
    assert report.stored == len(coll) == 306
    assert coll.image_shape == (128, 128, 3)
    catalog = coll.catalog
    assert set(catalog["class_name"]) == {"ring", "not_ring"}
    assert (catalog["class_name"] == "ring").sum() == 153
    assert set(catalog["label"]) == {0, 1}
    fractions = catalog["smooth-or-featured_featured-or-disk_fraction"]
    assert fractions.between(0, 1).all()
    with np.load(REAL_DATA) as arrays:
        np.testing.assert_array_equal(coll.images[0], arrays["images"][0])  # 8-bit at 128 px: stored as is
