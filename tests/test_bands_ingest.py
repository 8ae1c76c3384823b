"""Ingest of any number of bands (g, r, i, z, y here) from every kind of source, with real files, and the
colour-keeping Lupton stretch: band names recorded, band ratios kept, other bands refused."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.visualization import AsinhStretch, AsymmetricPercentileInterval
from astropy.wcs import WCS

from galsearch.embedder.collection import MANIFEST, open_collection
from galsearch.embedder.errors import IngestError
from galsearch.embedder.ingest import IngestReport, ingest
from galsearch.embedder.stretch import Stretch
from galsearch.ui.cli import main

BANDS = ["g", "r", "i", "z", "y"]
SIDE = 32
RNG = np.random.default_rng(5)


def blob(side: int = SIDE, sigma: float = 3.0, seed: int = 0) -> np.ndarray:
    """A round Gaussian galaxy of peak 100, slightly off-centre by seed, without noise."""
    yy, xx = np.mgrid[:side, :side] - (side - 1) / 2
    dx = np.random.default_rng(seed).uniform(-1, 1)
    return 100 * np.exp(-((xx - dx) ** 2 + yy**2) / (2 * sigma**2))


def bands_image(fluxes: list[float], seed: int = 0, noise: float = 0.2) -> np.ndarray:
    """A (bands, H, W) float32 galaxy whose bands are one shape times ``fluxes``, plus sky noise."""
    shape = blob(seed=seed)
    noisy = [shape * f + RNG.normal(0, noise, shape.shape) for f in fluxes]
    return np.stack(noisy).astype(np.float32)


BLUE = [1.0, 1.0, 1.0, 1.0, 1.0]
RED = [1.0, 1.0, 1.0, 2.0, 2.0]  # the same in g, r, i; twice as bright in z and y


def run(source, collection, **kwargs) -> IngestReport:
    return ingest(source, collection, progress=False, **kwargs)


def reasons(report: IngestReport) -> dict[str, str]:
    return {s.id: s.reason for s in report.skipped}


def stored(collection, item_id: str) -> np.ndarray:
    coll = open_collection(collection)
    return np.array(coll.images[coll.rows_of(item_id)[0]], dtype=float)


def band_ratio(image: np.ndarray, top: list[int], bottom: list[int]) -> float:
    """Median over the galaxy's pixels of the mean of channels ``top`` over the mean of ``bottom``."""
    galaxy = image.mean(axis=2) > 60
    return float(np.median(image[..., top].mean(axis=2)[galaxy] / image[..., bottom].mean(axis=2)[galaxy]))


def write_cube(path, cube: np.ndarray, names: list[str] | None = BANDS) -> None:
    header = fits.Header({f"BAND{i}": name for i, name in enumerate(names or [])})
    fits.PrimaryHDU(cube, header).writeto(path)


# ---- FITS cubes and colour ---------------------------------------------------------------------------


def test_five_band_fits_cubes_record_their_bands_and_keep_colour(tmp_path):
    folder = tmp_path / "cubes"
    folder.mkdir()
    write_cube(folder / "blue.fits", bands_image(BLUE, seed=1))
    write_cube(folder / "red.fits", bands_image(RED, seed=1))

    report = run(folder, tmp_path / "coll")

    coll = open_collection(tmp_path / "coll")
    assert report.stored == 2 and coll.image_shape == (SIDE, SIDE, 5)
    assert coll.preprocessing["bands"] == BANDS and coll.preprocessing["stretch"]["kind"] == "lupton"
    blue, red = stored(tmp_path / "coll", "blue"), stored(tmp_path / "coll", "red")
    zy, gri = [3, 4], [0, 1, 2]
    assert band_ratio(blue, zy, gri) == pytest.approx(1.0, abs=0.05)
    assert band_ratio(red, zy, gri) == pytest.approx(2.0, abs=0.1)  # the ratio of the fluxes


def test_per_band_stretch_erases_colour_and_is_only_on_request(tmp_path):
    folder = tmp_path / "cubes"
    folder.mkdir()
    write_cube(folder / "blue.fits", bands_image(BLUE, seed=1))
    write_cube(folder / "red.fits", bands_image(RED, seed=1))

    run(folder, tmp_path / "per_band", stretch=Stretch(joint=False))

    zy, gri = [3, 4], [0, 1, 2]
    red = stored(tmp_path / "per_band", "red")
    assert band_ratio(red, zy, gri) == pytest.approx(1.0, abs=0.05)  # each band filled its own range
    assert Stretch().joint and Stretch().kind == "lupton"


def test_lupton_stretch_keeps_band_ratios_through_saturation_and_scales_bands():
    image = np.zeros((16, 16, 3))
    image[..., 0] = np.linspace(-50, 1000, 256).reshape(16, 16)  # sky-subtracted: black is 0
    image[..., 1] = 2 * image[..., 0]
    image[..., 2] = 0.5 * image[..., 0]

    out = Stretch(upper_percentile=50).apply(image)  # half the pixels above the scale: saturated

    bright = out[..., 0] > 0.05
    np.testing.assert_allclose(out[..., 1][bright] / out[..., 0][bright], 2, rtol=1e-6)
    np.testing.assert_allclose(out[..., 2][bright] / out[..., 0][bright], 0.5, rtol=1e-6)
    assert out.max() == pytest.approx(1) and out[..., 1].max() == pytest.approx(1)
    scaled = Stretch(band_scales=(2, 1, 4)).apply(image)  # zero points that make every band equal
    np.testing.assert_allclose(scaled[..., 0], scaled[..., 1], atol=1e-6)
    np.testing.assert_allclose(scaled[..., 2], scaled[..., 1], atol=1e-6)
    with pytest.raises(ValueError, match="2 band scales for an image of 3 band"):
        Stretch(band_scales=(1, 2)).apply(image)
    with pytest.raises(ValueError, match="positive"):
        Stretch(band_scales=(1, -2, 1))
    assert "keeping band ratios" in str(Stretch()) and "scaled by 2, 1, 4" in str(
        Stretch(band_scales=[2, 1, 4])
    )


def test_an_old_asinh_manifest_loads_and_stretches_as_before(tmp_path):
    np.savez(tmp_path / "a.npz", images=np.moveaxis(bands_image(RED[:3]), 0, -1)[None], ids=np.array(["a"]))
    run(tmp_path / "a.npz", tmp_path / "old", stretch=Stretch("asinh"))
    manifest = json.loads((tmp_path / "old" / MANIFEST).read_text())
    del manifest["preprocessing"]["stretch"]["band_scales"]  # as written before band scales existed
    (tmp_path / "old" / MANIFEST).write_text(json.dumps(manifest))

    coll = open_collection(tmp_path / "old")
    assert coll.stretch == Stretch("asinh", 0.5, 99.5, 0.1, True)
    image = RNG.normal(0, 1, (24, 24, 3)) + 50 * blob(24)[..., None] * np.array([1, 2, 3])
    interval = AsymmetricPercentileInterval(0.5, 99.5)
    before = AsinhStretch(a=0.1)(interval(image, clip=True), clip=True)  # the stretch as it was written
    np.testing.assert_array_equal(coll.stretch.apply(image), before.astype(np.float32))
    per_channel = Stretch("asinh", joint=False).apply(image)
    for c in range(3):
        expected = AsinhStretch(a=0.1)(interval(image[..., c], clip=True), clip=True)
        np.testing.assert_array_equal(per_channel[..., c], expected.astype(np.float32))
    np.savez(tmp_path / "b.npz", images=np.moveaxis(bands_image(RED[:3]), 0, -1)[None], ids=np.array(["b"]))
    assert run(tmp_path / "b.npz", tmp_path / "old").stored == 1  # appended with the stored asinh stretch


# ---- array files ------------------------------------------------------------------------------------


def test_npz_channels_last_and_hdf5_channels_first_give_the_same_collection(tmp_path):
    cubes = np.stack([bands_image(BLUE, seed=2), bands_image(RED, seed=3)])  # (N, C, H, W)
    ids = np.array(["blue", "red"])
    np.savez(tmp_path / "last.npz", images=np.moveaxis(cubes, 1, -1), ids=ids, band_names=np.array(BANDS))
    with h5py.File(tmp_path / "first.h5", "w") as f:
        f["images"], f["ids"], f["band_names"] = cubes, ids.astype("S"), np.array(BANDS).astype("S")
    np.savez(tmp_path / "unnamed.npz", images=cubes, ids=ids)  # C=5 is the short axis: channels first

    for name in ("last.npz", "first.h5", "unnamed.npz"):
        assert run(tmp_path / name, tmp_path / name.replace(".", "_")).stored == 2

    last, first = open_collection(tmp_path / "last_npz"), open_collection(tmp_path / "first_h5")
    np.testing.assert_array_equal(last.images[:], first.images[:])
    np.testing.assert_array_equal(open_collection(tmp_path / "unnamed_npz").images[:], last.images[:])
    assert last.preprocessing["bands"] == first.preprocessing["bands"] == BANDS
    assert "bands" not in open_collection(tmp_path / "unnamed_npz").preprocessing  # the fallbacks apply
    assert "band_names" not in last.catalog.columns


def test_array_layouts_that_cannot_be_told_apart_are_refused(tmp_path):
    np.savez(tmp_path / "square.npz", images=np.ones((2, 12, 12, 12), np.float32))
    with pytest.raises(IngestError, match=r"cannot tell which axis .* add a 'band_names' array"):
        run(tmp_path / "square.npz", tmp_path / "c1")
    np.savez(
        tmp_path / "named.npz", images=np.ones((2, 5, 20, 20), np.float32), band_names=np.array(["g", "r"])
    )
    with pytest.raises(IngestError, match=r"2 band_names, but 'images' of shape \(2, 5, 20, 20\)"):
        run(tmp_path / "named.npz", tmp_path / "c2")
    names = np.array([f"f{k}" for k in range(17)])
    np.savez(
        tmp_path / "many.npz", images=RNG.normal(size=(1, 20, 20, 17)).astype(np.float32), band_names=names
    )
    with pytest.raises(IngestError, match="has 17 bands; a collection holds 1 to 16"):
        run(tmp_path / "many.npz", tmp_path / "c3")


def test_bands_are_picked_by_name_or_number_and_recorded_in_that_order(tmp_path):
    cube = bands_image(RED, seed=4)
    np.savez(tmp_path / "a.npz", images=cube[None], band_names=np.array(BANDS), ids=np.array(["a"]))

    run(tmp_path / "a.npz", tmp_path / "zrg", bands=["z", "r", "g"])
    run(tmp_path / "a.npz", tmp_path / "numbers", bands=[3, 1, 0])

    for name in ("zrg", "numbers"):
        assert open_collection(tmp_path / name).preprocessing["bands"] == ["z", "r", "g"]
    np.testing.assert_array_equal(stored(tmp_path / "zrg", "a"), stored(tmp_path / "numbers", "a"))
    with pytest.raises(IngestError, match="no band 'u': the bands are g,r,i,z,y"):
        run(tmp_path / "a.npz", tmp_path / "u", bands=["u", "g"])


def test_a_collection_refuses_other_bands_naming_both_lists(tmp_path):
    np.savez(tmp_path / "grizy.npz", images=bands_image(BLUE)[None], band_names=np.array(BANDS))
    other = np.array(["u", "g", "r", "i", "z"])
    np.savez(tmp_path / "ugriz.npz", images=bands_image(BLUE)[None], band_names=other, ids=np.array(["x"]))
    np.savez(tmp_path / "three.npz", images=bands_image(BLUE)[:3][None], ids=np.array(["y"]))
    run(tmp_path / "grizy.npz", tmp_path / "coll")

    with pytest.raises(
        IngestError, match=r"has 5 bands \(u,g,r,i,z\) but the collection has 5 bands \(g,r,i,z,y\)"
    ):
        run(tmp_path / "ugriz.npz", tmp_path / "coll")
    with pytest.raises(
        IngestError, match=r"has 3 unnamed bands but the collection has 5 bands \(g,r,i,z,y\)"
    ):
        run(tmp_path / "three.npz", tmp_path / "coll")
    assert len(open_collection(tmp_path / "coll")) == 1


# ---- one FITS file per band --------------------------------------------------------------------------


def write_band_folders(root, galaxies: dict[str, list[float]]) -> None:
    """root/BAND/NAME.fits for every band and galaxy (one band per file, FILTER in the header)."""
    for band in BANDS:
        (root / band).mkdir(parents=True)
    for seed, (name, fluxes) in enumerate(galaxies.items()):
        for band, plane in zip(BANDS, bands_image(fluxes, seed=seed), strict=True):
            fits.PrimaryHDU(plane, fits.Header({"FILTER": band, "OBJECT": name})).writeto(
                root / band / f"{name}.fits"
            )


def test_a_folder_per_band_gives_one_galaxy_per_name_and_reports_a_missing_band(tmp_path):
    write_band_folders(tmp_path / "bands", {"NGC1": BLUE, "NGC2": RED, "NGC3": RED})
    (tmp_path / "bands" / "z" / "NGC3.fits").unlink()
    (tmp_path / "bands" / "r" / "notes.txt").write_text("seeing 1.1 arcsec")
    (tmp_path / "bands" / "README").write_text("g, r, i, z, y cutouts")

    report = run(tmp_path / "bands", tmp_path / "coll")

    coll = open_collection(tmp_path / "coll")
    assert (
        list(coll.catalog["id"]) == ["NGC1", "NGC2"] and coll.preprocessing["bands"] == BANDS
    )  # blue to red
    assert reasons(report)["NGC3"] == "missing band z: no NGC3 file in z/"
    assert "not an image file" in reasons(report)["r/notes.txt"]
    assert reasons(report)["README"] == "not in a band folder (g, r, i, z, y)"
    assert coll.catalog.set_index("id").loc["NGC2", "object"] == "NGC2"
    assert band_ratio(stored(tmp_path / "coll", "NGC2"), [3, 4], [0, 1, 2]) == pytest.approx(2.0, abs=0.1)

    run(tmp_path / "bands", tmp_path / "zrg", bands=["z", "r", "g"])
    assert band_ratio(stored(tmp_path / "zrg", "NGC2"), [0], [1, 2]) == pytest.approx(2.0, abs=0.1)
    assert open_collection(tmp_path / "zrg").preprocessing["bands"] == ["z", "r", "g"]
    with pytest.raises(IngestError, match="ingests a folder of cutouts, one file per galaxy"):
        ingest(tmp_path / "bands", tmp_path / "dask", workers=1, progress=False)


def test_a_table_of_file_names_gives_the_same_galaxies_and_reports_missing_files(tmp_path):
    write_band_folders(tmp_path / "bands", {"NGC1": BLUE, "NGC2": RED})
    rows = {
        "name": ["NGC1", "NGC2", "NGC3", "NGC4"],
        **{band: [f"bands/{band}/NGC{k}.fits" for k in (1, 2, 3)] + [""] for band in BANDS},
        "RA": [10.0, 11.0, 12.0, 13.0],
        "DEC": [-1.0, -2.0, -3.0, -4.0],
        "mag": [17.0, 18.0, 19.0, 20.0],
    }
    Table(rows).write(tmp_path / "files.csv")

    report = run(tmp_path / "files.csv", tmp_path / "coll")
    run(tmp_path / "bands", tmp_path / "folders")

    coll = open_collection(tmp_path / "coll")
    assert coll.preprocessing["bands"] == BANDS and list(coll.catalog["id"]) == ["NGC1", "NGC2"]
    np.testing.assert_array_equal(coll.images[:], open_collection(tmp_path / "folders").images[:])
    row = coll.catalog.set_index("id").loc["NGC2"]
    assert (row["ra"], row["dec"], row["mag"], row["source"]) == (11.0, -2.0, 18.0, "files.csv[1]")
    Table(rows).write(tmp_path / "files.fits")  # a FITS table names files as well as a CSV one
    assert run(tmp_path / "files.fits", tmp_path / "fits_table").stored == 2
    with pytest.raises(IngestError, match=r"don't know how to ingest .*NGC1\.fits"):
        run(tmp_path / "bands" / "g" / "NGC1.fits", tmp_path / "image")
    why = reasons(report)
    assert why["NGC3"].startswith("missing band g (") and why["NGC3"].endswith("NGC3.fits): no such file")
    assert why["NGC4"] == "missing band g,r,i,z,y: empty cell"


# ---- a large image with a source table -------------------------------------------------------------------


def sky_wcs(shape: tuple[int, int], shift: float = 0.0) -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [185.0, 15.0]
    wcs.wcs.crpix = [(shape[1] + 1) / 2 + shift, (shape[0] + 1) / 2]
    wcs.wcs.cdelt = [-0.25 / 3600, 0.25 / 3600]
    return wcs


def test_aligned_band_images_cut_around_a_source_table(tmp_path):
    shape = (120, 100)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    galaxy = 100 * np.exp(-((xx - 50) ** 2 + (yy - 60) ** 2) / 8)
    wcs = sky_wcs(shape)
    ra, dec = wcs.pixel_to_world_values(50, 60)
    Table({"ra": [ra], "dec": [dec]}).write(tmp_path / "sources.csv")
    fluxes = dict(zip(BANDS, RED, strict=True))
    hdus = [fits.PrimaryHDU()]
    (tmp_path / "field").mkdir()
    for band in BANDS[::-1]:  # written red to blue: the names order them
        plane = (galaxy * fluxes[band] + RNG.normal(0, 0.2, shape)).astype(np.float32)
        header = wcs.to_header()
        header["FILTER"] = band
        hdus.append(fits.ImageHDU(plane, header))
        fits.PrimaryHDU(plane, header).writeto(tmp_path / "field" / f"field_{band}.fits")
    fits.HDUList(hdus).writeto(tmp_path / "hdus.fits")

    for source in ("hdus.fits", "field"):
        report = run(
            tmp_path / source, tmp_path / f"c_{source}", catalog=tmp_path / "sources.csv", cutout_size=24
        )
        assert report.stored == 1
    by_hdu, by_file = open_collection(tmp_path / "c_hdus.fits"), open_collection(tmp_path / "c_field")
    assert by_hdu.preprocessing["bands"] == ["y", "z", "i", "r", "g"]  # HDU order
    assert by_file.preprocessing["bands"] == BANDS  # files: blue to red
    np.testing.assert_array_equal(by_hdu.images[0][..., ::-1], by_file.images[0])

    moved = fits.getheader(tmp_path / "field" / "field_z.fits")
    moved.update(sky_wcs(shape, shift=3).to_header())
    fits.PrimaryHDU(fits.getdata(tmp_path / "field" / "field_z.fits"), moved).writeto(
        tmp_path / "field" / "field_z.fits", overwrite=True
    )
    with pytest.raises(IngestError, match=r"field_z.fits is not aligned with .*3.00 pixels apart"):
        run(tmp_path / "field", tmp_path / "moved", catalog=tmp_path / "sources.csv")


# ---- the command line ----------------------------------------------------------------------------------


def test_cli_takes_band_names_and_zero_points(tmp_path, capsys):
    folder = tmp_path / "cubes"
    folder.mkdir()
    write_cube(folder / "red.fits", bands_image(RED, seed=1))
    command = ["ingest", str(folder), str(tmp_path / "coll"), "--quiet"]

    assert main([*command, "--bands", "y,z,g", "--zero-points", "z=0.5,y=0.5"]) == 0

    coll = open_collection(tmp_path / "coll")
    assert coll.preprocessing["bands"] == ["y", "z", "g"]
    assert coll.stretch.band_scales == (0.5, 0.5, 1.0)
    # z and y fluxes halved: the red galaxy is stored as grey as a blue one
    assert band_ratio(stored(tmp_path / "coll", "red"), [0, 1], [2]) == pytest.approx(1.0, abs=0.05)
    assert main([*command, "--bands", "y,z,g", "--zero-points", "z=0.5,y=0.5"]) == 0  # the same: fine
    assert main([*command, "--bands", "y,z,g", "--zero-points", "z=0.4"]) == 1
    assert "not by the zero points" in capsys.readouterr().err
    assert main(["ingest", str(folder), str(tmp_path / "c2"), "--quiet", "--zero-points", "q=2"]) == 1
    assert "zero points for band q, but the bands are g,r,i,z,y" in capsys.readouterr().err
    for bad in ("z=0", "z=-1", "z", "z=1,z=2", "z=nan", "z=__import__('os')"):
        with pytest.raises(SystemExit):
            main([*command, "--zero-points", bad])


# ---- query images ------------------------------------------------------------------------------------


def test_a_query_cube_gives_the_collections_bands_in_its_order(tmp_path):
    from conftest import TINY_ENCODER

    from galsearch.embedder import embed
    from galsearch.index.query import QueryError, embed_image_file

    (tmp_path / "cubes").mkdir()
    cubes = {f"g{i}": bands_image(RED if i % 2 else BLUE, seed=i) for i in range(4)}
    for name, cube in cubes.items():
        write_cube(tmp_path / "cubes" / f"{name}.fits", cube)
    run(tmp_path / "cubes", tmp_path / "coll")
    embed(tmp_path / "coll", TINY_ENCODER, device="cpu", progress=False)
    coll = open_collection(tmp_path / "coll")
    order = [4, 3, 2, 1, 0]  # y, z, i, r, g: the same galaxy, its bands in another order
    write_cube(tmp_path / "reversed.fits", cubes["g1"][order], [BANDS[i] for i in order])
    vector = embed_image_file(coll, tmp_path / "reversed.fits", "cpu")
    np.testing.assert_allclose(vector, coll.embeddings[coll.rows_of("g1")[0]], rtol=1e-4, atol=1e-5)
    write_cube(tmp_path / "no_z.fits", cubes["g1"][[0, 1, 2, 4]], ["g", "r", "i", "y"])
    with pytest.raises(QueryError, match=r"missing z"):
        embed_image_file(coll, tmp_path / "no_z.fits", "cpu")
