"""Round-trip latency of the web app over real HTTP, and screenshots of each tab.

    python benchmarks/ui.py [--work DIR] [--screenshots DIR]

Serves the demo collection (built in WORK/demo by `galsearch demo --no-serve`: embedded with the default
encoder, indexed, its map and discovery caches made) on 127.0.0.1 and times, with httpx on Gradio's HTTP
API (POST /gradio_api/run/ENDPOINT): a search by galaxy id (12 neighbours: gallery, table and results
file), and a rating followed by the next galaxy to rate (store, GP refit, re-rank, 13 stamps). "API" is
the request until its JSON answer; "+ files" adds fetching every image and file the answer names, six at
a time, as a browser does. Targets: search p95 < 300 ms, rating + next p95 < 500 ms. Then headless
Chromium (Debian's, via Playwright) opens the page and each tab in turn, timing each until it shows its
content (target: 2 s); with --screenshots it also uses each tab (search, rate, train a classifier on the
demo's classes, lasso on the map it recolours) and saves a picture of it.
"""

from __future__ import annotations

import argparse
import platform
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# This file's folder comes first on sys.path, where this file would hide the `ui` package it measures; the
# checkout's root takes its place, so that the code measured is this checkout's (not an installed one's),
# and Chromium is set up as the browser tests set it up (tests/browser.py).
sys.path.remove(str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import numpy as np

from galsearch.embedder import open_collection
from galsearch.ui.app import launch
from galsearch.ui.cli import main as galsearch
from tests.browser import chromium, new_page

SEARCHES = 200
RATINGS = 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(call, times: int) -> np.ndarray:
    out = []
    for i in range(times):
        start = time.perf_counter()
        call(i)
        out.append(1000 * (time.perf_counter() - start))
    return np.array(out)


def file_urls(answer: object) -> list[str]:
    """Every file URL in a Gradio answer (gallery items, images, files)."""
    if isinstance(answer, dict):
        found = [answer["url"]] if isinstance(answer.get("url"), str) else []
        return found + [u for value in answer.values() for u in file_urls(value)]
    if isinstance(answer, list):
        return [u for value in answer for u in file_urls(value)]
    return []


class Api:
    """POSTs to the app's HTTP API; optionally fetches the files each answer names, 6 at a time."""

    def __init__(self, url: str):
        self.url, self.http = url, httpx.Client(timeout=60)
        self.pool = ThreadPoolExecutor(6)

    def __call__(self, endpoint: str, data: list, fetch: bool = False) -> list:
        answer = self.http.post(f"{self.url}gradio_api/run/{endpoint}", json={"data": data})
        answer.raise_for_status()
        out = answer.json()["data"]
        if fetch:
            list(self.pool.map(lambda u: self.http.get(u).raise_for_status(), file_urls(out)))
        return out


def settle(page) -> None:
    """Let lazily loaded gallery images arrive before a screenshot."""
    page.evaluate("document.querySelectorAll('img[loading=lazy]').forEach(i => { i.loading = 'eager'; })")
    page.wait_for_function("Array.from(document.images).every(i => i.complete)")
    page.wait_for_timeout(500)


# What each tab shows once it is ready to use: the selector that appears, after a click on the tab.
TAB_CONTENT = {
    "Search": "#neighbours",  # the page opens on it, the picker gallery filled
    "Discover": "#discover-status:has-text('rated in session')",
    "Classify": "#train-button",
    "Map": "#map-plot .js-plotly-plot[data-hooked] .nsewdrag",
}


def open_tabs(page, url: str) -> dict[str, float]:
    """Seconds from loading the page (Search) or clicking each other tab until it shows its content."""
    seconds = {}
    start = time.perf_counter()
    page.goto(url)
    page.locator(TAB_CONTENT["Search"]).first.wait_for()
    seconds["Search"] = time.perf_counter() - start
    for tab, content in list(TAB_CONTENT.items())[1:]:
        start = time.perf_counter()
        page.get_by_role("tab", name=tab).click()
        page.locator(content).first.wait_for()
        seconds[tab] = time.perf_counter() - start
    return seconds


def screenshots(url: str, folder: Path | None, labels: Path) -> dict[str, float]:
    """Time each tab's opening on a fresh page; with ``folder``, use each tab and save a picture of it."""
    with chromium() as browser:
        page = new_page(browser, 180_000, height=1100)  # a first map computes the UMAP
        opening = open_tabs(page, url)
        if folder is None:
            return opening
        folder.mkdir(parents=True, exist_ok=True)
        page.get_by_role("tab", name="Search").click()
        page.get_by_label("Galaxy id").fill("sim-00010")
        page.get_by_label("Galaxy id").press("Enter")
        page.locator("#neighbours img").first.wait_for()
        settle(page)
        page.screenshot(path=folder / "search.png", full_page=True)
        page.get_by_role("tab", name="Discover").click()
        page.locator(TAB_CONTENT["Discover"]).wait_for()
        for key in "50305":
            page.keyboard.press(key)
            page.wait_for_timeout(400)
        settle(page)
        page.screenshot(path=folder / "discover.png", full_page=True)
        page.get_by_role("tab", name="Classify").click()
        page.get_by_label("a label file or typed labels").check()
        page.locator("#labels-file input[type=file]").set_input_files(labels)
        # uploaded once the server's copy is linked (the whole name shows only while it uploads)
        page.locator(f'#labels-file [data-testid="download-link"][download="{labels.name}"]').wait_for()
        page.locator("#head-name textarea").fill("morphology")
        page.locator("#candidates-class textarea").fill("merger")
        page.locator("#train-button").click()
        page.locator("#classifier-metrics").get_by_text("cross-validated").wait_for()
        page.locator("#candidates img").first.wait_for()
        settle(page)
        page.screenshot(path=folder / "classify.png", full_page=True)
        page.get_by_role("tab", name="Map").click()  # coloured by the head just trained, once it opens
        page.wait_for_function(
            "() => document.querySelector('#map-plot .js-plotly-plot')?._fullData"
            "?.some(t => t.marker?.colorbar?.title?.text === 'morphology_prob_merger')"
        )
        page.locator(TAB_CONTENT["Map"]).first.wait_for()
        area = page.locator(TAB_CONTENT["Map"]).first.bounding_box()
        lasso = [(0.45, 0.35), (0.6, 0.35), (0.6, 0.6), (0.45, 0.6), (0.45, 0.35)]
        page.mouse.move(area["x"] + lasso[0][0] * area["width"], area["y"] + lasso[0][1] * area["height"])
        page.mouse.down()
        for fx, fy in lasso[1:]:
            page.mouse.move(area["x"] + fx * area["width"], area["y"] + fy * area["height"], steps=8)
        page.mouse.up()
        page.locator("#map-selection img").first.wait_for()
        settle(page)
        page.screenshot(path=folder / "map.png", full_page=True)
    return opening


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("work"))
    parser.add_argument("--screenshots", type=Path, help="folder for one PNG per tab")
    args = parser.parse_args()
    # The demo as `galsearch demo` builds it: embedded, indexed, its map and discovery caches made.
    galsearch(["demo", "--no-serve", "--path", str(args.work / "demo")])
    coll = open_collection(args.work / "demo")
    port = free_port()
    app = launch(coll.path, port=port, block=False)
    url = f"http://127.0.0.1:{port}/"
    try:
        api = Api(url)
        queries = np.random.default_rng(0).choice(coll.catalog["id"].to_numpy(), SEARCHES)
        search = lambda i, fetch: api("search", [queries[i], "", "", 5.0, None, "", "", "", 12, "CSV"], fetch)  # noqa: E731
        search(0, True)  # warm-up: loads the index
        times = {
            "search by id (12 neighbours)": [
                timed(lambda i, f=f: search(i, f), SEARCHES) for f in (False, True)
            ]
        }
        session = f"benchmark-{int(time.time())}"
        galaxy = api("next", [session, []])[2]  # raw HTTP passes the skipped-list state too
        scores = np.random.default_rng(1).integers(0, 6, RATINGS)

        def rate(i: int, fetch: bool) -> None:
            nonlocal galaxy
            galaxy = api("rate", [session, galaxy, [], float(scores[i])], fetch)[2]

        times["rating + next galaxy"] = [timed(lambda i, f=f: rate(i, f), RATINGS) for f in (False, True)]
        report(len(coll), times)
        labels = args.work / "demo-classes.csv"  # 40 galaxies of each class, as a workbench user labels
        classes = coll.catalog[["id", "class_name"]].rename(columns={"class_name": "label"})
        classes.groupby("label").head(40).to_csv(labels, index=False)
        opening = screenshots(url, args.screenshots, labels)
        print("\n| tab | opens in s (click to content; Search: page load) | target |\n|---|---|---|")
        for tab, seconds in opening.items():
            print(f"| {tab} | {seconds:.2f} | < 2 ({'met' if seconds < 2 else 'MISSED'}) |")
    finally:
        app.close()


def report(galaxies: int, times: dict[str, list[np.ndarray]]) -> None:
    print(f"machine: {platform.processor() or platform.machine()}, CPU only; demo: {galaxies} galaxies\n")
    print("| round trip | n | API p50 ms | API p95 ms | + files p50 ms | + files p95 ms | target p95 |")
    print("|---|---|---|---|---|---|---|")
    for (name, (api_ms, full_ms)), target in zip(times.items(), (300, 500), strict=True):
        cells = [f"{v:.0f}" for ms in (api_ms, full_ms) for v in np.percentile(ms, [50, 95])]
        verdict = "met" if np.percentile(full_ms, 95) < target else "MISSED"
        print(f"| {name} | {len(api_ms)} | " + " | ".join(cells) + f" | < {target} ({verdict}) |")


if __name__ == "__main__":
    main()
