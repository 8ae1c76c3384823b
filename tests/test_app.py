"""The web app served for real and driven through Gradio's HTTP API (the browser tests drive the page)."""

from __future__ import annotations

import gc
import re
import threading
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from astropy.table import Table
from conftest import TINY_ENCODER, free_port
from gradio_client import Client, handle_file
from PIL import Image

from galsearch.anomaly import label_store, ratings_store
from galsearch.embedder import embed, open_collection
from galsearch.index import build_index, search, similar
from galsearch.ui.api import ENDPOINTS
from galsearch.ui.app import launch
from galsearch.ui.state import AppState


@pytest.fixture
def served(blob_collection):
    """The app serving an embedded, indexed 64-galaxy collection; yields (url, collection path)."""
    embed(blob_collection, TINY_ENCODER, device="cpu", progress=False)
    build_index(open_collection(blob_collection.path), progress=False)
    port = free_port()
    app = launch(blob_collection.path, port=port, block=False)
    yield f"http://127.0.0.1:{port}/", blob_collection.path
    app.close()


NO_TYPED_LABELS = {"headers": ["id", "label"], "data": [], "metadata": None}


def captions(gallery: list[dict]) -> list[str]:
    return [item["caption"].split(" · ")[0] for item in gallery]


def columns(table: dict, cells: str = "data") -> dict[str, tuple]:
    """An API table as columns: its values, or with ``cells="display"`` the text the page shows."""
    rows = table["metadata"]["display_value"] if cells == "display" else table["data"]
    return dict(zip(table["headers"], zip(*rows, strict=True), strict=True))


def search_args(galaxy="", image=None, where="", k=5, fmt="CSV", plus="", minus=""):
    return (galaxy, "", "", 5.0, image, plus, minus, where, k, fmt)


def test_search_by_id_image_and_filters_with_downloads(served, tmp_path):
    url, path = served
    coll = open_collection(path)
    ra, dec, mag = np.random.default_rng(0).uniform((0, -90, 15), (360, 90, 25), (64, 3)).T
    with coll.writing():
        coll.set_columns({"ra": ra, "dec": dec, "mag": mag})
    client = Client(url, verbose=False)
    query, gallery, table, download, ids = client.predict(*search_args("blob-0-0003"), api_name="/search")
    assert query.endswith((".webp", ".png"))
    expected = similar(open_collection(path), "blob-0-0003", 5)
    assert captions(gallery) == expected["id"].tolist()
    assert pd.read_csv(download)["id"].tolist() == captions(gallery) == ids.split(", ")  # ready to label
    shown = columns(table, "display")
    assert list(shown["similarity"]) == [f"{s:.3f}" for s in expected["similarity"]]
    assert list(shown["ra"]) == [f"{v:.5f}" for v in expected["ra"]]
    assert list(shown["mag"]) == [f"{v:.3f}" for v in expected["mag"]]
    assert list(shown["label"]) == [str(v) for v in expected["label"]]
    values = columns(table)
    assert np.allclose(values["similarity"], expected["similarity"], rtol=0, atol=1e-12)  # kept whole
    assert np.allclose(pd.read_csv(download)["similarity"], expected["similarity"], rtol=0, atol=1e-6)
    _, _, _, fits, _ = client.predict(*search_args("blob-0-0003", fmt="FITS"), api_name="/search")
    assert len(Table.read(fits)) == 5
    _, gallery, _, _, _ = client.predict(*search_args("blob-0-0003", where="label == 1"), api_name="/search")
    catalog = open_collection(path).catalog.set_index("id")
    assert (catalog.loc[captions(gallery), "label"] == 1).all()
    own = tmp_path / "galaxy.png"
    Image.fromarray(np.asarray(open_collection(path).images[7])).save(own)
    _, gallery, _, _, _ = client.predict(*search_args(image=handle_file(own)), api_name="/search")
    assert captions(gallery)[0] == "blob-0-0007"  # a galaxy's own picture finds it first

    answer = client.predict("blob-0-0003", where="label == 1", k=5, api_name="/similar")  # JSON, for scripts
    wanted = search(open_collection(path), ids="blob-0-0003", k=5, where="label == 1")
    assert [r["id"] for r in answer["results"]] == wanted["id"].tolist() and answer["matched"] is None
    assert np.allclose([r["similarity"] for r in answer["results"]], wanted["similarity"], rtol=1e-12, atol=0)
    assert {"rank", "ra", "dec", "mag", "label"} <= set(answer["results"][0])
    at = client.predict(ra_deg=float(ra[9]), dec_deg=float(dec[9]), k=3, api_name="/similar")
    assert (
        at["matched"]["id"] == "blob-0-0009"
        and [r["id"] for r in at["results"]] == similar(path, "blob-0-0009", 3)["id"].tolist()
    )


def test_bad_requests_get_messages_not_tracebacks(served, tmp_path):
    url, _ = served
    client = Client(url, verbose=False)
    with pytest.raises(Exception, match="not in collection"):
        client.predict(*search_args("no-such-galaxy"), api_name="/search")
    with pytest.raises(Exception, match="Choose a galaxy"):
        client.predict(*search_args(), api_name="/search")
    with pytest.raises(Exception, match="not in collection"):
        client.predict("no-such-galaxy", api_name="/similar")
    broken = tmp_path / "broken.fits"
    broken.write_bytes(b"SIMPLE  =                    T" + b"\0" * 100)
    with pytest.raises(Exception, match="cannot use"):
        client.predict(*search_args(image=handle_file(broken)), api_name="/search")
    assert httpx.get(url + "gradio_api/file=/etc/passwd").status_code in (403, 404)


def test_rating_through_the_api_from_several_clients_loses_nothing(served):
    url, path = served
    first = Client(url, verbose=False).predict("mergers", api_name="/next")
    assert first["session"] == "mergers" and first["rated"] == 0 and first["next"]["id"].startswith("blob-")
    ids = open_collection(path).catalog["id"].tolist()

    failures = []

    def rate(worker: int) -> None:
        client = Client(url, verbose=False, download_files=False)
        try:
            for galaxy in ids[worker * 8 : worker * 8 + 8]:
                client.predict("mergers", galaxy, float(worker % 6), api_name="/rate")
        except Exception as exc:
            failures.append(exc)

    threads = [threading.Thread(target=rate, args=(w,)) for w in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    latest = ratings_store(path).latest("mergers")
    assert len(latest) == 24 and set(latest["galaxy"]) == set(ids[:24])
    result = Client(url, verbose=False).predict("mergers", api_name="/undo")
    assert result["undone"]["galaxy"] in ids[:24] and result["rated"] == 23
    assert len(ratings_store(path).latest("mergers")) == 23
    ranking = Client(url, verbose=False).predict("mergers", 5, api_name="/ranking")["ranking"]
    interest = [r["interest"] for r in ranking]
    assert len(ranking) == 5 and interest == sorted(interest, reverse=True)
    rated = ratings_store(path).latest("mergers").set_index("galaxy")["rating"]
    assert all(r["rating"] == rated.get(r["id"]) for r in ranking)  # None where not rated
    exported = Client(url, verbose=False).predict("mergers", "FITS", api_name="/export_ratings")
    assert len(Table.read(exported)) == 23
    ratings_store(path).rate("../odd/name", "blob-0-0001", 1)
    odd = Client(url, verbose=False).predict("../odd/name", "CSV", api_name="/export_ratings")
    assert Path(odd).name == "ratings-odd_name.csv" and len(pd.read_csv(odd)) == 1


def classifier_args(source="set", session="", label_set="shapes", task="classify", name="", target=""):
    """The /finetune form: source, session, positive-at, set, file, typed, task, head, unfreeze, auto,
    budget, head name, candidates' class, download format."""
    return (
        source,
        session,
        4,
        label_set,
        None,
        NO_TYPED_LABELS,
        task,
        "linear",
        0,
        False,
        60,
        name,
        target,
        "CSV",
    )


def test_labels_to_classifier_candidates_and_suspects_through_the_api(served):
    url, path = served
    client = Client(url, verbose=False)
    catalog = open_collection(path).catalog
    for shape in ("compact", "extended"):
        ids = catalog.loc[catalog["class_name"] == shape, "id"].tolist()[:20]
        note = client.predict("shapes", ", ".join(ids), shape, api_name="/label")
        assert note.startswith(f"labelled 20 galaxies as **{shape}**")
    flipped = catalog.loc[catalog["class_name"] == "compact", "id"].iloc[0]
    client.predict("shapes", flipped, "extended", api_name="/label")  # a wrong label, to be doubted
    assert client.predict("shapes", api_name="/undo_label").startswith("undid your latest action")
    client.predict("shapes", flipped, "extended", api_name="/label")
    assert label_store(path).current("shapes").set_index("id").loc[flipped, "label"] == "extended"
    with pytest.raises(Exception, match="not in collection"):
        client.predict("shapes", "no-such-galaxy", "ring", api_name="/label")

    metrics, confusion, _, column, gallery, table, download, ids = client.predict(
        *classifier_args(target="compact"), api_name="/finetune"
    )
    assert "cross-validated metrics on all 40 labels" in metrics and confusion.endswith(".png")
    assert column == "shapes_prob_compact" and column in open_collection(path).catalog
    candidates = pd.read_csv(download)
    assert len(candidates) == 24 and not set(candidates["id"]) & set(
        label_store(path).current("shapes")["id"]
    )
    assert (catalog.set_index("id").loc[candidates["id"].head(10), "class_name"] == "compact").all()
    assert captions(gallery) == candidates["id"].head(24).tolist() == ids.split(", ")

    note, _, table = client.predict(*classifier_args()[:9], api_name="/suspects")
    assert columns(table)["id"][0] == flipped and "flagged as label issues" in note

    ratings_store(path).rate("hunt", catalog["id"].iloc[0], 5)
    with pytest.raises(Exception, match="also needs galaxies rated lower"):
        client.predict(*classifier_args("ratings", "hunt"), api_name="/finetune")

    plot, curve = client.predict(*classifier_args()[:9], "shapes", "5,10", api_name="/curve")
    shown = columns(curve, "display")
    assert plot.endswith(".png") and shown["labels_per_class"] == ("5", "10")
    assert all(re.fullmatch(r"\d\.\d{3}", v) for v in shown["balanced_accuracy_mean"])
    note, gallery = client.predict("shapes", "extended", api_name="/predict")
    assert "shapes_prob_extended" in note and len(gallery) == 24


def test_the_api_lists_only_its_documented_endpoints(served):
    url, _ = served
    info = httpx.get(url + "gradio_api/info").json()
    assert set(info["named_endpoints"]) == {f"/{name}" for name in ENDPOINTS}
    assert not info["unnamed_endpoints"]
    rate = info["named_endpoints"]["/rate"]
    assert [p["parameter_name"] for p in rate["parameters"]] == ["session", "galaxy", "rating", "skip"]
    assert rate["description"] == ENDPOINTS["rate"]


def test_auth_keeps_strangers_out(blob_collection):
    embed(blob_collection, TINY_ENCODER, device="cpu", progress=False)
    port = free_port()
    app = launch(blob_collection.path, port=port, auth=("ann", "secret"), block=False)
    try:
        with pytest.raises(Exception):  # noqa: B017 - gradio_client raises different types by version
            Client(f"http://127.0.0.1:{port}/", verbose=False).predict("s", api_name="/next")
        client = Client(f"http://127.0.0.1:{port}/", auth=("ann", "secret"), verbose=False)
        assert client.predict("s", api_name="/next")["next"]["id"].startswith("blob-")
        assert ratings_store(blob_collection.path).sessions()["session"].tolist() == ["s"]
    finally:
        app.close()


def test_the_download_folder_goes_with_the_app_state(blob_collection):
    """Files offered for download live in a folder of the app's own, deleted when the app is (at exit at the
    latest), so that servers started and stopped do not leave folders behind in the temporary directory."""
    state = AppState(blob_collection.path)
    offered = state.download("ratings.csv")
    offered.write_text("id\n")
    folder = offered.parent.parent
    del state
    gc.collect()
    assert not folder.exists()
