"""Similarity queries on real embeddings: by id, image file, sky position, with filters and negatives."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.table import Table
from conftest import TINY_ENCODER, write_blob_npz
from skimage.io import imsave

from galsearch.embedder import CollectionError, IngestError, build_demo, embed, ingest, open_collection
from galsearch.index import FilterError, QueryError, StaleIndexError, has_index, search, write_results
from galsearch.index.query import _index_of
from galsearch.ui.cli import main


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo collection (HDF galaxies + 300 simulated ones) embedded with a tiny random encoder."""
    coll = build_demo(tmp_path_factory.mktemp("query") / "demo", n_simulated=300, progress=False)
    embed(coll, TINY_ENCODER, device="cpu", progress=False)
    return open_collection(coll.path)


@pytest.fixture
def blobs(blob_collection):
    """The two-class blob collection, embedded."""
    embed(blob_collection, TINY_ENCODER, device="cpu", progress=False)
    return open_collection(blob_collection.path)


def galsearch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "galsearch.ui.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_neighbours_share_the_class_of_the_query(blobs):
    labels = blobs.catalog.set_index("id")["label"]
    same = [(search(blobs, ids=query, k=5)["label"] == labels[query]).mean() for query in labels.index[:16]]
    assert np.mean(same) > 0.8  # two balanced classes: chance is 31/63, about 0.49


def test_demo_neighbours_beat_chance(demo):
    classes = demo.catalog["class_name"]
    chance = float((classes.value_counts(normalize=True) ** 2).sum())  # about 0.24 (hdf 39%, 9 classes)
    queries = demo.catalog["id"].iloc[::25]
    same = [
        (search(demo, ids=q, k=10)["class_name"] == classes.iloc[demo.rows_of(q)[0]]).mean() for q in queries
    ]
    assert np.mean(same) > 2 * chance  # measured: 0.67


def test_result_columns_ranks_and_exclusion(demo):
    query = demo.catalog["id"].iloc[0]
    found = search(demo, ids=[query], k=7)
    assert list(found.columns[:5]) == ["rank", "id", "similarity", "ra", "dec"]
    assert set(demo.catalog.columns) <= set(found.columns)
    assert list(found["rank"]) == list(range(1, 8)) and query not in set(found["id"])
    assert np.all(np.diff(found["similarity"]) <= 1e-6)


def test_image_file_of_a_galaxy_finds_that_galaxy_first(demo, tmp_path):
    row = 200
    galaxy, image = demo.catalog["id"].iloc[row], np.asarray(demo.images[row])
    imsave(tmp_path / "galaxy.png", image, check_contrast=False)
    fits.PrimaryHDU(np.moveaxis(image, -1, 0)).writeto(tmp_path / "galaxy.fits")
    for file in ("galaxy.png", "galaxy.fits"):
        found = search(demo, image=tmp_path / file, k=3, device="cpu")
        assert found["id"].iloc[0] == galaxy
        assert found["similarity"].iloc[0] == pytest.approx(1.0, abs=1e-4)


def test_image_file_is_cropped_as_the_collection_was(tmp_path):
    source = write_blob_npz(tmp_path / "wide.npz", 40, size=64)
    ingest(source, tmp_path / "c", crop=0.5, progress=False)
    embed(tmp_path / "c", TINY_ENCODER, device="cpu", progress=False)
    coll = open_collection(tmp_path / "c")
    data = np.load(source)
    fits.PrimaryHDU(np.moveaxis(data["images"][7], -1, 0)).writeto(tmp_path / "whole.fits")  # uncropped
    found = search(coll, image=tmp_path / "whole.fits", k=1, device="cpu")
    assert found["id"].iloc[0] == data["ids"][7] and found["similarity"].iloc[0] > 0.999


def test_ids_and_an_image_combine(demo, tmp_path):
    ids = list(demo.catalog["id"].iloc[[10, 11]])
    imsave(tmp_path / "g.png", np.asarray(demo.images[12]), check_contrast=False)
    found = search(demo, ids=ids, image=tmp_path / "g.png", k=5, device="cpu")
    assert len(found) == 5 and not set(ids) & set(found["id"])


def test_unusable_image_file_is_a_clear_error(demo, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(QueryError, match="nothing to search for"):
        search(demo)
    with pytest.raises(IngestError, match=r"bad\.png: not a readable PNG"):
        search(demo, image=tmp_path / "bad.png")
    with pytest.raises(IngestError, match="does not exist"):
        search(demo, image=tmp_path / "missing.fits")


def test_position_finds_the_galaxy_there_and_its_neighbours(demo):
    row = 250
    galaxy, ra, dec = demo.catalog[["id", "ra", "dec"]].iloc[row]
    found = search(demo, ra=ra + 1e-4, dec=dec, radius_arcsec=2.0, k=5)
    assert found.attrs["matched"]["id"] == galaxy
    assert found.attrs["matched"]["separation_arcsec"] < 0.5
    assert galaxy not in set(found["id"]) and len(found) == 5


def test_position_with_nothing_near_says_what_is_nearest(demo):
    ra, dec = demo.catalog[["ra", "dec"]].iloc[0]
    with pytest.raises(QueryError, match=r"no galaxy within 5 arcsec .* the nearest is \S+ at [\d.]+ arcsec"):
        search(demo, ra=ra, dec=dec + 5.0)


def test_position_needs_ra_dec_columns(blobs):
    with pytest.raises(QueryError, match=r"no ra/dec columns.*label"):
        search(blobs, ra=10.0, dec=20.0)


def test_filter_keeps_k_results(demo):
    catalog = demo.catalog
    limit = catalog.loc[catalog["class_name"] != "hdf", "mag"].nsmallest(15).max()
    where = f"mag <= {limit} and class_name != 'hdf'"  # 15 of about 490 galaxies
    query = catalog["id"].iloc[0]
    found = search(demo, ids=query, where=where, k=10)
    assert len(found) == 10
    assert (found["mag"] <= limit).all() and (found["class_name"] != "hdf").all()


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("colour > 3", "cannot filter .*colour.*catalog columns are: id, source"),
        ("mag <", "cannot filter"),
        ("mag + 1", "not true/false"),
        ("mag > 99", "no galaxy satisfies"),
    ],
)
def test_bad_filters_are_clear_errors(demo, where, message):
    with pytest.raises(FilterError, match=message):
        search(demo, ids=demo.catalog["id"].iloc[0], where=where)


def test_negatives_move_results_away(demo):
    query = demo.catalog["id"].iloc[5]
    plain = search(demo, ids=query, k=20)
    unlike = list(plain["id"].iloc[:5])
    pushed = search(demo, ids=query, negative_ids=unlike, k=20)
    assert not set(unlike) & set(pushed["id"])
    unit = demo.embeddings / np.linalg.norm(demo.embeddings, axis=1, keepdims=True)
    centre = unit[demo.rows_of(unlike)].mean(axis=0)

    def closeness(found: pd.DataFrame) -> float:
        return float((unit[demo.rows_of(list(found["id"]))] @ centre).mean())

    assert closeness(pushed) < closeness(plain.iloc[5:])
    with pytest.raises(QueryError, match="both as like and unlike"):
        search(demo, ids=query, negative_ids=[query])


def test_unknown_ids_and_unembedded_collections(demo, blob_collection):
    with pytest.raises(CollectionError, match="not in collection"):
        search(demo, ids="no-such-galaxy")
    with pytest.raises(CollectionError, match="galsearch embed"):
        search(blob_collection, ids="blob-0-0000")


@pytest.mark.parametrize("suffix", [".csv", ".json", ".fits", ".xml", ".vot"])
def test_every_output_format_round_trips(demo, tmp_path, suffix):
    found = search(demo, ids=demo.catalog["id"].iloc[3], k=6)
    found["note"] = ["é", None, "x", "y", "z", "w"]  # text with a missing value and a non-ASCII one
    path = tmp_path / f"results{suffix}"
    write_results(found, path)
    if suffix == ".csv":
        back = pd.read_csv(path)
    elif suffix == ".json":
        back = pd.DataFrame(json.loads(path.read_text()))
    else:
        table = Table.read(path)
        table.convert_bytestring_to_unicode()  # FITS keeps text as (UTF-8) bytes
        back = table.to_pandas()
    assert list(back["id"]) == list(found["id"]) and list(back["rank"]) == list(range(1, 7))
    assert list(back["class_name"]) == list(found["class_name"])
    np.testing.assert_allclose(back["similarity"], found["similarity"], rtol=1e-6)
    assert back["note"].iloc[0] == "é"


def test_text_output_and_unknown_suffix(demo, tmp_path, capsys):
    found = search(demo, ids=demo.catalog["id"].iloc[3], k=3)
    write_results(found)
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["rank", "id", "similarity"] and found["id"].iloc[2] in out
    with pytest.raises(QueryError, match="cannot tell the output format"):
        write_results(found, tmp_path / "results.dat")
    with pytest.raises(QueryError, match="need an output file"):
        write_results(found, None, "fits")


def test_search_builds_a_missing_index_and_refuses_a_stale_one(blobs):
    assert not has_index(blobs)
    search(blobs, ids="blob-0-0000", k=3)
    assert has_index(blobs)
    assert _index_of(blobs, None) is _index_of(blobs, None)  # a loaded index serves the next query too
    embed(blobs, TINY_ENCODER, tta=True, replace=True, device="cpu", progress=False)
    with pytest.raises(StaleIndexError, match="--rebuild"):
        search(open_collection(blobs.path), ids="blob-0-0000")


def test_index_command_builds_adds_and_rebuilds(blobs, capsys):
    assert main(["index", str(blobs.path), "--quiet", "--device", "cpu"]) == 0
    assert "built the index" in capsys.readouterr().out
    assert main(["index", str(blobs.path), "--quiet"]) == 0
    assert "added 0 galaxies" in capsys.readouterr().out
    assert "similarity" in search(blobs, ids="blob-0-0000", k=3).columns  # loads (and keeps) the cosine index
    assert main(["index", str(blobs.path), "--metric", "l2"]) == 1
    assert "add --rebuild" in capsys.readouterr().err
    assert main(["index", str(blobs.path), "--metric", "l2", "--rebuild", "--quiet", "--device", "cpu"]) == 0
    found = search(blobs, ids="blob-0-0000", k=3)
    assert "distance" in found.columns and np.all(np.diff(found["distance"]) >= 0)


@pytest.mark.slow
def test_cli_index_and_search(blobs):
    done = galsearch("index", str(blobs.path), "--quiet", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    done = galsearch(
        "search", str(blobs.path), "--id", "blob-0-0000", "--id", "blob-0-0002", "-k", "4", "--format", "csv"
    )
    assert done.returncode == 0, done.stderr
    found = pd.read_csv(io.StringIO(done.stdout))
    assert list(found["rank"]) == [1, 2, 3, 4] and not {"blob-0-0000", "blob-0-0002"} & set(found["id"])


def test_cli_search_output_file_and_errors(blobs, tmp_path, capsys):
    out = tmp_path / "r.fits"
    query = ["search", str(blobs.path), "--id", "blob-0-0000", "--where", "label == 1", "--output", str(out)]
    assert main(query) == 0
    assert "wrote 10 results" in capsys.readouterr().out and (Table.read(out)["label"] == 1).all()
    assert main(["search", str(blobs.path), "--id", "no-such-galaxy"]) == 1
    assert capsys.readouterr().err.startswith("error: id(s) not in collection")
    for usage in (["search", str(blobs.path)], ["search", str(blobs.path), "--ra", "10"]):
        with pytest.raises(SystemExit) as raised:
            main(usage)
        assert raised.value.code == 2
