"""`galsearch fetch` against a local stand-in for the survey services (127.0.0.1 only, never the network).

The server answers under the services' own URL paths with generated FITS and JPEG cutouts, and injects
the failures a long run meets: 5xx, 429, slow answers, truncated bodies, blank images, 404s.
"""

from __future__ import annotations

import io
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from conftest import TINY_ENCODER
from PIL import Image

from galsearch.embedder import FetchError, embed, open_collection
from galsearch.embedder.fetch import FAILURES_FILE, SURVEYS, CutoutRequest, Downloader, fetch, iau_name
from galsearch.index import QueryError, search
from galsearch.ui import cli

BAND_SCALE = {"g": 1.0, "r": 2.0, "i": 2.5, "z": 3.0, "y": 3.5}  # galaxies are redder than the sky


def seed_of(ra: float) -> int:
    """Which generated galaxy the server draws at an RA (the Dec does not matter)."""
    return round(ra * 1000)


def galaxy(seed: int, size: int) -> np.ndarray:
    """A (size, size) elliptical Gaussian galaxy, different for each seed, plus a little noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    sigma, q, theta = size * rng.uniform(0.05, 0.2), rng.uniform(0.3, 1), rng.uniform(0, np.pi)
    u = xx * np.cos(theta) + yy * np.sin(theta)
    v = -xx * np.sin(theta) + yy * np.cos(theta)
    blob = 5 * np.exp(-0.5 * ((u / sigma) ** 2 + (v / (sigma * q)) ** 2))
    return (blob + rng.normal(0, 0.05, (size, size))).astype(np.float32)


class FakeSurveys(ThreadingHTTPServer):
    """Legacy Surveys, SDSS and Pan-STARRS cutout services as one local server that counts and misbehaves.

    ``faults[seed]`` is a list of misbehaviours served one per request, then it answers well; ``always``
    is misbehaviour that never stops. ``gate(n)`` holds the first n requests until n are in flight at
    once; ``hold_after(n)`` holds every request after the n-th until the server closes.
    """

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.lock = threading.Lock()
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.faults: dict[int, list[str]] = {}
        self.always: dict[int, str] = {}
        self.in_flight = self.max_in_flight = 0
        self.closing = threading.Event()
        self.barrier: threading.Barrier | None = None
        self.gated = 0
        self.hold_from: int | None = None
        self.held = 0

    def base(self, survey: str) -> str:
        return self.url + urlparse(SURVEYS[survey].base_url).path

    def gate(self, n: int) -> None:
        self.barrier, self.gated = threading.Barrier(n), n

    def hold_after(self, n: int) -> None:
        self.hold_from = n

    def count(self, path: str | None = None, seed: int | None = None) -> int:
        with self.lock:
            return sum(
                1
                for p, q in self.requests
                if (path is None or p.endswith(path)) and (seed is None or seed_of(float(q["ra"])) == seed)
            )

    def per_seed(self) -> Counter:
        with self.lock:
            return Counter(seed_of(float(q["ra"])) for _, q in self.requests)


class Handler(BaseHTTPRequestHandler):
    server: FakeSurveys

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        server = self.server
        with server.lock:
            server.requests.append((url.path, query))
            number = len(server.requests)
            server.in_flight += 1
            server.max_in_flight = max(server.max_in_flight, server.in_flight)
            gated = server.gated > 0
            server.gated -= gated
            seed = seed_of(float(query["ra"])) if "ra" in query else None
            queued = server.faults.get(seed) or [None]
            fault = server.always.get(seed) or queued.pop(0)
        try:
            if gated:
                server.barrier.wait(timeout=60)
            if server.hold_from is not None and number > server.hold_from:
                server.held += 1
                server.closing.wait(120)
                return
            self.answer(url.path, query, fault)
        except (BrokenPipeError, ConnectionResetError, threading.BrokenBarrierError):
            pass
        finally:
            with server.lock:
                server.in_flight -= 1

    def answer(self, path: str, query: dict[str, str], fault: str | None) -> None:
        if fault == "slow":
            self.server.closing.wait(30)
        if fault in ("500", "503", "404"):
            return self.send(int(fault), b"something went wrong", "text/plain")
        if fault == "429":
            return self.send(429, b"too many requests", "text/plain", {"Retry-After": "0"})
        if fault == "garbage":
            return self.send(200, b"<html>maintenance</html>", "image/jpeg")
        seed, dec = seed_of(float(query["ra"])), float(query["dec"])
        if path == "/viewer/cutout.fits":
            size, bands = int(query["size"]), query["bands"]
            cube = np.stack([galaxy(seed, size) * BAND_SCALE[b] for b in bands])
            if fault == "blank":
                cube[:] = 0
            elif fault == "edge":
                cube[..., : size * 3 // 4] = 0
            header = fits.Header({f"BAND{i}": b for i, b in enumerate(bands)})
            body = fits_bytes(cube, header)
        elif path in ("/viewer/cutout.jpg", "/dr17/SkyServerWS/ImgCutout/getjpeg"):
            side = int(query.get("size") or query["width"])
            body = jpeg_bytes(galaxy(seed, side), blank=fault == "blank")
        elif path == "/cgi-bin/ps1filenames.py":
            where = f"{query['ra']} {query['dec']}"
            rows = [f"2381 059 {where} {b} 0 stack {ps1_file(b)} x 0" for b in query["filters"] if dec > -30]
            lines = ["projcell subcell ra dec filter mjd type filename shortname badflag", *rows]
            body = ("\n".join(lines) + "\n").encode()
        elif path == "/cgi-bin/fitscut.cgi":
            size = int(query["size"])
            if query["format"] == "fits":
                band = query["red"].split(".stk.")[1][0]
                body = fits_bytes(galaxy(seed, size) * BAND_SCALE[band], fits.Header())
            else:
                body = jpeg_bytes(galaxy(seed, int(query["output_size"])), blank=fault == "blank")
        else:
            return self.send(404, b"no such service", "text/plain")
        self.send(200, body, "application/octet-stream", truncate=fault == "truncated")

    def send(self, status: int, body: bytes, kind: str, headers: dict | None = None, truncate: bool = False):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if truncate else body)
        self.close_connection = truncate


def ps1_file(band: str) -> str:
    return f"/rings.v3.skycell/2381/059/rings.v3.skycell.2381.059.stk.{band}.unconv.fits"


def fits_bytes(data: np.ndarray, header: fits.Header) -> bytes:
    buffer = io.BytesIO()
    fits.PrimaryHDU(data.astype(np.float32), header).writeto(buffer)
    return buffer.getvalue()


def jpeg_bytes(plane: np.ndarray, blank: bool = False) -> bytes:
    grey = np.clip(plane / plane.max() * 255, 0, 255)
    rgb = np.zeros((*plane.shape, 3), np.uint8) if blank else np.stack([grey, grey * 0.8, grey * 0.6], -1)
    buffer = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8)).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


@pytest.fixture
def server(monkeypatch):
    """The fake services, with every survey's base URL pointed at them through the environment."""
    fake = FakeSurveys()
    thread = threading.Thread(target=fake.serve_forever, daemon=True)
    thread.start()
    for survey in SURVEYS:
        monkeypatch.setenv(f"GALSEARCH_FETCH_BASE_{survey.upper()}", fake.base(survey))
    yield fake
    fake.closing.set()
    fake.shutdown()
    fake.server_close()


def positions(n: int, start: float = 150.0, dec: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """RA/Dec of ``n`` galaxies 0.01 degree apart (each its own server galaxy)."""
    return start + 0.01 * np.arange(n), dec + 0.001 * np.arange(n)


def write_catalog(path: Path, n: int, **extra) -> Path:
    ra, dec = positions(n)
    table = {"objid": [f"gal{i:02d}" for i in range(n)], "RA": ra, "DEC": dec, "mag": 17 + 0.1 * np.arange(n)}
    pd.DataFrame(table | extra).to_csv(path, index=False)
    return path


def quick(**options):
    """Options of a fetch that does not wait long between retries."""
    return {"backoff": 0.01, "progress": False, "size": 32} | options


# ---- surveys, URLs and catalogues --------------------------------------------------------------------


def test_legacy_fits_cutouts_become_a_collection_with_the_catalogue_columns(server, tmp_path):
    catalog = write_catalog(tmp_path / "cat.csv", 6, source=["sdss"] * 6, note=list("abcdef"))
    report = fetch(catalog, tmp_path / "coll", "legacy", **quick())
    assert (report.fetched, report.cached, report.failed) == (6, 0, [])
    coll = open_collection(tmp_path / "coll")
    assert len(coll) == 6 and coll.image_shape == (32, 32, 3)
    row = coll.catalog.set_index("id").loc["gal03"]
    assert row["mag"] == pytest.approx(17.3) and row["note"] == "d" and row["table_source"] == "sdss"
    assert (row["ra"], row["dec"]) == pytest.approx((150.03, 2.003))
    assert row["bands"] == "z,r,g" and row["survey"] == "legacy:ls-dr10"
    assert (coll.path / row["cutout"]).is_file() and row["source"] == "cat.csv[3]"
    _, query = server.requests[0]
    assert {k: query[k] for k in ("layer", "pixscale", "size", "bands")} == {
        "layer": "ls-dr10",
        "pixscale": "0.262",
        "size": "32",
        "bands": "grz",
    }
    red, _, blue = coll.images[:].astype(float).mean(axis=(0, 1, 2))
    assert red > blue  # channels stored red to blue: z (brightest here) is R, g is B


def test_legacy_griz_fits_fill_a_four_band_collection_that_keeps_their_colours(server, tmp_path):
    catalog = write_catalog(tmp_path / "cat.csv", 4)
    command = ["fetch", str(catalog), str(tmp_path / "coll"), "--bands", "griz", "--format", "fits"]
    done = cli.main([*command, "--size", "32", "--quiet"])
    assert done == 0
    coll = open_collection(tmp_path / "coll")
    assert coll.image_shape == (32, 32, 4) and coll.preprocessing["bands"] == ["z", "i", "r", "g"]
    assert coll.preprocessing["stretch"]["kind"] == "lupton"
    assert {q["bands"] for _, q in server.requests} == {"griz"}
    assert set(coll.catalog["bands"]) == {"z,i,r,g"}
    # the server's bands are one galaxy times 3, 2.5, 2 and 1 (z, i, r, g): the stored ratios follow
    images = coll.images[:].astype(float)
    bright = images[..., 0] > 100  # the galaxy, where the sky's noise is small beside it
    ratios = [np.median(images[..., c][bright] / images[..., 0][bright]) for c in range(4)]
    assert ratios == pytest.approx([1, 2.5 / 3, 2 / 3, 1 / 3], abs=0.03)


def test_panstarrs_grizy_and_a_collection_of_other_bands_refused_before_any_download(server, tmp_path):
    catalog = write_catalog(tmp_path / "cat.csv", 2)
    report = fetch(catalog, tmp_path / "coll", "panstarrs", **quick(bands="grizy"))
    assert report.fetched == 2
    cuts = [q for p, q in server.requests if p == "/cgi-bin/fitscut.cgi"]
    assert sorted(q["red"] for q in cuts) == sorted(ps1_file(b) for b in "grizy" for _ in range(2))
    coll = open_collection(tmp_path / "coll")
    assert coll.image_shape == (32, 32, 5) and coll.preprocessing["bands"] == ["y", "z", "i", "r", "g"]

    before = server.count()
    more = write_catalog(tmp_path / "more.csv", 3)
    with pytest.raises(FetchError, match=r"holds bands y,z,i,r,g .* brings i,r,g: .* --bands grizy"):
        fetch(more, tmp_path / "coll", "panstarrs", **quick())
    with pytest.raises(FetchError, match="brings unnamed colour JPEG channels"):
        fetch(more, tmp_path / "coll", "panstarrs", **quick(format="jpeg"))
    assert server.count() == before
    assert fetch(more, tmp_path / "coll", "panstarrs", **quick(bands="yzgri")).already_present == 2


def test_sdss_jpeg_with_iau_names_from_a_fits_catalogue_without_ids(server, tmp_path):
    ra, dec = positions(3)
    Table({"ra": ra, "dec": dec, "z": [0.1, 0.2, 0.3]}).write(tmp_path / "cat.fits")
    report = fetch(tmp_path / "cat.fits", tmp_path / "coll", "sdss", **quick(size=40))
    assert report.fetched == 3
    catalog = open_collection(tmp_path / "coll").catalog.set_index("id")  # rows in order of arrival
    names = [iau_name(r, d) for r, d in zip(ra, dec, strict=True)]
    assert list(catalog.loc[names, "z"]) == [0.1, 0.2, 0.3]
    path, query = server.requests[0]
    assert path == "/dr17/SkyServerWS/ImgCutout/getjpeg"
    assert (query["scale"], query["width"], query["height"]) == ("0.396", "40", "40")
    with pytest.raises(FetchError, match="colour JPEGs only"):
        fetch(tmp_path / "cat.fits", tmp_path / "c2", "sdss", bands="gri", **quick())


def test_panstarrs_lists_the_stack_images_then_cuts_each_band(server, tmp_path):
    catalog = write_catalog(tmp_path / "cat.csv", 2)
    report = fetch(catalog, tmp_path / "coll", "panstarrs", **quick(pixscale=0.5))
    assert report.fetched == 2
    listing = [q for p, q in server.requests if p == "/cgi-bin/ps1filenames.py"]
    cuts = [q for p, q in server.requests if p == "/cgi-bin/fitscut.cgi"]
    assert len(listing) == 2 and listing[0]["filters"] == "gri" and listing[0]["type"] == "stack"
    assert len(cuts) == 6 and {q["format"] for q in cuts} == {"fits"}
    assert {q["red"] for q in cuts} == {ps1_file(b) for b in "gri"}
    assert {q["size"] for q in cuts} == {"64"}  # 32 px of 0.5 arcsec are 64 PS1 pixels of 0.25 arcsec
    coll = open_collection(tmp_path / "coll")
    assert coll.image_shape == (32, 32, 3) and set(coll.catalog["bands"]) == {"i,r,g"}


def test_panstarrs_colour_jpeg_and_its_footprint(server, tmp_path):
    ra, _ = positions(3)
    pd.DataFrame({"ra": ra, "dec": [10.0, 20.0, -45.0]}).to_csv(tmp_path / "cat.csv", index=False)
    report = fetch(tmp_path / "cat.csv", tmp_path / "coll", "panstarrs", **quick(format="jpeg"))
    assert report.fetched == 2
    [failure] = report.failed
    assert failure.reason == "outside footprint" and failure.dec == -45.0
    [cut, _] = [q for p, q in server.requests if p == "/cgi-bin/fitscut.cgi"]
    assert (cut["red"], cut["green"], cut["blue"]) == (ps1_file("i"), ps1_file("r"), ps1_file("g"))
    assert (cut["format"], cut["output_size"]) == ("jpg", "32")


def test_bad_requests_are_refused_before_any_download(server, tmp_path):
    catalog = write_catalog(tmp_path / "cat.csv", 2)
    for options, message in [
        ({"survey": "hubble"}, "unknown survey"),
        ({"survey": "panstarrs", "format": "jpeg", "bands": "gr"}, "made of 3 bands"),
        ({"bands": "grrz"}, "each once"),
        ({"bands": "gqz"}, "letters from 'griz'"),
        ({"survey": "sdss", "format": "fits"}, "serves jpeg cutouts"),
        ({"survey": "sdss", "layer": "dr9"}, "has no layers"),
        ({"concurrency": 0}, "concurrency >= 1"),
    ]:
        with pytest.raises(FetchError, match=message):
            fetch(catalog, tmp_path / "coll", **quick() | options)
    assert server.requests == []


@pytest.mark.parametrize("survey", SURVEYS)
def test_a_request_saved_with_a_collection_is_made_again_the_same(survey):
    request = CutoutRequest.make(survey)
    assert CutoutRequest.make(**asdict(request)) == request


def test_iau_names_are_truncated_not_rounded():
    assert iau_name(0, 0) == "J000000.00+000000.0"
    assert iau_name(15 * (1 + 2 / 60 + 3.456 / 3600), -(4 + 5 / 60 + 6.78 / 3600)) == "J010203.45-040506.7"
    assert iau_name(359.99999999, 89.99999999) == "J235959.99+895959.9"
    assert iau_name(-0.5, -0.00001) == "J235800.00-000000.0"
    coord = SkyCoord(187.70593, 12.39112, unit="deg")  # M87: 12h30m49.42s +12d23m28.0s
    assert iau_name(coord.ra.deg, coord.dec.deg) == "J123049.42+122328.0"


def test_cli_lists_every_survey():
    assert tuple(SURVEYS) == cli.SURVEYS


# ---- failures, retries and politeness ----------------------------------------------------------------


def test_failures_are_listed_with_reasons_and_transient_ones_retried(server, tmp_path):
    ra, _ = positions(10)
    seeds = [seed_of(r) for r in ra]
    server.faults = {seeds[0]: ["500", "503"], seeds[1]: ["truncated"], seeds[2]: ["429", "garbage"]}
    server.always = {
        seeds[3]: "500",
        seeds[4]: "404",
        seeds[5]: "blank",
        seeds[6]: "edge",
        seeds[7]: "truncated",
    }
    catalog = write_catalog(tmp_path / "cat.csv", 10)
    frame = pd.read_csv(catalog)
    frame.loc[9, "DEC"] = 95.0
    frame.to_csv(catalog, index=False)
    report = fetch(catalog, tmp_path / "coll", **quick(retries=2))
    assert (
        report.fetched == 4
    )  # gal08, and the others after a 500 and a 503, a truncated body, a 429 and an HTML page
    reasons = {f.id: (f.reason, f.detail) for f in report.failed}
    assert reasons["gal03"] == (
        "HTTP 500",
        "500 Internal Server Error: something went wrong (after 3 attempts)",
    )
    assert reasons["gal04"][0] == "HTTP 404"
    assert reasons["gal05"] == ("blank cutout", "every pixel is 0: outside the survey footprint?")
    assert (
        reasons["gal06"][0] == "partial coverage" and "75% of the cutout has no data" in reasons["gal06"][1]
    )
    assert reasons["gal07"][0] == "truncated answer" and "after 3 attempts" in reasons["gal07"][1]
    assert reasons["gal09"][0] == "invalid position" and len(reasons) == 6
    counts = server.per_seed()
    assert [counts[s] for s in seeds[:8]] == [3, 2, 3, 3, 1, 1, 1, 3]  # no retry of a 404 or a blank
    listed = pd.read_csv(tmp_path / "coll" / FAILURES_FILE).set_index("id")
    assert list(listed.index) == ["gal03", "gal04", "gal05", "gal06", "gal07", "gal09"]  # catalogue order
    assert list(listed["row"]) == [3, 4, 5, 6, 7, 9]
    assert (
        listed.loc["gal05", "reason"] == "blank cutout"
        and "cutout.fits?ra=150.05" in listed.loc["gal05", "url"]
    )
    assert len(open_collection(tmp_path / "coll")) == 4
    assert "gal04 (ra 150.040000, dec +2.004000): HTTP 404" in report.summary()

    again = fetch(catalog, tmp_path / "coll", **quick(retries=0))
    assert again.already_present == 4 and len(again.failed) == 6
    counts = server.per_seed()  # the services' lasting answers are remembered; the 500s are asked again
    assert [counts[s] for s in seeds[3:8]] == [4, 1, 1, 1, 4]
    assert "remembered from an earlier run" in {f.id: f.detail for f in again.failed}["gal05"]

    server.always.pop(seeds[5])
    third = fetch(catalog, tmp_path / "coll", **quick(retries=0, retry_failed=True))
    assert third.fetched == 1 and server.per_seed()[seeds[4]] == 2


def test_slow_answers_time_out_and_are_retried(server, tmp_path):
    ra, _ = positions(2)
    server.faults = {seed_of(ra[0]): ["slow"]}
    server.always = {seed_of(ra[1]): "slow"}
    catalog = write_catalog(tmp_path / "cat.csv", 2)
    report = fetch(catalog, tmp_path / "coll", **quick(retries=1, timeout=4.0))
    assert report.fetched == 1
    [failure] = report.failed
    assert (failure.id, failure.reason) == ("gal01", "timeout") and "after 2 attempts" in failure.detail


def test_at_most_concurrency_requests_are_in_flight(server, tmp_path):
    server.gate(3)  # the first three requests wait for each other: three must be in flight at once
    catalog = write_catalog(tmp_path / "cat.csv", 12)
    report = fetch(catalog, tmp_path / "coll", **quick(concurrency=3))
    assert report.fetched == 12 and server.max_in_flight == 3


def test_a_run_that_cannot_fetch_anything_is_an_error(server, tmp_path):
    ra, _ = positions(2)
    server.always = {seed_of(r): "blank" for r in ra}
    with pytest.raises(FetchError, match="blank cutout: every pixel is 0"):
        fetch(write_catalog(tmp_path / "cat.csv", 2), tmp_path / "coll", **quick())
    assert len(pd.read_csv(tmp_path / "coll" / FAILURES_FILE)) == 2


# ---- cache and resume --------------------------------------------------------------------------------


def test_nothing_is_fetched_twice(server, tmp_path):
    catalog = write_catalog(tmp_path / "cat.csv", 5)
    fetch(catalog, tmp_path / "coll", **quick())
    again = fetch(catalog, tmp_path / "coll", **quick())
    assert again.already_present == 5 and server.count() == 5
    for name in ("manifest.json", "catalog.parquet", "images.u8"):  # the collection is lost, its cache kept
        (tmp_path / "coll" / name).unlink()
    rebuilt = fetch(catalog, tmp_path / "coll", **quick())
    assert (rebuilt.cached, rebuilt.fetched) == (5, 0) and server.count() == 5
    assert len(open_collection(tmp_path / "coll")) == 5


def test_an_interrupted_run_resumes_without_fetching_again(server, tmp_path, monkeypatch):
    real_get, calls = Downloader.get, itertools.count(1)

    def interrupted_get(self, url):
        if next(calls) == 6:
            raise KeyboardInterrupt  # as Ctrl-C would, in the middle of the downloads
        return real_get(self, url)

    monkeypatch.setattr(Downloader, "get", interrupted_get)
    catalog = write_catalog(tmp_path / "cat.csv", 12)
    with pytest.raises(KeyboardInterrupt):
        fetch(catalog, tmp_path / "coll", **quick(concurrency=2))
    assert 5 <= server.count() < 12
    report = fetch(catalog, tmp_path / "coll", **quick(concurrency=2))
    assert report.cached + report.fetched + report.already_present == 12 and report.fetched < 12
    assert len(open_collection(tmp_path / "coll")) == 12
    assert set(server.per_seed().values()) == {1}  # every galaxy asked for exactly once over both runs


@pytest.mark.slow
def test_a_killed_process_resumes_from_its_cache(server, tmp_path):
    catalog = write_catalog(tmp_path / "cat.csv", 10)
    server.hold_after(4)  # then every request hangs: the process is killed with requests in flight
    command = [
        sys.executable,
        "-m",
        "galsearch.ui.cli",
        "fetch",
        str(catalog),
        str(tmp_path / "coll"),
        "--quiet",
    ]
    process = subprocess.Popen([*command, "--concurrency", "2", "--size", "32"], env=os.environ.copy())
    try:
        deadline = time.monotonic() + 240
        while server.held == 0 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.held > 0, "the fetch never reached the held requests"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    cached = {seed_of(float(p.name[:11])) for p in (tmp_path / "coll" / "fetched").rglob("*.fits")}
    assert cached  # the kill came after some cutouts were safely in the cache
    server.hold_from = None
    assert cli.main(["fetch", str(catalog), str(tmp_path / "coll"), "--quiet", "--size", "32"]) == 0
    assert len(open_collection(tmp_path / "coll")) == 10
    counts = server.per_seed()
    assert all(counts[seed] == 1 for seed in cached)  # what was in the cache was not asked for again


# ---- the command line and search by a position not in the collection ---------------------------------


def test_cli_fetch_prints_a_summary_and_fails_when_nothing_comes(server, tmp_path, capsys):
    catalog = write_catalog(tmp_path / "cat.csv", 3)
    assert cli.main(["fetch", str(catalog), str(tmp_path / "coll"), "--size", "32", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "3 galaxies: 3 cutouts downloaded from legacy, 0 taken from the cache, 0 failed" in out
    assert "stored 3 galaxies" in out
    ra, _ = positions(3)
    server.always = {seed_of(r): "404" for r in ra}
    done = cli.main(["fetch", str(catalog), str(tmp_path / "c2"), "--quiet", "--retries", "0"])
    assert done == 1 and "no cutout of" in capsys.readouterr().err


def test_search_fetches_a_position_not_in_the_collection(server, tmp_path, capsys):
    catalog = write_catalog(tmp_path / "cat.csv", 12)
    fetch(catalog, tmp_path / "coll", **quick())
    embed(tmp_path / "coll", TINY_ENCODER, device="cpu", progress=False)
    ra, dec = positions(12)
    elsewhere = dec[4] + 0.02  # 72 arcsec from gal04; the server draws the same galaxy there (same RA)
    with pytest.raises(QueryError, match="no galaxy within 5 arcsec"):
        search(tmp_path / "coll", ra=ra[4], dec=elsewhere)
    before = server.count()
    found = search(tmp_path / "coll", ra=ra[4], dec=elsewhere, fetch="legacy", k=3)
    assert server.count() == before + 1
    assert found["id"].iloc[0] == "gal04" and found["similarity"].iloc[0] > 0.999
    assert Path(found.attrs["fetched"]["cutout"]).is_file()
    _, query = server.requests[-1]
    assert (query["size"], query["bands"]) == ("32", "grz")  # as the collection's own cutouts were fetched

    command = ["search", str(tmp_path / "coll"), "--ra", str(ra[4]), "--dec", str(elsewhere), "-k", "2"]
    assert cli.main([*command, "--fetch", "legacy", "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    assert "searched with the legacy cutout there" in err and "gal04" in out
    assert server.count() == before + 1  # the cutout came from the cache this time
    server.always = {seed_of(ra[5]): "blank"}
    with pytest.raises(FetchError, match="blank cutout"):
        search(tmp_path / "coll", ra=ra[5], dec=elsewhere, fetch="legacy")
    with pytest.raises(SystemExit):  # --fetch is for positions
        cli.main(["search", str(tmp_path / "coll"), "--fetch", "legacy", "--id", "gal01"])
