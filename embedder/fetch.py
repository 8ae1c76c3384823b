"""Cutouts of catalogued galaxies downloaded from public survey services, straight into a collection.

Three services, each called with the URL parameters its documentation gives:

- ``legacy``: the DESI Legacy Surveys sky viewer, ``{base}/cutout.fits`` or ``{base}/cutout.jpg`` with
  ``ra``, ``dec``, ``layer``, ``pixscale``, ``size``, ``bands`` (https://www.legacysurvey.org/viewer/urls,
  https://www.legacysurvey.org/svtips/ and the "image stamps" section of
  https://www.legacysurvey.org/dr10/description/). A FITS answer is a (bands, H, W) cube in nanomaggies
  with ``BAND0``, ``BAND1`` ... naming the bands; outside the footprint it is expected to answer zeros.
- ``sdss``: SkyServer's image cutout service, ``{base}/getjpeg`` with ``ra``, ``dec``, ``scale`` (arcsec
  per pixel), ``width``, ``height``: gri colour JPEGs only
  (https://skyserver.sdss.org/dr17/en/help/docs/api.aspx, the ImgCutout service).
- ``panstarrs``: the PS1 image cutout service, ``{base}/ps1filenames.py`` with ``ra``, ``dec``,
  ``filters``, ``type=stack`` lists the stack image of each filter (an empty list outside the footprint,
  Dec < -30), then ``{base}/fitscut.cgi`` with ``red`` (the image's filename), ``ra``, ``dec``, ``size``
  and ``format=fits`` cuts one band in linear flux units, or with ``red``, ``green``, ``blue`` and
  ``format=jpg``, ``output_size`` a colour JPEG; PS1 pixels are 0.25 arcsec
  (https://outerspace.stsci.edu/display/PANSTARRS/PS1+Image+Cutout+Service and
  https://ps1images.stsci.edu/ps1image.html).

Each base URL can be replaced (``base_url=`` or the environment variable ``GALSEARCH_FETCH_BASE_LEGACY``,
``..._SDSS``, ``..._PANSTARRS``), e.g. for a mirror or a test server. Requests go through a bounded pool
of threads (4 by default: these are shared public services), failed ones are retried with exponential
backoff and jitter on 5xx, 429, timeouts and truncated or corrupt answers, never on other 4xx. Every
valid cutout is kept under ``COLLECTION/fetched/`` (written atomically), and a cutout that cannot exist
(outside the footprint, blank, a 4xx answer) leaves a small ``.failed`` note there, so a re-run, or a
run resumed after a kill, asks the service for nothing it has answered already.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import random
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import numpy as np
from astropy.io import fits
from tqdm.auto import tqdm

from .collection import MANIFEST, Collection
from .errors import GalsearchError, IngestError
from .ingest import IngestReport, ingest
from .sources import Item, Positions, read_file, read_positions, valid_radec
from .storage import atomic_write, atomic_write_json, utc_now
from .stretch import Stretch

FETCHED_DIR = "fetched"
FAILURES_FILE = "fetch_failures.csv"
REQUEST_FILE = "request.json"
USER_AGENT = "galsearch/0.1 (galaxy similarity search; survey cutout fetcher)"
WAVELENGTH_ORDER = "ugrizy"
MOSTLY_EMPTY = 0.5  # a FITS cutout with more of its pixels without data (0 or NaN) is refused


@dataclass(frozen=True)
class Survey:
    """A cutout service: where it is, what it serves and its defaults (pixel scale in arcsec per pixel)."""

    name: str
    base_url: str
    formats: tuple[str, ...]
    pixscale: float
    bands: str
    all_bands: str
    layer: str | None = None
    native_pixscale: float | None = None


SURVEYS = {
    "legacy": Survey(
        "legacy", "https://www.legacysurvey.org/viewer", ("fits", "jpeg"), 0.262, "grz", "griz", "ls-dr10"
    ),
    "sdss": Survey("sdss", "https://skyserver.sdss.org/dr17/SkyServerWS/ImgCutout", ("jpeg",), 0.396, "", ""),
    "panstarrs": Survey(
        "panstarrs",
        "https://ps1images.stsci.edu/cgi-bin",
        ("fits", "jpeg"),
        0.25,
        "gri",
        "grizy",
        native_pixscale=0.25,
    ),
}
DEFAULT_SIZE = 128


class FetchError(GalsearchError):
    """A fetch cannot run as asked (unknown survey, bad option), or nothing at all could be fetched."""


@dataclass(frozen=True)
class CutoutRequest:
    """What to ask a survey for: format, side in pixels, pixel scale (arcsec), bands and layer."""

    survey: str
    format: str
    size: int
    pixscale: float
    bands: str
    layer: str | None

    @classmethod
    def make(
        cls,
        survey: str,
        format: str | None = None,
        size: int | None = None,
        pixscale: float | None = None,
        bands: str | None = None,
        layer: str | None = None,
    ) -> CutoutRequest:
        """A checked request, the survey's defaults filling in; FetchError says what is wrong."""
        if survey not in SURVEYS:
            raise FetchError(f"unknown survey {survey!r}; choose one of {', '.join(SURVEYS)}")
        spec = SURVEYS[survey]
        format = format or spec.formats[0]
        if format not in spec.formats:
            raise FetchError(f"{survey} serves {' or '.join(spec.formats)} cutouts, not {format!r}")
        size = DEFAULT_SIZE if size is None else size
        pixscale = spec.pixscale if pixscale is None else pixscale
        if size < 8 or not pixscale > 0:
            raise FetchError(
                f"cutouts need at least 8 pixels and a positive pixel scale, got {size}, {pixscale}"
            )
        if layer is not None and spec.layer is None:
            raise FetchError(f"{survey} has no layers; --layer is for legacy (e.g. ls-dr10, ls-dr9)")
        if bands and not spec.all_bands:
            raise FetchError(f"{survey} serves gri colour JPEGs only; it takes no bands")
        bands = _check_bands(spec, spec.bands if bands is None else bands, format)
        return cls(survey, format, int(size), float(pixscale), bands, layer or spec.layer)

    @property
    def suffix(self) -> str:
        return ".fits" if self.format == "fits" else ".jpg"

    @property
    def tag(self) -> str:
        """A folder name that changes with anything that changes the pixels."""
        parts = [self.layer, self.bands, f"{self.pixscale:g}as", f"{self.size}px", self.format]
        return "_".join(p for p in parts if p)

    @property
    def label(self) -> str:
        """The survey and layer, as stored in the ``survey`` catalog column."""
        return f"{self.survey}:{self.layer}" if self.layer else self.survey

    @property
    def stored_bands(self) -> list[str] | None:
        """The names of the channels its cutouts are stored with: FITS bands red to blue, None for colour
        JPEGs (whose channels are a picture's R, G, B)."""
        return list(reversed(self.bands)) if self.format == "fits" else None

    def __str__(self) -> str:
        bands = f"{self.bands} " if self.bands else ""
        scale = f"{self.size} px at {self.pixscale:g} arcsec/px"
        return f"{self.label} {bands}{self.format.upper()} cutouts of {scale}"


def _check_bands(spec: Survey, bands: str, format: str) -> str:
    """Band letters in wavelength order; FetchError unless the survey has them all (FITS: any number of
    them, each a channel; a Pan-STARRS colour JPEG: 3)."""
    if not spec.all_bands:
        return ""
    letters = bands.replace(",", "").strip()
    unknown = sorted(set(letters) - set(spec.all_bands))
    if unknown or not letters or len(set(letters)) != len(letters):
        raise FetchError(f"{spec.name} bands are letters from {spec.all_bands!r}, each once; got {bands!r}")
    if format == "jpeg" and spec.name == "panstarrs" and len(letters) != 3:
        raise FetchError(f"a Pan-STARRS colour JPEG is made of 3 bands, not {bands!r}")
    return "".join(sorted(letters, key=WAVELENGTH_ORDER.index))


# ---- HTTP with retries -----------------------------------------------------------------------------


class CutoutFailure(Exception):
    """Why one cutout could not be had; ``permanent`` ones are remembered so they are not asked for again."""

    def __init__(self, reason: str, detail: str, permanent: bool, retry_after: float | None = None):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.permanent, self.retry_after = reason, detail, permanent, retry_after


class Downloader:
    """GET requests through one pooled HTTP client, with bounded retries.

    5xx, 429 and 408 answers, timeouts, dropped connections and bodies shorter than announced are retried
    up to ``retries`` times after ``backoff * 2**attempt`` seconds (times a random factor in [0.5, 1],
    at most 60 s, or the server's Retry-After); any other 4xx fails at once. After :meth:`stop` no new
    attempt starts, so an interrupted run ends within one request's timeout.
    """

    def __init__(self, concurrency: int = 4, retries: int = 3, timeout: float = 60.0, backoff: float = 1.0):
        if concurrency < 1 or retries < 0 or not timeout > 0 or backoff < 0:
            raise FetchError(
                f"need concurrency >= 1, retries >= 0, timeout > 0 and backoff >= 0; got {concurrency}, "
                f"{retries}, {timeout}, {backoff}"
            )
        self.concurrency, self.retries, self.backoff = concurrency, retries, backoff
        self.stopped = threading.Event()
        self.client = httpx.Client(
            timeout=timeout,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            headers={"User-Agent": USER_AGENT},
            follow_redirects=True,
        )

    def stop(self) -> None:
        self.stopped.set()

    def close(self) -> None:
        self.client.close()

    def get(self, url: str) -> bytes:
        """The body of one GET; CutoutFailure (transient or permanent) says why there is none."""
        try:
            response = self.client.get(url)
            body = response.content
        except httpx.TimeoutException as exc:
            raise CutoutFailure("timeout", f"no answer in time ({type(exc).__name__})", False) from exc
        except httpx.RemoteProtocolError as exc:
            raise CutoutFailure("truncated answer", str(exc), False) from exc
        except httpx.TransportError as exc:
            raise CutoutFailure("network error", f"{type(exc).__name__}: {exc}", False) from exc
        status = response.status_code
        if status >= 400:
            text = (
                " ".join(response.text[:200].split())
                if "text" in response.headers.get("content-type", "")
                else ""
            )
            detail = f"{status} {response.reason_phrase}" + (f": {text}" if text else "")
            transient = status >= 500 or status in (408, 429)
            raise CutoutFailure(f"HTTP {status}", detail, not transient, _retry_after(response))
        return body

    def retrying(self, attempt: Callable[[], Any]) -> Any:
        """``attempt()``, called again after a transient CutoutFailure until the retries are used up."""
        tries = 0
        while True:
            tries += 1
            if self.stopped.is_set():
                raise CutoutFailure("interrupted", "the run stopped before this cutout came", False)
            try:
                return attempt()
            except CutoutFailure as failure:
                if failure.permanent or tries > self.retries:
                    failure.detail += f" (after {tries} attempts)" if tries > 1 else ""
                    raise
                delay = min(60.0, self.backoff * 2 ** (tries - 1)) * random.uniform(0.5, 1.0)
                self.stopped.wait(delay if failure.retry_after is None else failure.retry_after)


def _retry_after(response: httpx.Response) -> float | None:
    """The Retry-After of a 429/503 answer in seconds (at most 60), when given as a number."""
    value = response.headers.get("retry-after", "")
    return min(60.0, float(value)) if value.isdigit() else None


# ---- one cutout --------------------------------------------------------------------------------------


def _base_url(survey: str, base_url: str | None) -> str:
    """The service's base URL: ``base_url``, else $GALSEARCH_FETCH_BASE_<SURVEY>, else the public one."""
    url = base_url or os.environ.get(f"GALSEARCH_FETCH_BASE_{survey.upper()}") or SURVEYS[survey].base_url
    return url.rstrip("/")


def _position_params(ra: float, dec: float) -> dict[str, str]:
    return {"ra": f"{ra:.7f}", "dec": f"{dec:.7f}"}


def cutout_url(request: CutoutRequest, ra: float, dec: float, base_url: str | None = None) -> str:
    """The URL of one cutout (for Pan-STARRS, of its image list: the cutouts need the image names)."""
    base = _base_url(request.survey, base_url)
    where = _position_params(ra, dec)
    if request.survey == "legacy":
        ext = "fits" if request.format == "fits" else "jpg"
        params = where | {
            "layer": request.layer,
            "pixscale": f"{request.pixscale:g}",
            "size": str(request.size),
            "bands": request.bands,
        }
        return f"{base}/cutout.{ext}?{urlencode(params)}"
    if request.survey == "sdss":
        side = str(request.size)
        params = where | {"scale": f"{request.pixscale:g}", "width": side, "height": side}
        return f"{base}/getjpeg?{urlencode(params)}"
    return f"{base}/ps1filenames.py?{urlencode(where | {'filters': request.bands, 'type': 'stack'})}"


class _Fetcher:
    """Fetches, checks and caches the cutouts of one request into one folder."""

    def __init__(self, request: CutoutRequest, folder: Path, downloader: Downloader, base_url: str | None):
        self.request, self.folder, self.downloader = request, folder, downloader
        self.base_url = base_url
        folder.mkdir(parents=True, exist_ok=True)

    def path(self, ra: float, dec: float) -> Path:
        """The cache file of a position: in a subfolder per degree of RA, named by RA and Dec."""
        return self.folder / f"{int(ra) % 360:03d}" / f"{ra:011.7f}{dec:+011.7f}{self.request.suffix}"

    def get(self, ra: float, dec: float, retry_failed: bool = False) -> tuple[str, Item]:
        """``("cached" | "fetched", item)`` of one position; CutoutFailure says why there is none."""
        path = self.path(ra, dec)
        note = path.with_name(path.name + ".failed")
        if path.is_file():
            item = read_file(path, path.name)
            if item.error is None:
                return "cached", item
            path.unlink()  # damaged since it was written: fetch it again
        if note.is_file() and not retry_failed:
            known = json.loads(note.read_text())
            raise CutoutFailure(known["reason"], known["detail"] + " (remembered from an earlier run)", True)
        note.unlink(missing_ok=True)
        path.parent.mkdir(exist_ok=True)
        try:
            if self.request.survey != "panstarrs":
                item = self._download(cutout_url(self.request, ra, dec, self.base_url), path)
            elif self.request.format == "jpeg":
                files = self._ps1_files(ra, dec)
                item = self._download(self._ps1_url(ra, dec, [files[b] for b in reversed(files)]), path)
            else:
                files = self._ps1_files(ra, dec)
                bands = list(files)
                image = self._ps1_planes(ra, dec, files)
                item = _write_checked(path, lambda f: _fits_cube(image, bands).writeto(f), self.request)
        except CutoutFailure as failure:
            if failure.permanent:
                atomic_write_json(
                    note, {"reason": failure.reason, "detail": failure.detail, "time": utc_now()}
                )
            raise
        return "fetched", item

    def _download(self, url: str, path: Path) -> Item:
        """The cutout at ``url``, stored at ``path`` once checked; retried while failures are transient."""
        return self.downloader.retrying(lambda: _write_checked(path, self.downloader.get(url), self.request))

    def _ps1_files(self, ra: float, dec: float) -> dict[str, str]:
        """Band -> Pan-STARRS stack image name of each requested band at a position (blue to red)."""
        listing = cutout_url(self.request, ra, dec, self.base_url)
        files = self.downloader.retrying(lambda: _ps1_filenames(self.downloader.get(listing)))
        if not files:
            raise CutoutFailure(
                "outside footprint", "Pan-STARRS has no stack image here (it covers Dec > -30)", True
            )
        missing = [b for b in self.request.bands if b not in files]
        if missing:
            raise CutoutFailure(
                "missing band", f"no Pan-STARRS stack image in {','.join(missing)} here", True
            )
        return {b: files[b] for b in self.request.bands}

    def _ps1_url(self, ra: float, dec: float, images: list[str]) -> str:
        """The fitscut URL of one Pan-STARRS image (FITS), or of three as red, green, blue (colour JPEG)."""
        native = round(self.request.size * self.request.pixscale / SURVEYS["panstarrs"].native_pixscale)
        params = _position_params(ra, dec) | {"size": str(native)}
        params |= dict(zip(("red", "green", "blue"), images, strict=False))
        if self.request.format == "jpeg":
            params |= {"format": "jpg", "output_size": str(self.request.size)}
        else:
            params |= {"format": "fits"}
        return f"{_base_url('panstarrs', self.base_url)}/fitscut.cgi?{urlencode(params)}"

    def _ps1_planes(self, ra: float, dec: float, files: dict[str, str]) -> np.ndarray:
        """The Pan-STARRS bands' pixels at a position, (H, W) or (H, W, C): one fitscut request per band."""
        planes = []
        with tempfile.TemporaryDirectory(dir=self.folder) as scratch:
            for band, image in files.items():
                planes.append(
                    self._download(self._ps1_url(ra, dec, [image]), Path(scratch) / f"{band}.fits").image
                )
        if len({p.shape for p in planes}) != 1:
            shapes = sorted({p.shape for p in planes})
            raise CutoutFailure("corrupt file", f"the bands' cutouts differ in shape: {shapes}", False)
        return planes[0] if len(planes) == 1 else np.stack(planes, axis=-1)


def _ps1_filenames(body: bytes) -> dict[str, str]:
    """Filter -> stack image filename from a ps1filenames.py answer (a whitespace-separated table)."""
    lines = [line.split() for line in body.decode(errors="replace").splitlines() if line.strip()]
    if not lines or "filename" not in lines[0] or "filter" not in lines[0]:
        raise CutoutFailure(
            "corrupt file", "the Pan-STARRS image list is not a table with filter, filename", False
        )
    header = lines[0]
    at_filter, at_name = header.index("filter"), header.index("filename")
    return {row[at_filter]: row[at_name] for row in lines[1:] if len(row) == len(header)}


def _fits_cube(image: np.ndarray, bands: list[str]) -> fits.HDUList:
    """A FITS file of one band, or a (bands, H, W) cube with BAND0, BAND1 ... as the Legacy Surveys write."""
    data = image if image.ndim == 2 else np.moveaxis(image, -1, 0)
    header = fits.Header()
    for i, band in enumerate(bands):
        header[f"BAND{i}"] = band
    if len(bands) == 1:
        header["FILTER"] = bands[0]
    return fits.HDUList([fits.PrimaryHDU(np.ascontiguousarray(data, dtype=np.float32), header)])


def _write_checked(path: Path, content: bytes | Callable[[Any], Any], request: CutoutRequest) -> Item:
    """Write a cutout (bytes, or a writer of a file object) atomically, read it back and keep it only if it
    is readable and not blank; else CutoutFailure."""
    atomic_write(path, content if callable(content) else lambda f: f.write(content))
    item = read_file(path, path.name)
    if item.error is not None:
        path.unlink()
        kind = "truncated file" if "truncated" in item.error else "corrupt file"
        raise CutoutFailure(kind, item.error, False)
    reason = _emptiness(item.image, item.columns.get("bands"), request.format == "fits")
    if reason is not None:
        path.unlink()
        raise CutoutFailure(*reason)
    return item


def _emptiness(image: np.ndarray, bands: str | None, flux: bool) -> tuple[str, str, bool] | None:
    """Why a cutout holds no galaxy (reason, detail, permanent), or None when it looks usable.

    A constant image is blank (the services answer zeros, or one grey, outside their footprint). In
    FITS fluxes, exact zeros and NaN are pixels without data: a band with none, or a cutout mostly
    without, is on the footprint's edge. JPEG sky can be black, so only the constant test applies to it.
    """
    pixels = np.asarray(image, dtype=np.float64)
    finite = pixels[np.isfinite(pixels)]
    if not finite.size or finite.min() == finite.max():
        value = f"{finite[0]:g}" if finite.size else "NaN"
        return "blank cutout", f"every pixel is {value}: outside the survey footprint?", True
    if not flux:
        return None
    empty = ~np.isfinite(pixels) | (pixels == 0)
    planes = empty.reshape(-1, 1) if pixels.ndim == 2 else empty.reshape(-1, pixels.shape[-1])
    names = bands.split(",") if bands else [str(c) for c in range(planes.shape[1])]
    dead = [name for name, column in zip(names, planes.T, strict=False) if column.all()]
    if dead:
        return "partial coverage", f"no data in band {','.join(dead)}", True
    fraction = planes.all(axis=1).mean()
    if fraction > MOSTLY_EMPTY:
        return "partial coverage", f"{fraction:.0%} of the cutout has no data (edge of the footprint)", True
    return None


def _red_to_blue(item: Item) -> tuple[np.ndarray, dict[str, Any], list[str] | None]:
    """Pixels with their channels red to blue, the header's columns and the channels' band names.

    FITS bands come blue to red (g, r, z), so they are reversed: z comes first (and shows as red), g last,
    as in the services' own colour JPEGs.
    """
    image, columns, bands = item.image, dict(item.columns), item.bands
    columns.pop("ra", None), columns.pop("dec", None)  # the catalogue's position is the one kept
    if image.ndim == 3 and "bands" in columns:
        image = image[..., ::-1]
        columns["bands"] = ",".join(reversed(columns["bands"].split(",")))
        bands = None if bands is None else bands[::-1]
    return image, columns, bands


# ---- a catalogue into a collection -------------------------------------------------------------------


@dataclass
class Failure:
    """A galaxy (``row`` of the catalogue, from 0) whose cutout could not be had, and why."""

    id: str
    row: int
    ra: float
    dec: float
    reason: str
    detail: str
    url: str


@dataclass
class FetchReport:
    """What one fetch run downloaded, took from the cache, could not get, and what ingest stored."""

    collection: Path
    request: CutoutRequest
    galaxies: int = 0
    already_present: int = 0
    fetched: int = 0
    cached: int = 0
    failed: list[Failure] = field(default_factory=list)
    ingest: IngestReport | None = None

    def summary(self) -> str:
        """A few human-readable lines: counts, what ingest stored, then the failures (first 50)."""
        lines = [
            f"{self.galaxies} galaxies: {self.fetched} cutouts downloaded from {self.request.survey}, "
            f"{self.cached} taken from the cache, {len(self.failed)} failed"
            + (f", {self.already_present} already in the collection" if self.already_present else "")
        ]
        if self.ingest is not None:
            lines.append(self.ingest.summary())
        if self.failed:
            counts: dict[str, int] = {}
            for f in self.failed:
                counts[f.reason] = counts.get(f.reason, 0) + 1
            lines.append("failed: " + ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items())))
            lines += [
                f"  {f.id} (ra {f.ra:.6f}, dec {f.dec:+.6f}): {f.reason}: {f.detail}"
                for f in self.failed[:50]
            ]
            if len(self.failed) > 50:
                lines.append(f"  ... and {len(self.failed) - 50} more")
            lines.append(f"every failure with its reason and URL: {self.collection / FAILURES_FILE}")
        return "\n".join(lines)


class _Cutouts:
    """The fetched cutouts of a catalogue as Items for ingest, downloaded by a bounded pool of threads."""

    def __init__(
        self,
        positions: Positions,
        jobs: dict[tuple[float, float], list[tuple[int, str]]],
        fetcher: _Fetcher,
        report: FetchReport,
        source: str,
        retry_failed: bool,
        progress: bool,
    ):
        self.positions, self.jobs, self.fetcher, self.report = positions, jobs, fetcher, report
        self.source, self.retry_failed, self.progress = source, retry_failed, progress

    def __str__(self) -> str:
        return f"{self.fetcher.request} of {self.source}"

    def __iter__(self) -> Iterator[Item]:
        keys = iter(self.jobs)
        total = sum(map(len, self.jobs.values()))
        bar = tqdm(
            total=total, desc=f"fetch {self.fetcher.request.survey}", unit="galaxy", disable=not self.progress
        )
        running: dict[Future, tuple[float, float]] = {}
        with ThreadPoolExecutor(self.fetcher.downloader.concurrency, thread_name_prefix="fetch") as pool:

            def submit() -> None:
                key = next(keys, None)
                if key is not None:
                    running[pool.submit(self.fetcher.get, *key, self.retry_failed)] = key

            try:
                for _ in range(2 * self.fetcher.downloader.concurrency):
                    submit()
                while running:
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        key = running.pop(future)
                        submit()
                        yield from self._items(key, future)
                        bar.update(len(self.jobs[key]))
                        counts = self.report.fetched, self.report.cached, len(self.report.failed)
                        bar.set_postfix(dict(zip(("fetched", "cached", "failed"), counts, strict=True)))
            finally:
                self.fetcher.downloader.stop()  # when interrupted: running requests end, no new one starts
                for future in running:
                    future.cancel()
                bar.close()

    def _items(self, key: tuple[float, float], future: Future) -> Iterator[Item]:
        """The Items of the catalogue rows at one position, or their failures recorded in the report."""
        rows = self.jobs[key]
        try:
            how, item = future.result()
        except CutoutFailure as failure:
            url = cutout_url(self.fetcher.request, *key, self.fetcher.base_url)
            self.report.failed += [
                Failure(galaxy, row, *key, failure.reason, failure.detail, url) for row, galaxy in rows
            ]
            return
        if how == "cached":
            self.report.cached += len(rows)
        else:
            self.report.fetched += len(rows)
        image, header, bands = _red_to_blue(item)
        provenance = {
            "survey": self.fetcher.request.label,
            "cutout": self.fetcher.path(*key).relative_to(self.report.collection).as_posix(),
        }
        for row, galaxy in rows:
            columns = self.positions.row(row) | header | provenance
            yield Item(galaxy, f"{self.source}[{row}]", image, columns, bands=bands)


def fetch(
    catalog: str | Path,
    collection: str | Path,
    survey: str = "legacy",
    *,
    format: str | None = None,
    size: int | None = None,
    pixscale: float | None = None,
    bands: str | None = None,
    layer: str | None = None,
    base_url: str | None = None,
    concurrency: int = 4,
    retries: int = 3,
    timeout: float = 60.0,
    backoff: float = 1.0,
    retry_failed: bool = False,
    stretch: Stretch | None = None,
    zero_points: dict[str, float] | None = None,
    progress: bool = True,
) -> FetchReport:
    """Download the cutout of every galaxy of ``catalog`` from ``survey`` and ingest them into ``collection``.

    ``catalog`` is a FITS/CSV/VOTable table with RA/Dec columns; every other column is kept, and the id
    comes from an id column (id, objid, object_id, source_id, name) or else is the IAU-style name of the
    position (:func:`iau_name`). Cutouts are ``size`` pixels of ``pixscale`` arcsec (the survey's defaults
    when None) in ``bands`` (letters, any number of the survey's, e.g. ``"griz"``; FITS bands are stored
    red to blue, ``z, i, r, g``, and recorded by name). Galaxies already in the collection are skipped,
    cutouts in the cache are not fetched again, and galaxies whose cutout cannot be had are listed with
    the reason in the report and in ``COLLECTION/fetch_failures.csv``; ``retry_failed`` asks again for
    those the services answered for good (a blank cutout, a 404). A new collection stores ``size`` pixel
    images made with ``stretch`` (default: the colour-keeping Lupton stretch) after ``zero_points``
    (band letter -> flux factor); an existing one whose recorded bands differ from the request's is
    refused before any download.
    """
    request = CutoutRequest.make(survey, format, size, pixscale, bands, layer)
    collection, catalog = Path(collection), Path(catalog)
    positions = read_positions(catalog)
    galaxies = [
        positions.ids[i] or (iau_name(ra, dec) if valid_radec(ra, dec) else f"{catalog.stem}-{i}")
        for i, (ra, dec) in enumerate(zip(positions.ra, positions.dec, strict=True))
    ]
    present, stored = np.zeros(len(galaxies), dtype=bool), 0
    if (collection / MANIFEST).exists():
        coll = Collection(collection)
        _check_collection_bands(coll, request)
        present, stored = coll.find_rows(galaxies) >= 0, len(coll)  # the id index: no pass over the catalog
    report = FetchReport(collection, request, galaxies=len(positions))
    jobs: dict[tuple[float, float], list[tuple[int, str]]] = {}
    for i, (ra, dec) in enumerate(zip(positions.ra, positions.dec, strict=True)):
        valid = bool(valid_radec(ra, dec))
        galaxy = galaxies[i]
        if present[i]:
            report.already_present += 1
        elif not valid:
            report.failed.append(
                Failure(galaxy, i, ra, dec, "invalid position", "RA/Dec missing or out of range", "")
            )
        else:
            jobs.setdefault(_key(ra, dec), []).append((i, galaxy))
    folder = collection / FETCHED_DIR / request.survey
    downloader = Downloader(concurrency, retries, timeout, backoff)
    try:
        fetcher = _Fetcher(request, folder / request.tag, downloader, base_url)
        atomic_write_json(folder / REQUEST_FILE, asdict(request))
        cutouts = _Cutouts(positions, jobs, fetcher, report, catalog.name, retry_failed, progress)
        try:
            report.ingest = ingest(
                cutouts,
                collection,
                size=request.size,
                stretch=stretch,
                zero_points=zero_points,
                progress=False,
            )
        except IngestError:
            if report.fetched or report.cached:
                raise  # cutouts were had but ingest refused them all: its reasons say why
    finally:
        downloader.close()
        report.failed.sort(key=lambda f: f.row)
        _write_failures(collection / FAILURES_FILE, report.failed)
    if report.ingest is None and not stored:
        reasons = "; ".join(sorted({f"{f.reason}: {f.detail}" for f in report.failed})[:5])
        raise FetchError(
            f"no cutout of {catalog} could be had from {survey}: {reasons or 'the catalogue is empty'}"
        )
    return report


def _check_collection_bands(coll: Collection, request: CutoutRequest) -> None:
    """FetchError if ``coll`` records band names other than those ``request``'s cutouts are stored with."""
    recorded = coll.preprocessing.get("bands")
    wanted = request.stored_bands
    if recorded and wanted != recorded:
        asked = ",".join(wanted) if wanted else f"unnamed colour {request.format.upper()} channels"
        raise FetchError(
            f"{coll.path} holds bands {','.join(recorded)} (red to blue), but this fetch brings {asked}: a "
            f"collection keeps one set of bands (ask for --bands {''.join(reversed(recorded))}, or fetch "
            "into another collection)"
        )


def _key(ra: float, dec: float) -> tuple[float, float]:
    """A position rounded to 1e-7 degrees (36 micro-arcsec), RA in [0, 360): one cache file per key."""
    return round(float(ra) % 360, 7) % 360, round(float(dec), 7)


def _write_failures(path: Path, failures: list[Failure]) -> None:
    """The run's failures as CSV (id, row, ra, dec, reason, detail, url); no file when there are none."""
    if not failures:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=[f.name for f in fields(Failure)])
    writer.writeheader()
    writer.writerows(asdict(f) for f in failures)
    atomic_write(path, lambda f: f.write(text.getvalue().encode()))


# ---- one position, for a query -----------------------------------------------------------------------


def fetch_position(
    collection: Collection,
    survey: str,
    ra: float,
    dec: float,
    *,
    base_url: str | None = None,
    retries: int = 3,
    timeout: float = 60.0,
    backoff: float = 1.0,
) -> tuple[np.ndarray, Path]:
    """The pixels (channels red to blue) of the cutout at (``ra``, ``dec``) and its file in the cache.

    The request is the one the collection's last fetch from ``survey`` made (same scale, bands, format),
    or the survey's defaults; the cutout is cached under the collection like any fetched one.
    """
    folder = collection.path / FETCHED_DIR / survey
    saved = folder / REQUEST_FILE
    request = (
        CutoutRequest.make(**json.loads(saved.read_text())) if saved.is_file() else CutoutRequest.make(survey)
    )
    if not valid_radec(ra, dec):
        raise FetchError(f"invalid position ra={ra}, dec={dec}")
    key = _key(ra, dec)
    downloader = Downloader(1, retries, timeout, backoff)
    try:
        fetcher = _Fetcher(request, folder / request.tag, downloader, base_url)
        _, item = fetcher.get(*key)
    except CutoutFailure as failure:
        url = cutout_url(request, *key, base_url)
        raise FetchError(
            f"no {survey} cutout at ra={ra}, dec={dec}: {failure.reason}: {failure.detail} ({url})"
        ) from None
    finally:
        downloader.close()
    return _red_to_blue(item)[0], fetcher.path(*key)


def iau_name(ra: float, dec: float) -> str:
    """The IAU-style name ``JHHMMSS.ss+DDMMSS.s`` of a position in degrees, truncated (not rounded) as the IAU
    asks, so that a name never points to the next second."""
    ra_cs = math.floor((float(ra) % 360.0) * 24000 + 1e-6)  # hundredths of a second of time
    dec_ds = math.floor(abs(float(dec)) * 36000 + 1e-6)  # tenths of an arcsecond
    sign = "-" if math.copysign(1.0, float(dec)) < 0 else "+"
    ra_part = f"{ra_cs // 360000:02d}{ra_cs // 6000 % 60:02d}{ra_cs % 6000 // 100:02d}.{ra_cs % 100:02d}"
    dec_part = f"{dec_ds // 36000:02d}{dec_ds // 600 % 60:02d}{dec_ds % 600 // 10:02d}.{dec_ds % 10}"
    return f"J{ra_part}{sign}{dec_part}"
