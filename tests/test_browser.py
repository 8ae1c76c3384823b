"""End to end in headless Chromium (Debian's, driven by Playwright): the page does what the API does."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from browser import CHROMIUM, chromium, new_page
from conftest import TINY_ENCODER, free_port, write_blob_npz
from PIL import Image

from galsearch.anomaly import label_store, ratings_store
from galsearch.embedder import embed, ingest, open_collection
from galsearch.index import build_index, similar, umap_coordinates
from galsearch.ui.app import launch

pytestmark = pytest.mark.slow

WAIT_MS = 60_000


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed: `make setup` installs it")
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("browser")
    ingest(write_blob_npz(folder / "blobs.npz", 64), folder / "blobs", progress=False)
    coll = open_collection(folder / "blobs")
    ra, dec = np.random.default_rng(0).uniform((0, -90), (360, 90), (64, 2)).T
    with coll.writing():
        coll.set_columns({"ra": ra, "dec": dec})
    embed(folder / "blobs", TINY_ENCODER, device="cpu", progress=False)
    build_index(open_collection(folder / "blobs"), progress=False)
    return folder / "blobs"


class Server:
    """The app on a free port, restartable."""

    def __init__(self, path: Path):
        self.path, self.port = path, free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.app = launch(path, port=self.port, block=False)

    def restart(self) -> None:
        self.app.close()
        self.app = launch(self.path, port=self.port, block=False)


@pytest.fixture(scope="module")
def server(collection):
    served = Server(collection)
    yield served
    served.app.close()


@pytest.fixture
def page(browser, server):
    page = new_page(browser, WAIT_MS)
    page.goto(server.url)
    yield page
    page.close()


def expect_gallery(page, selector: str, ids: list[str]) -> None:
    """Wait until the gallery's captions start with exactly these galaxy ids, in order."""
    from playwright.sync_api import expect

    captions = [re.compile(rf"^{re.escape(galaxy)} ") for galaxy in ids]
    expect(page.locator(f"{selector} .caption-label")).to_have_text(captions, timeout=WAIT_MS)


def choose_file(page, elem_id: str, path: Path) -> None:
    """Choose a file in the gr.File `elem_id` and wait until it is uploaded.

    Uploaded means the server's copy is linked for download. The name alone is no sign: Gradio shows it,
    whole, only while the file uploads (after, as stem and extension apart), so a wait for it can miss a
    fast upload, which failed this test in CI.
    """
    page.locator(f"#{elem_id} input[type=file]").set_input_files(path)
    page.locator(f'#{elem_id} [data-testid="download-link"][download="{path.name}"]').wait_for()


def test_search_by_id_click_and_upload(page, collection, tmp_path):
    from playwright.sync_api import expect

    found = similar(open_collection(collection), "blob-0-0005", 12)
    expected = found["id"].tolist()
    page.get_by_label("Galaxy id").fill("blob-0-0005")
    page.get_by_label("Galaxy id").press("Enter")  # Enter searches, as the button does
    expect_gallery(page, "#neighbours", expected)
    captions = page.locator("#neighbours .caption-label")
    assert captions.evaluate_all("all => all.every(c => c.scrollWidth <= c.clientWidth)")  # no id cut
    similarity, ra = found["similarity"].iloc[0], found["ra"].iloc[0]
    expect(page.locator("#results")).to_contain_text(f"{similarity:.3f}")
    expect(page.locator("#results")).to_contain_text(f"{ra:.5f}")
    assert str(similarity)[:8] not in page.locator("#results").inner_text()  # not 16 digits
    page.locator("#neighbours .caption-label").nth(1).click()  # a neighbour becomes the query
    expect_gallery(page, "#neighbours", similar(open_collection(collection), expected[1], 12)["id"].tolist())
    image = tmp_path / "query.png"
    Image.fromarray(np.asarray(open_collection(collection).images[9])).save(image)
    page.get_by_label("Galaxy id").fill("")
    choose_file(page, "query-file", image)
    page.locator("#search-button").click()
    found = similar(open_collection(collection), "blob-0-0009", 11)["id"].tolist()
    expect_gallery(page, "#neighbours", ["blob-0-0009", *found])  # its own picture finds it first


def test_rating_with_keys_survives_a_restart(page, server, collection):
    page.get_by_role("tab", name="Discover").click()  # the galaxy to rate shows without a click
    status = page.locator("#discover-status")
    status.get_by_text("0 rated").wait_for()
    page.locator("#discover-galaxy img").wait_for()
    for key, count in (("5", 1), ("0", 2), ("3", 3)):
        page.keyboard.press(key)
        status.get_by_text(f"{count} rated").wait_for()
    page.keyboard.press("u")
    status.get_by_text("undid").wait_for()
    assert len(ratings_store(collection).latest("interesting")) == 2
    server.restart()
    page.goto(server.url)
    page.get_by_role("tab", name="Discover").click()
    status.get_by_text("2 rated in session").wait_for()
    page.keyboard.press("5")
    status.get_by_text("3 rated in session").wait_for()
    page.locator("#discover-start").click()  # the button still shows the next galaxy
    status.get_by_text(re.compile(r"^3 rated in session")).wait_for()


def label_results(page, collection: Path, galaxy: str, label: str) -> None:
    """Search for ``galaxy`` and label its neighbours (the label bar's box fills with them) as ``label``."""
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Search").click()
    page.get_by_label("Galaxy id").fill(galaxy)
    page.get_by_label("Galaxy id").press("Enter")
    bar = page.locator("#search-labels")
    neighbours = similar(open_collection(collection), galaxy, 12)["id"]
    expect(bar.locator("textarea").first).to_have_value(", ".join(neighbours))
    bar.get_by_label("Label set").fill("shapes")
    bar.get_by_label("Class").fill(label)
    bar.get_by_role("button", name="Label", exact=True).click()
    page.locator("#search-labels-status").get_by_text(f"as {label} in set shapes").wait_for()


def test_label_train_predict_and_the_map_recolours_all_from_the_page(page, collection):
    from playwright.sync_api import expect

    umap_coordinates(open_collection(collection))  # the map opens ready, as the demo's does
    catalog = open_collection(collection).catalog
    compact, extended = (
        catalog.loc[catalog["class_name"] == c, "id"].iloc[0] for c in ("compact", "extended")
    )
    label_results(page, collection, compact, "compact")
    label_results(page, collection, extended, "extended")
    labelled = label_store(collection).current("shapes")
    assert set(labelled["label"]) == {"compact", "extended"} and len(labelled) == 24

    page.get_by_role("tab", name="Map").click()
    plot = "#map-plot .js-plotly-plot"
    page.locator(f"{plot}[data-hooked] .nsewdrag").first.wait_for()
    page.get_by_role("tab", name="Classify").click()
    page.get_by_label("a label set").check()
    page.locator("#classify-set input").fill("shapes")
    page.locator("#head-name textarea").fill("shapes")
    page.locator("#candidates-class textarea").fill("compact")
    page.locator("#train-button").click()
    page.locator("#classifier-metrics").get_by_text("cross-validated metrics on all 24 labels").wait_for()
    candidates = page.locator("#candidates .caption-label")
    expect(candidates).to_have_count(24)  # the top 24 of the 40 galaxies not labelled
    shown = {c.split(" · ")[0] for c in candidates.all_inner_texts()}
    assert not shown & set(labelled["id"])
    assert "shapes_prob_compact" in open_collection(collection).catalog  # predicted for every galaxy

    page.get_by_role("tab", name="Map").click()  # coloured by the new head's probabilities
    page.wait_for_function(
        f"() => document.querySelector('{plot}')._fullData"
        ".some(t => t.marker?.colorbar?.title?.text === 'shapes_prob_compact')"
    )


def test_with_auth_the_login_page_loads_and_lets_the_user_search(browser, collection):
    port = free_port()
    app = launch(collection, port=port, auth=("ann", "secret"), block=False)
    page = new_page(browser, WAIT_MS)
    try:
        page.goto(f"http://127.0.0.1:{port}/")  # served through ui.access.LoginRequired
        page.get_by_label("username").fill("ann")
        page.get_by_label("password").fill("secret")
        page.get_by_role("button", name="Login").click()
        page.get_by_label("Galaxy id").fill("blob-0-0005")
        page.locator("#search-button").click()
        expect_gallery(
            page, "#neighbours", similar(open_collection(collection), "blob-0-0005", 12)["id"].tolist()
        )
    finally:
        page.close()
        app.close()
