"""Everything a stranger can send, sent: filters that try to run code, decompression bombs, hostile label
files, names that try to leave the collection, and requests without a login. Each must get a clear
refusal and leave no trace (a marker file the payload would create never appears)."""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.table import Table
from conftest import TINY_ENCODER, free_port
from gradio_client import Client, handle_file

import galsearch.embedder.training.labels
from galsearch.anomaly import RatingsError, ratings_store
from galsearch.embedder import GalsearchError, IngestError, embed, open_collection
from galsearch.embedder.sources import MAX_CUTOUT_PIXELS, read_image_file
from galsearch.embedder.training.finetune import FinetuneConfig, finetune, predict
from galsearch.embedder.training.labels import LabelError, read_labels
from galsearch.index import FilterError, build_index, search
from galsearch.ui.access import is_public
from galsearch.ui.app import launch
from galsearch.ui.cli import main

# ---- the collection, served with and without a login ----------------------------------------------


@pytest.fixture(scope="module")
def coll(tmp_path_factory):
    """An embedded, indexed 64-galaxy collection."""
    from conftest import write_blob_npz

    from galsearch.embedder import ingest

    folder = tmp_path_factory.mktemp("untrusted")
    ingest(write_blob_npz(folder / "blobs.npz", 64), folder / "blobs", progress=False)
    embed(folder / "blobs", TINY_ENCODER, device="cpu", progress=False)
    build_index(open_collection(folder / "blobs"), progress=False)
    return open_collection(folder / "blobs")


@pytest.fixture(scope="module")
def url(coll):
    port = free_port()
    app = launch(coll.path, port=port, block=False)
    yield f"http://127.0.0.1:{port}/"
    app.close()


@pytest.fixture
def marker(tmp_path) -> Path:
    """A file that a successful attack would create."""
    path = tmp_path / "owned"
    yield path
    assert not path.exists(), "the payload ran"


def search_args(galaxy="blob-0-0003", image=None, where=""):
    return (galaxy, "", "", 5.0, image, "", "", where, 5, "CSV")


# ---- filters ------------------------------------------------------------------------------------------

# Escapes from pandas' expression language (caller-scope @names, attribute and dunder walks, calls,
# imports ...), and text built to exhaust the parser: huge literals, deep nesting, a 120 kB filter.
FILTER_ATTACKS = [
    "@pd.io.common.os.system('touch {marker}')",
    "@os.system('touch {marker}') == 0",
    "__import__('os').system('touch {marker}') == 0",
    "label.__class__.__init__.__globals__['os'].system('touch {marker}')",
    "().__class__.__base__.__subclasses__()",
    "open('{marker}', 'w').write('x') > 0",
    "exec(\"open('{marker}', 'w')\")",
    "import os",
    "lambda: open('{marker}', 'w')",
    "[open('{marker}', 'w') for _ in id]",
    "(f := open('{marker}', 'w'))",
    "f\"{{open('{marker}', 'w')}}\" == id",
    "id[0] == 'b'",
    "label > " + "9" * 5000,
    "label > 0x" + "f" * 3000,
    "(" * 300 + "label > 0" + ")" * 300,
    "not " * 2000 + "label > 0",
    "-" * 5000 + "label > 0",
    " + ".join(["label"] * 2500) + " > 0",
    "label > 0 or " * 10_000 + "label > 0",
]


@pytest.mark.parametrize("attack", FILTER_ATTACKS, ids=lambda a: a[:40])
def test_hostile_filters_are_refused_by_the_api(coll, marker, attack):
    with pytest.raises(FilterError, match="cannot filter with"):
        search(coll, ids="blob-0-0003", where=attack.format(marker=marker))


@pytest.mark.parametrize("attack", FILTER_ATTACKS, ids=lambda a: a[:40])
def test_hostile_filters_are_refused_by_the_cli(coll, marker, attack, capsys):
    assert (
        main(["search", str(coll.path), "--id", "blob-0-0003", "--where", attack.format(marker=marker)]) == 1
    )
    assert capsys.readouterr().err.startswith("error: cannot filter with")


def test_a_hostile_filter_in_a_real_cli_process(coll, marker):
    attack = FILTER_ATTACKS[0].format(marker=marker)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "galsearch.ui.cli",
            "search",
            str(coll.path),
            "--id",
            "blob-0-0003",
            "--where",
            attack,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "'@' (a variable of the caller's, in pandas) is not part of the filter language" in done.stderr


@pytest.mark.parametrize("attack", FILTER_ATTACKS[:13], ids=lambda a: a[:40])
def test_hostile_filters_are_refused_by_the_web_api(url, marker, attack):
    with pytest.raises(Exception, match="cannot filter with"):
        Client(url, verbose=False).predict(
            *search_args(where=attack.format(marker=marker)), api_name="/search"
        )


def test_valid_filters_still_work_from_the_web_api(url, coll):
    client = Client(url, verbose=False)
    for where in ("label == 1", "class_name in ['compact'] & label >= 0", "not (label == 1)"):
        _, gallery, _, download, _ = client.predict(*search_args(where=where), api_name="/search")
        expected = coll.catalog.set_index("id").loc[pd.read_csv(download)["id"]]
        assert len(gallery) == 5 and len(expected) == 5
        assert (expected["label"] == (0 if "not" in where or "compact" in where else 1)).all()


# ---- uploads ------------------------------------------------------------------------------------------


def png_of_zeros(path: Path, side: int) -> Path:
    """A greyscale PNG of side x side zero pixels, written without ever holding them (a few hundred kB)."""
    packer, row = zlib.compressobj(9), bytes(side + 1)  # each row: filter byte 0, then the pixels
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )
    return path


def fits_declaring(path: Path, side: int) -> Path:
    """2,880 bytes of FITS whose header declares a side x side float32 image (149 GiB for 200,000)."""
    header = fits.Header(
        [("SIMPLE", True), ("BITPIX", -32), ("NAXIS", 2), ("NAXIS1", side), ("NAXIS2", side)]
    )
    path.write_bytes(header.tostring().encode().ljust(2880, b" "))
    return path


def gzipped_fits_of_zeros(path: Path, side: int) -> Path:
    """A real side x side 8-bit FITS image of zeros, gzipped (a third of a MB for 9,000)."""
    header = fits.Header([("SIMPLE", True), ("BITPIX", 8), ("NAXIS", 2), ("NAXIS1", side), ("NAXIS2", side)])
    with gzip.open(path, "wb") as out:
        out.write(header.tostring().encode())
        for _ in range(side):
            out.write(bytes(side))
        out.write(bytes(-(side * side) % 2880))
    return path


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """Files that declare far more pixels than a cutout has, with the refusal each must get."""
    folder = tmp_path_factory.mktemp("bombs")
    return {
        "png-30000": (png_of_zeros(folder / "bomb30000.png", 30_000), "decompression bomb"),
        "png-9000": (png_of_zeros(folder / "bomb9000.png", 9_000), "more than the 50,000,000 a cutout"),
        "fits-200000": (fits_declaring(folder / "bomb.fits", 200_000), "declares 200000 x 200000"),
        "fits-gz-9000": (gzipped_fits_of_zeros(folder / "zeros.fits.gz", 9_000), "declares 9000 x 9000"),
    }


@pytest.mark.parametrize("bomb", ["png-30000", "png-9000", "fits-200000", "fits-gz-9000"])
def test_image_bombs_are_refused_before_their_pixels_are_decoded(bombs, bomb):
    path, reason = bombs[bomb]
    assert path.stat().st_size < 2_000_000 and MAX_CUTOUT_PIXELS < 9000**2
    with pytest.raises(IngestError, match=reason):
        read_image_file(path)


def test_image_bombs_are_refused_by_search_cli_and_page(coll, url, bombs, capsys):
    for path, reason in bombs.values():
        with pytest.raises(GalsearchError, match=reason):
            search(coll, image=path)
        assert main(["search", str(coll.path), "--image", str(path)]) == 1
        assert reason in capsys.readouterr().err
    client = Client(url, verbose=False)
    for key in ("png-9000", "fits-200000"):  # .fits.gz is not an upload type of the page
        path, reason = bombs[key]
        with pytest.raises(Exception, match=reason):
            client.predict(*search_args(galaxy="", image=handle_file(path)), api_name="/search")


# ---- label files --------------------------------------------------------------------------------------


def test_an_enormous_label_file_is_refused_unread(coll, tmp_path):
    huge = tmp_path / "huge.csv"
    with huge.open("wb") as f:
        f.write(b"id,label\n")
        f.truncate(300 * 2**20)  # sparse: 300 MiB on paper, nothing on disk
    with pytest.raises(LabelError, match="holds 300 MiB; a label file may hold 256 MiB"):
        read_labels(huge, coll)


def test_a_fits_label_file_declaring_ten_billion_rows_is_refused(coll, tmp_path):
    Table({"id": ["blob-0-0001", "blob-0-0002"], "label": [0, 1]}).write(tmp_path / "l.fits")
    raw = bytearray((tmp_path / "l.fits").read_bytes())
    at = raw.index(b"NAXIS2  =", 2880)
    raw[at : at + 80] = fits.Card("NAXIS2", 10_000_000_000).image.encode()
    (tmp_path / "bomb.fits").write_bytes(raw)
    with pytest.raises(LabelError, match="cannot read the label file"):
        read_labels(tmp_path / "bomb.fits", coll)


def test_a_votable_entity_bomb_is_refused(coll, tmp_path):
    entities = '<!ENTITY a0 "lol">' + "".join(f'<!ENTITY a{i} "{f"&a{i - 1};" * 10}">' for i in range(1, 10))
    (tmp_path / "bomb.xml").write_text(
        f'<?xml version="1.0"?><!DOCTYPE v [{entities}]><VOTABLE version="1.4"><RESOURCE><TABLE>'
        '<FIELD name="id" datatype="char" arraysize="*"/><FIELD name="label" datatype="char" arraysize="*"/>'
        "<DATA><TABLEDATA><TR><TD>blob-0-0001</TD><TD>&a9;</TD></TR></TABLEDATA></DATA></TABLE></RESOURCE>"
        "</VOTABLE>"
    )
    with pytest.raises(LabelError, match="amplification"):
        read_labels(tmp_path / "bomb.xml", coll)


def test_formula_like_cells_are_labels_not_formulas(coll, tmp_path):
    formulas = ["=1+1", "+cmd|' /C calc'!A0", "@SUM(A1:A9)", "-2+3", "$x^{$"]
    ids = coll.catalog["id"].iloc[:50]
    labels = pd.DataFrame({"id": ids, "label": [formulas[i % 5] for i in range(50)]})
    labels.to_csv(tmp_path / "formulas.csv", index=False)
    read = read_labels(tmp_path / "formulas.csv", coll)
    assert sorted(read.classes) == sorted(formulas)  # as typed: nothing evaluated them
    result = finetune(coll, read, FinetuneConfig(device="cpu", epochs=3), name="formulas")
    assert sorted(result.head.classes) == sorted(formulas)
    assert (result.folder / "confusion.png").is_file()  # '$x^{$' is drawn as text, not as broken TeX


def test_ids_with_path_characters_are_just_unknown_ids(coll, tmp_path):
    hostile = ["../../etc/passwd", "/etc/shadow", "C:\\Windows\\win.ini", "'; DROP TABLE x;--"]
    pd.DataFrame({"id": hostile, "label": [0, 1, 0, 1]}).to_csv(tmp_path / "paths.csv", index=False)
    with pytest.raises(LabelError, match=r"4 row\(s\) with ids not in collection") as refused:
        read_labels(tmp_path / "paths.csv", coll)
    assert "../../etc/passwd" in str(refused.value)


def test_wrong_types_and_too_many_classes_are_refused(coll, tmp_path, monkeypatch):
    monkeypatch.setattr(galsearch.embedder.training.labels, "MAX_CLASSES", 20)  # 64 galaxies here, not 101
    ids = coll.catalog["id"]
    pd.DataFrame({"id": ids, "label": range(len(ids))}).to_csv(tmp_path / "ids.csv", index=False)
    with pytest.raises(LabelError, match="64 different labels; a classifier takes at most 20 classes"):
        read_labels(tmp_path / "ids.csv", coll)
    pd.DataFrame({"id": ids[:4], "smooth": ["a", "b", "0.3", "x"]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(LabelError, match=r"3 row\(s\) with a missing"):
        read_labels(tmp_path / "t.csv", coll, "regress", ["smooth"])
    Table({"id": ids[:4].to_numpy(str), "label": np.zeros((4, 2, 2))}).write(tmp_path / "cube.fits")
    with pytest.raises(LabelError, match=r"4 row\(s\) with an array, not one value"):
        read_labels(tmp_path / "cube.fits", coll)


# ---- names ---------------------------------------------------------------------------------------------

BAD_HEAD_NAMES = ["../escape", "/tmp/escape", "..", ".hidden", "a/b", "a\\b", "a..b", "x" * 101, "", "-x"]


@pytest.mark.parametrize("name", BAD_HEAD_NAMES)
def test_head_names_never_leave_the_heads_folder(coll, name):
    labels = read_labels(coll.catalog[["id", "class_name"]].rename(columns={"class_name": "label"}), coll)
    with pytest.raises(GalsearchError, match="a head name is"):
        finetune(coll, labels, FinetuneConfig(device="cpu"), name=name)
    with pytest.raises(GalsearchError, match="a head name is"):
        predict(coll, name)


def test_a_linked_head_folder_is_refused(coll, tmp_path):
    (coll.path / "heads").mkdir(exist_ok=True)
    (coll.path / "heads" / "linked").symlink_to(tmp_path)
    labels = read_labels(coll.catalog[["id", "class_name"]].rename(columns={"class_name": "label"}), coll)
    try:
        with pytest.raises(GalsearchError, match="is a link"):
            finetune(coll, labels, FinetuneConfig(device="cpu"), name="linked")
        with pytest.raises(GalsearchError, match="is a link"):
            predict(coll, "linked")
    finally:
        (coll.path / "heads" / "linked").unlink()
    assert not list(tmp_path.iterdir())


def test_head_names_from_the_page_never_leave_the_heads_folder(url, coll):
    client = Client(url, verbose=False)
    for name in ("../../escape", "/tmp/escape", ".."):
        with pytest.raises(Exception, match="a head name is"):
            client.predict(name, "", api_name="/predict")
    assert not (coll.path.parent / "escape").exists()


def test_session_names_and_ids_are_data_not_sql_or_paths(coll):
    store = ratings_store(coll.path)
    hostile = ["x'); DROP TABLE ratings;--", "../../etc/passwd", 'say "hi"']
    for session in hostile:
        store.rate(session, "blob-0-0001", 3, user="o'brien")
    assert set(hostile) <= set(store.sessions()["session"])
    assert store.latest(hostile[0])["user"].tolist() == ["o'brien"]
    for bad in ("x" * 101, "two\nlines", "tab\there"):
        with pytest.raises(RatingsError, match="printable characters"):
            store.rate(bad, "blob-0-0001", 3)


# ---- the login ---------------------------------------------------------------------------------------


def _routes(app):
    """(method, path) of every route Gradio serves, with made-up values in place of path parameters."""
    import re

    for route in app.server_app.routes:
        inner = (
            [(route, "")]
            if hasattr(route, "path")
            else [(r, route.include_context.prefix) for r in route.original_router.routes]
        )
        for r, prefix in inner:
            for method in sorted(set(getattr(r, "methods", None) or {"GET"}) - {"HEAD"}):
                yield method, re.sub(r"\{[^}]+\}", "x", prefix + r.path)


def test_with_auth_every_route_but_the_login_page_refuses_a_stranger(coll):
    port = free_port()
    app = launch(coll.path, port=port, auth=("ann", "secret"), block=False)
    base = f"http://127.0.0.1:{port}"
    try:
        client = Client(base + "/", auth=("ann", "secret"), verbose=False)
        _, _, _, download, _ = client.predict(*search_args(), api_name="/search")  # a real result file
        routes = list(_routes(app))
        assert len(routes) > 50
        with httpx.Client(base_url=base, timeout=30) as stranger:
            for method, path in [*routes, ("GET", f"/gradio_api/file={download}")]:
                answer = stranger.request(method, path, json={})
                if is_public(path):
                    assert answer.status_code in (200, 302, 401, 404, 405, 422), path
                    assert "blob-0-" not in answer.text, path  # no galaxy of the collection
                else:
                    assert answer.status_code == 401, f"{method} {path}: {answer.status_code}"
            assert stranger.post("/login", data={"username": "ann", "password": "wrong"}).status_code == 400
            assert stranger.get("/gradio_api/info").status_code == 401
        assert client.predict("hunt", api_name="/next")["next"]["id"].startswith("blob-")
    finally:
        app.close()
