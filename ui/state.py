"""What the web app shares between requests: the open collection, discovery loops, download files."""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
import weakref
from collections import OrderedDict
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
from pandas.io.formats.style import Styler

from galsearch.anomaly import Discovery
from galsearch.embedder import Collection, open_collection
from galsearch.embedder.collection import MANIFEST

MAX_LOOPS = 64  # discovery loops kept in memory (each ~30 bytes per candidate galaxy; features and GP basis
# are memory maps they share); older ones reload from the store when used again
DOWNLOAD_AGE_S = 3600  # result files older than this are deleted (Gradio serves its own copy)
# Table downloads offered in the page: the name shown -> (index.write_results format, file suffix).
DOWNLOADS = {"CSV": ("csv", ".csv"), "FITS": ("fits", ".fits"), "VOTable": ("votable", ".xml")}
DECIMALS = {"similarity": 3, "distance": 3, "ra": 5, "dec": 5}  # in tables; 1e-5 degree = 0.036"


def json_records(frame: pd.DataFrame) -> list[dict]:
    """A table's rows as JSON-ready dicts for the API's answers: numbers to 15 significant digits, a
    missing value as None."""
    return json.loads(frame.to_json(orient="records", double_precision=15))


def ids_in(given: str | list[str] | None) -> list[str]:
    """The galaxy ids typed in a box (separated by commas or new lines), or held in a list."""
    if isinstance(given, list):
        return [str(galaxy) for galaxy in given]
    return [t.strip() for t in (given or "").replace("\n", ",").split(",") if t.strip()]


def user_of(request: gr.Request | None) -> str:
    """Who makes a request: the logged-in user, or "web" when the app has no login."""
    return (request.username if request is not None else None) or "web"


def readable(frame: pd.DataFrame, decimals: dict[str, int] | None = None) -> Styler:
    """``frame`` for a page's table: floats shown rounded (DECIMALS, ``decimals``, else whole numbers
    for whole columns, 3 decimals or 3 significant digits), the values underneath kept whole."""
    decimals = {**DECIMALS, **(decimals or {})}
    formats = {}
    for column in frame.select_dtypes("floating").columns:
        values = frame[column].to_numpy(dtype=float, na_value=np.nan)
        finite = values[np.isfinite(values)]
        if column in decimals:
            formats[column] = f"{{:.{decimals[column]}f}}"
        elif (finite == np.round(finite)).all():
            formats[column] = "{:.0f}"
        else:
            formats[column] = _three_decimals
    return frame.style.format(formats, na_rep="")


def _three_decimals(value: float) -> str:
    return f"{value:.3f}" if value == 0 or abs(value) >= 0.01 else f"{value:.3g}"


class AppState:
    """The collection behind the app, reopened when another command (or tab) commits a change to it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._building = threading.Lock()
        self._collection: Collection | None = None
        self._version: int | None = None
        self._hunts: OrderedDict[tuple[str, str], tuple[Discovery, threading.Lock]] = OrderedDict()
        self._downloads = Path(tempfile.mkdtemp(prefix="galsearch-downloads-"))
        weakref.finalize(self, shutil.rmtree, self._downloads, ignore_errors=True)  # at exit at the latest
        self.collection()

    def collection(self) -> Collection:
        """The collection as last committed."""
        version = (self.path / MANIFEST).stat().st_mtime_ns
        with self._lock:
            if self._collection is None or version != self._version:
                self._collection, self._version = open_collection(self.path), version
            return self._collection

    def captions(self, rows: np.ndarray, extras: list[str] | None = None) -> list[str]:
        """``id · class`` (when the catalog has classes) plus the extra text, for each catalog row."""
        coll = self.collection()
        records = coll.catalog_rows(rows, [c for c in ("id", "class_name") if c in coll.columns])
        labels = records["class_name"].map(" · {}".format) if "class_name" in records else [""] * len(rows)
        extras = extras or [""] * len(rows)
        return [f"{i}{label}{e}" for i, label, e in zip(records["id"], labels, extras, strict=True)]

    def caption(self, row: int, extra: str = "") -> str:
        """``id · class`` (when the catalog has classes) plus ``extra``."""
        return self.captions(np.array([row]), [extra])[0]

    def gallery(self, rows: np.ndarray, extras: list[str] | None = None) -> list[tuple[np.ndarray, str]]:
        """Gallery items (picture in the collection's display bands, caption) for catalog rows."""
        pictures = self.collection().rgb(np.asarray(rows, dtype=np.int64))
        captions = self.captions(rows, extras)
        return list(zip(pictures, captions, strict=True))

    def discovery(self, session: str, user: str) -> tuple[Discovery, threading.Lock]:
        """The active-learning loop of ``session`` for ``user`` with a lock to use it under; the last
        MAX_LOOPS used are kept, so that strangers naming new sessions cannot fill the memory."""
        key = (session, user)
        with self._lock:
            found = self._hunts.get(key)
        if found is None:  # built outside the lock (other users' requests go on meanwhile), one at a time:
            with self._building:  # the first of a collection computes and stores its anomaly scores
                found = (Discovery(self.path, session, user=user), threading.Lock())
        with self._lock:  # kept, marked as used and the oldest evicted at once: it cannot go in between
            found = self._hunts.setdefault(key, found)
            self._hunts.move_to_end(key)
            while len(self._hunts) > MAX_LOOPS:
                self._hunts.popitem(last=False)  # its ratings are in the store; it reloads when used
        return found

    def download(self, name: str) -> Path:
        """A path ``name`` in a new folder for a file the page offers for download; folders older than
        DOWNLOAD_AGE_S are deleted first, so that repeated requests cannot fill the disk."""
        cutoff = time.time() - DOWNLOAD_AGE_S
        for old in self._downloads.iterdir():
            if old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
        return Path(tempfile.mkdtemp(dir=self._downloads)) / name

    def shown_copy(self, path: Path) -> str | None:
        """A copy of a collection's file (a plot) for the page to show, or None when there is none: Gradio
        serves files only from the temporary and working directories, and a collection may be anywhere."""
        return str(shutil.copyfile(path, self.download(path.name))) if path.is_file() else None
