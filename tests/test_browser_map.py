"""The Map tab in headless Chromium, driven by real mouse events: the first map, hover stamps, lasso
selections and what is done with them, colouring."""

from __future__ import annotations

import io
import json
import re
import shutil
import threading

import numpy as np
import pandas as pd
import pytest
import test_browser
from browser import new_page
from conftest import free_port
from test_browser import WAIT_MS

from galsearch.embedder import open_collection
from galsearch.index import rows_in_polygon, search, umap_coordinates
from galsearch.index.projection import MAP_DIR
from galsearch.ui.app import launch
from galsearch.ui.map_tab import SIMILAR

pytestmark = pytest.mark.slow

# The fixtures of the other browser tests: Chromium, the 64-galaxy collection, the app serving it, a page.
browser, collection, server, page = (
    test_browser.browser,
    test_browser.collection,
    test_browser.server,
    test_browser.page,
)

PLOT = "#map-plot .js-plotly-plot"
TRACES = f"document.querySelector('{PLOT}')._fullData"  # the drawn traces, their arrays decoded


@pytest.fixture
def coords(collection) -> np.ndarray:
    """The collection's map coordinates (computed the first time)."""
    return umap_coordinates(open_collection(collection))


def open_map(page) -> None:
    """Open the Map tab and wait until the map is drawn and its events are heard."""
    page.get_by_role("tab", name="Map").click()
    page.locator(f"{PLOT}[data-hooked] .nsewdrag").first.wait_for()


def pixel(page, x: float, y: float) -> tuple[float, float]:
    """Where the map coordinates (x, y) are on the page, from the plot area and the axes' ranges."""
    area = page.locator(f"{PLOT} .nsewdrag").first.bounding_box()
    (x0, x1), (y0, y1) = page.evaluate(
        f"() => ['xaxis', 'yaxis'].map(a => document.querySelector('{PLOT}')._fullLayout[a].range)"
    )
    return (
        area["x"] + (float(x) - x0) / (x1 - x0) * area["width"],
        area["y"] + (y1 - float(y)) / (y1 - y0) * area["height"],
    )


def loneliest(coords: np.ndarray) -> int:
    """The galaxy farthest from its nearest neighbour on the map (relative to the map's size)."""
    scaled = (coords - coords.min(axis=0)) / np.ptp(coords, axis=0)
    distance = np.sqrt(((scaled[:, None] - scaled[None]) ** 2).sum(-1)) + np.eye(len(coords)) * 9
    return int(distance.min(axis=1).argmax())


def cut(values: np.ndarray) -> float:
    """A value in the widest gap between the middle values: no galaxy lies near it."""
    middle = np.sort(values)[len(values) * 3 // 10 : len(values) * 7 // 10 + 1]
    widest = int(np.diff(middle).argmax())
    return float(middle[widest : widest + 2].mean())


def expect_stamps(page, selector: str, ids: list[str]) -> None:
    """Wait until the map's gallery ``selector`` shows stamps captioned with exactly these ids, in order."""
    from playwright.sync_api import expect

    captions = [re.compile(rf"^{re.escape(galaxy)} ") for galaxy in ids]
    expect(page.locator(f"{selector} figcaption")).to_have_text(captions, timeout=WAIT_MS)
    images = page.locator(f"{selector} img")
    assert images.evaluate_all("all => all.every(i => i.src.startsWith('data:image/webp;base64,'))")


def drag_lasso(page, corners: list[tuple[float, float]]) -> None:
    """Draw a lasso through the map coordinates ``corners`` with the mouse (the map's default tool)."""
    points = [pixel(page, x, y) for x, y in corners]
    page.mouse.move(*points[0])
    page.mouse.down()
    for point in [*points[1:], points[0]]:
        page.mouse.move(*point, steps=8)
    page.mouse.up()


def test_a_first_map_is_one_click_away_then_opens_ready(page, server, collection):
    from playwright.sync_api import expect

    shutil.rmtree(collection / MAP_DIR, ignore_errors=True)
    server.restart()
    page.goto(server.url)
    page.get_by_role("tab", name="Map").click()
    note = page.locator("#map-note")
    expect(note).to_contain_text(re.compile(r"computes the UMAP of 64 embeddings, about \d+ s"))
    assert page.locator(PLOT).count() == 0
    page.locator("#map-button").click()
    page.locator(f"{PLOT} .nsewdrag").first.wait_for()
    expect(note).to_have_text("")
    page.reload()
    open_map(page)  # cached now: the map is drawn as the tab opens
    assert note.inner_text() == ""
    traces = page.evaluate(f"() => {TRACES}.map(t => t.customdata.length)")
    assert sum(traces) == 64


def test_hovering_a_galaxy_shows_its_stamp_id_and_colour(page, collection, coords):
    catalog = open_collection(collection).catalog
    open_map(page)
    colour = page.get_by_label("Colour by")
    colour.fill("class_name")
    colour.press("Enter")
    page.wait_for_function(f"() => {TRACES}.some(t => t.name === 'compact')")
    row = loneliest(coords)
    page.mouse.move(*pixel(page, *coords[row]))
    card = page.locator(f'#map-hover[data-row="{row}"]')
    card.wait_for()
    assert card.inner_text() == f"{catalog['id'][row]} · class_name: {catalog['class_name'][row]}"
    assert card.locator("img").get_attribute("src").startswith("data:image/png;base64,")
    page.mouse.move(5, 5)  # off the map: the card goes
    page.locator("#map-hover").wait_for(state="hidden")


def test_a_lasso_fills_the_gallery_which_searches_and_exports(page, collection, coords):
    coll = open_collection(collection)
    open_map(page)
    (x0, y0), (x1, y1) = coords.min(axis=0), coords.max(axis=0)
    pad_x, pad_y = 0.02 * (x1 - x0), 0.02 * (y1 - y0)
    x_cut = cut(coords[:, 0])  # the left part of the map: 30-70 % of the galaxies, however they lie
    corners = [(x0 - pad_x, y0 - pad_y), (x_cut, y0 - pad_y), (x_cut, y1 + pad_y), (x0 - pad_x, y1 + pad_y)]
    inside = rows_in_polygon(coords, corners)
    assert 0 < len(inside) < 48
    drag_lasso(page, corners)
    ids = coll.catalog_rows(inside, ["id"])["id"].tolist()
    expect_stamps(page, "#map-selection", ids)
    page.locator("#map-selection-info").get_by_text(f"{len(inside)} galaxies selected").wait_for()

    page.locator("#map-export").click()  # CSV, every catalog column
    link = page.locator('#map-export-file [data-testid="download-link"]')
    link.wait_for()
    exported = page.request.get(link.get_attribute("href"))
    table = pd.read_csv(io.StringIO(exported.text()))
    assert table["id"].tolist() == ids and {"ra", "dec", "class_name"} <= set(table.columns)

    page.locator("#map-search-like").click()
    found = search(coll, ids=ids, k=SIMILAR)["id"].tolist()
    expect_stamps(page, "#map-similar", found)
    rings = f"{TRACES}.find(t => t.name === 'search results')"
    page.wait_for_function(f"() => {rings}?.customdata.length === {len(found)}")


def test_with_auth_the_map_still_shows_stamps_and_strangers_get_none(browser, collection, coords):
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    app = launch(collection, port=port, auth=("ann", "secret"), block=False)
    page = new_page(browser, WAIT_MS)
    try:
        assert httpx.post(f"{url}gradio_api/run/stamp", json={"data": [0]}).status_code == 401
        page.goto(url)
        page.get_by_label("username").fill("ann")
        page.get_by_label("password").fill("secret")
        page.get_by_role("button", name="Login").click()
        open_map(page)
        row = loneliest(coords)
        page.mouse.move(*pixel(page, *coords[row]))
        page.locator(f'#map-hover[data-row="{row}"] img').wait_for()  # fetched with the page's cookie
    finally:
        page.close()
        app.close()


def test_under_a_path_prefix_the_map_still_shows_stamps(browser, collection, coords):
    """Served at /galsearch/ (as behind a reverse proxy): the page's script asks the prefixed endpoint."""
    import gradio as gr
    import uvicorn
    from fastapi import FastAPI

    from galsearch.ui.app import build_app
    from galsearch.ui.map_js import MAP_JS

    port = free_port()
    host = gr.mount_gradio_app(FastAPI(), build_app(collection), "/galsearch", head=MAP_JS, ssr_mode=False)
    server = uvicorn.Server(uvicorn.Config(host, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    page = new_page(browser, WAIT_MS)
    asked = []
    page.on("request", lambda request: asked.append(request.url))
    try:
        page.goto(f"http://127.0.0.1:{port}/galsearch/")
        open_map(page)
        row = loneliest(coords)
        page.mouse.move(*pixel(page, *coords[row]))
        page.locator(f'#map-hover[data-row="{row}"] img').wait_for()
        assert f"http://127.0.0.1:{port}/galsearch/gradio_api/run/stamp" in asked
    finally:
        page.close()
        server.should_exit = True
        thread.join()


def test_after_recolouring_by_a_number_a_lasso_still_selects_what_it_encloses(page, collection, coords):
    coll = open_collection(collection)
    open_map(page)
    colour = page.get_by_label("Colour by")
    colour.fill("ra")  # numbers: a colour bar, the legend moves under the map
    colour.press("Enter")
    page.wait_for_function(f"() => {TRACES}.some(t => t.marker?.colorbar?.title?.text === 'ra')")
    (x0, y0), (x1, y1) = coords.min(axis=0), coords.max(axis=0)
    pad_x, pad_y = 0.02 * (x1 - x0), 0.02 * (y1 - y0)
    x_cut = cut(coords[:, 0])  # the right part of the map: 30-70 % of the galaxies, however they lie
    corners = [(x_cut, y0 - pad_y), (x1 + pad_x, y0 - pad_y), (x1 + pad_x, y1 + pad_y), (x_cut, y1 + pad_y)]
    inside = rows_in_polygon(coords, corners)
    assert 0 < len(inside) < 48
    drag_lasso(page, corners)
    expect_stamps(page, "#map-selection", coll.catalog_rows(inside, ["id"])["id"].tolist())


def test_search_results_and_the_galaxy_being_rated_are_ringed_on_the_map(page, collection, coords):
    coll = open_collection(collection)
    page.get_by_label("Galaxy id").fill("blob-0-0005")
    page.get_by_label("Galaxy id").press("Enter")
    found = search(coll, ids=["blob-0-0005"], k=12)["id"].tolist()
    page.locator("#neighbours .caption-label").nth(11).wait_for()
    page.get_by_role("tab", name="Discover").click()
    page.locator("#discover-status").get_by_text("rated in session").wait_for()
    rated = page.locator("#discover-labels textarea").first.input_value()
    open_map(page)
    rows = {
        name: sorted(coll.rows_of(ids).tolist())
        for name, ids in (("search results", found), ("being rated", [rated]))
    }
    for name, expected in rows.items():
        ring = f"{TRACES}.find(t => t.name === '{name}')"
        page.wait_for_function(
            f"() => JSON.stringify([...{ring}?.customdata ?? []].sort((a, b) => a - b))"
            f" === '{json.dumps(expected).replace(' ', '')}'"
        )
