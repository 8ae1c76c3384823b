"""A 2-D map of a collection: a UMAP of its embeddings, cached in the collection, drawn as a picture.

The coordinates are computed once and kept beside the embeddings::

    COLLECTION/map/umap.f32    float32 array (embedded, 2), row i = catalog row i
    COLLECTION/map/umap.json   count, dim, encoder identity (weights_sha256, tta, ...), UMAP parameters,
                               fit sample size, when computed and in how many seconds; the commit point,
                               written after umap.f32

They are reused while the embedded count, the encoder and the parameters match, and recomputed otherwise.
The picture (``galsearch map --png``) keeps its axes' pixel box, so a pixel of it maps back to map
coordinates and galaxies exactly (``MapPicture``); the web app's interactive map is index.mapview.
"""

from __future__ import annotations

import functools
import io
import json
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize, to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from PIL import Image
from tqdm.auto import tqdm

from galsearch.embedder.collection import Collection
from galsearch.embedder.embed import IDENTITY_KEYS, same_encoder
from galsearch.embedder.errors import CollectionError
from galsearch.embedder.storage import atomic_write, atomic_write_json, utc_now

MAP_DIR = "map"
COORDS_FILE = "umap.f32"
INFO_FILE = "umap.json"
FORMAT = "galsearch-map"
UMAP_PARAMS = {"n_neighbors": 15, "min_dist": 0.1, "metric": "cosine", "random_state": 0}
FIT_SAMPLE = 50_000  # past this many galaxies UMAP is fitted on a seeded sample and the rest transformed
CHUNK_ROWS = 50_000  # rows transformed at a time (past FIT_SAMPLE)
SEED = 0
# What the first map costs on a 2-core CPU (umap_seconds), from _compute timed in fresh processes on demo
# embeddings (256-d) resampled with jitter, on a quiet CPU, with UMAP's kernels in numba's cache
# (2026-12-08): 2.0 s for 64 galaxies (mostly importing umap), 5.6 s for 3,000, 10.1 s for 10,000, 14.8 s
# for 20,000, 53.5 s for 50,000 (their exact neighbours 10 s) and 147 s for 60,000 (UMAP's own neighbour
# search fits 50,000, about 70 s, and 10,000 are transformed). A new install compiles for about 25 s more
# at its first map (compile_umap).
FIRST_MAP_START_S = 2.0
FIT_S_PER_GALAXY = 0.001
SAMPLE_FIT_S = 70.0
TRANSFORM_S_PER_GALAXY = 0.0075

DPI = 100
MAP_AXES = (0.05, 0.05, 0.72, 0.88)  # left, bottom, width, height of the map in the figure (fractions)
PLAIN_MAP_AXES = (0.05, 0.05, 0.9, 0.88)  # the same without a legend or colour bar beside it
COLORBAR_AXES = (0.79, 0.05, 0.02, 0.88)  # its own axes, so that the map stays where MAP_AXES puts it
CATEGORICAL_MAX = 20  # at most this many distinct integers are categories; more strings are lumped
PLAIN_COLOUR = "tab:blue"
MISSING_COLOUR = (0.8, 0.8, 0.8, 1.0)
OTHER_COLOUR = (0.45, 0.45, 0.45, 1.0)
HIGHLIGHT_EDGE = "black"
STAMP_PX = (16, 80)  # smallest and largest side of a thumbnail in pixels


# ---- coordinates ---------------------------------------------------------------------------------


def umap_coordinates(collection: Collection, progress: bool = False) -> np.ndarray:
    """UMAP coordinates (embedded galaxies, 2) as float32, computed once and cached in the collection."""
    n = collection.counts["embedded"]
    if n == 0:
        raise CollectionError(
            f"{collection.path} has no embeddings to map: run `galsearch embed {collection.path}` first"
        )
    identity = _cache_identity(collection)
    cached = _read_cache(collection.path / MAP_DIR, identity)
    if cached is not None:
        return cached
    started = time.perf_counter()
    coords = _compute(collection.embeddings, progress)
    _write_cache(collection.path / MAP_DIR, coords, identity, time.perf_counter() - started)
    return coords


def has_map(collection: Collection) -> bool:
    """Whether the UMAP coordinates of the collection are cached, so that a map is drawn without a UMAP."""
    embedded = collection.counts["embedded"] > 0
    return embedded and _cache_matches(collection.path / MAP_DIR, _cache_identity(collection))


def umap_seconds(n: int) -> float:
    """About how many seconds the first map of ``n`` embeddings takes on a 2-core CPU (UMAP included)."""
    if n <= FIT_SAMPLE:
        return FIRST_MAP_START_S + n * FIT_S_PER_GALAXY
    return FIRST_MAP_START_S + SAMPLE_FIT_S + (n - FIT_SAMPLE) * TRANSFORM_S_PER_GALAXY


def _cache_identity(collection: Collection) -> dict:
    """What the cached coordinates must have been made from to be reused."""
    encoder = collection.encoder or {}
    return {
        "count": collection.counts["embedded"],
        "dim": collection.embedding_dim,
        "encoder": {key: encoder.get(key) for key in IDENTITY_KEYS},
        "params": UMAP_PARAMS,
        "fit_sample": FIT_SAMPLE,
    }


def _cache_matches(folder: Path, identity: dict) -> bool:
    """Whether the coordinates cached in ``folder`` were made from ``identity`` (False for damaged files)."""
    try:
        info = json.loads((folder / INFO_FILE).read_text())
        size = (folder / COORDS_FILE).stat().st_size
    except (OSError, ValueError):
        return False
    return (
        isinstance(info, dict)
        and all(info.get(key) == identity[key] for key in ("count", "dim", "params", "fit_sample"))
        and same_encoder(info.get("encoder") or {}, identity["encoder"])
        and size == identity["count"] * 2 * 4
    )


def _read_cache(folder: Path, identity: dict) -> np.ndarray | None:
    """The cached coordinates if they were made from ``identity``, else None (also for damaged files)."""
    if not _cache_matches(folder, identity):
        return None
    return np.fromfile(folder / COORDS_FILE, dtype=np.float32).reshape(identity["count"], 2)


def _write_cache(folder: Path, coords: np.ndarray, identity: dict, seconds: float) -> None:
    """Write the coordinates, then the record that commits them."""
    folder.mkdir(exist_ok=True)
    atomic_write(folder / COORDS_FILE, lambda f: f.write(np.ascontiguousarray(coords).tobytes()))
    record = {"format": FORMAT, **identity, "computed": utc_now(), "seconds": round(seconds, 2)}
    atomic_write_json(folder / INFO_FILE, record)


def _compute(embeddings: np.ndarray, progress: bool) -> np.ndarray:
    """UMAP of the rows of ``embeddings`` (an array or memmap), fitted on a seeded sample when large."""
    n = len(embeddings)
    if n < 3:  # UMAP needs at least one neighbour besides itself to build its graph
        return np.column_stack([np.arange(n), np.zeros(n)]).astype(np.float32)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs.*overridden.*", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*knn_search_index.*", category=UserWarning)  # not needed
        if n <= FIT_SAMPLE:
            vectors = np.asarray(embeddings, dtype=np.float32)
            reducer = _reducer(n, progress, _exact_neighbours(vectors, _neighbours(n)))
            return reducer.fit_transform(vectors).astype(np.float32)
        fitted = np.zeros(n, dtype=bool)
        fitted[np.random.default_rng(SEED).choice(n, FIT_SAMPLE, replace=False)] = True
        coords = np.empty((n, 2), dtype=np.float32)
        reducer = _reducer(FIT_SAMPLE, progress)  # with its own neighbour search, which transform needs
        coords[fitted] = reducer.fit_transform(np.asarray(embeddings[np.flatnonzero(fitted)], np.float32))
        rest = np.flatnonzero(~fitted)
        starts = tqdm(range(0, len(rest), CHUNK_ROWS), desc="UMAP transform", disable=not progress)
        for start in starts:
            rows = rest[start : start + CHUNK_ROWS]
            coords[rows] = reducer.transform(np.asarray(embeddings[rows], dtype=np.float32))
    return coords


def _neighbours(n_fit: int) -> int:
    """UMAP's neighbourhood size: fewer neighbours for tiny collections."""
    return min(UMAP_PARAMS["n_neighbors"], n_fit - 1)


def _exact_neighbours(vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` nearest rows by cosine distance, itself included: (indices, distances).

    An exact FAISS search, given to UMAP as its neighbour graph. UMAP's own search calls a Python-level
    metric for every pair below 4,096 galaxies (the demo's map took 17 s with it, 8 s with this) and
    NN-descent above; this takes 0.1 s for 3,000 galaxies and 10 s for 50,000 (2-core CPU).
    """
    import faiss

    unit = np.array(vectors, dtype=np.float32, order="C")
    faiss.normalize_L2(unit)
    index = faiss.IndexFlatIP(unit.shape[1])
    index.add(unit)
    similarity, indices = index.search(unit, k)
    return indices, np.clip(1.0 - similarity, 0.0, 2.0).astype(np.float32)


def compile_umap() -> None:
    """Fill numba's on-disk cache with what UMAP compiles for a map, by mapping a few random points.

    ``galsearch demo`` runs this in another process while it simulates, so that a new install's first map
    does not wait for the compiler.
    """
    points = np.random.default_rng(SEED).normal(size=(64, 8)).astype(np.float32)
    _compute(points, progress=False)


@functools.cache
def _import_umap():
    """umap, with numba's on-disk cache enabled for all of its compiled functions.

    UMAP declares some of them without ``cache=True`` (smooth_knn_dist, compute_membership_strengths, the
    layout's epoch, ...; lmcinnes/umap#1257 proposed caching them), so every process compiled them again
    before its first map: about 7 s of a 2-core CPU, most of the demo map's 11 s. Enabling the cache is what
    ``cache=True`` does; numba recompiles when UMAP's source or numba changes.
    """
    with warnings.catch_warnings():  # umap warns at import that TensorFlow (ParametricUMAP) is missing
        warnings.simplefilter("ignore")
        import umap  # slow to import (numba): only when a map is computed
    from numba.core.dispatcher import Dispatcher

    modules = [module for name, module in sys.modules.items() if name.split(".")[0] == "umap"]
    objects = [obj for module in modules for obj in vars(module).values()]
    kernels = {id(obj): obj for obj in objects if isinstance(obj, Dispatcher)}
    for kernel in kernels.values():
        kernel.enable_caching()
    return umap


def _reducer(n_fit: int, progress: bool, neighbours: tuple[np.ndarray, np.ndarray] | None = None):
    """A UMAP estimator with galsearch's parameters, given its neighbour graph or searching for it."""
    umap = _import_umap()
    params = {**UMAP_PARAMS, "n_neighbors": _neighbours(n_fit)}
    init = "spectral" if n_fit >= 5 else "random"  # the spectral start needs more points than dimensions + 1
    if neighbours is None:
        return umap.UMAP(**params, init=init, verbose=progress)
    # force_approximation_algorithm: UMAP otherwise ignores a given graph below 4,096 galaxies. Not verbose,
    # since UMAP's log prints its parameters, the graph's arrays included; its epoch bar shows all the same.
    return umap.UMAP(
        **params,
        init=init,
        precomputed_knn=neighbours,
        force_approximation_algorithm=True,
        tqdm_kwds={"disable": not progress, "desc": "UMAP epochs"},
    )


# ---- pictures ------------------------------------------------------------------------------------


@dataclass
class MapPicture:
    """A drawn map: the RGB picture and what is needed to turn its pixels back into galaxies.

    Pixel positions are continuous, from the picture's top-left corner: pixel (i, j) covers
    [i, i + 1) x [j, j + 1).
    """

    image: np.ndarray  # (height, width, 3) uint8
    coords: np.ndarray  # (galaxies, 2) map coordinates
    limits: tuple[float, float, float, float]  # x0, x1, y0, y1: map coordinates at the axes' edges
    box: tuple[float, float, float, float]  # left, top, right, bottom: the axes' edges in pixels
    pixels: np.ndarray = field(init=False, repr=False)  # (galaxies, 2) where each galaxy is drawn

    def __post_init__(self) -> None:
        self.pixels = self.to_pixels(self.coords)

    def to_pixels(self, points: np.ndarray) -> np.ndarray:
        """Pixel positions (n, 2) of map coordinates (n, 2)."""
        (x0, x1, y0, y1), (left, top, right, bottom) = self.limits, self.box
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        px = left + (points[:, 0] - x0) / (x1 - x0) * (right - left)
        py = bottom - (points[:, 1] - y0) / (y1 - y0) * (bottom - top)
        return np.column_stack([px, py])

    def to_map(self, px: float, py: float) -> tuple[float, float]:
        """Map coordinates of the picture's pixel position (px, py)."""
        (x0, x1, y0, y1), (left, top, right, bottom) = self.limits, self.box
        x = x0 + (px - left) / (right - left) * (x1 - x0)
        y = y0 + (bottom - py) / (bottom - top) * (y1 - y0)
        return float(x), float(y)

    def pixel_of(self, row: int) -> tuple[float, float]:
        """Pixel position where galaxy ``row`` is drawn."""
        px, py = self.pixels[row]
        return float(px), float(py)

    def nearest(self, px: float, py: float) -> int:
        """Row of the galaxy drawn nearest to the pixel position (px, py)."""
        return int(np.argmin(((self.pixels - (px, py)) ** 2).sum(axis=1)))

    def rows_in_box(self, p0: tuple[float, float], p1: tuple[float, float]) -> np.ndarray:
        """Rows of the galaxies drawn inside the box with opposite pixel corners ``p0`` and ``p1``."""
        low, high = np.minimum(p0, p1), np.maximum(p0, p1)
        return np.flatnonzero(((self.pixels >= low) & (self.pixels <= high)).all(axis=1))


def render_map(
    collection: Collection,
    color_by: str | None = None,
    values: np.ndarray | None = None,
    thumbnails: int = 0,
    size: tuple[int, int] = (900, 700),
    highlight: np.ndarray | None = None,
) -> MapPicture:
    """Draw the map (``size`` = width, height in pixels), coloured by a catalog column or by ``values``.

    ``values`` (one per embedded galaxy) takes the place of the column, ``color_by`` then only labels it.
    ``highlight`` rows are drawn on top, larger and edged in black; up to ``thumbnails`` galaxy stamps are
    spread over the map.
    """
    coords = umap_coordinates(collection)
    values = _colour_values(collection, color_by, values, len(coords))
    highlight = _highlight_rows(highlight, len(coords))
    width, height = (int(v) for v in size)
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)  # no pyplot: no global state
    axes = figure.add_axes(MAP_AXES if values is not None else PLAIN_MAP_AXES)
    limits = _limits(coords)
    point = _point_size(len(coords), width, height)
    _draw_points(figure, axes, coords, values, color_by, point, highlight)
    if thumbnails > 0:
        _draw_thumbnails(axes, collection, coords, thumbnails, limits, (width, height))
    axes.set_xlim(*limits[:2])
    axes.set_ylim(*limits[2:])
    axes.set_xticks([])
    axes.set_yticks([])
    axes.set_title(f"{collection.manifest['name']}: UMAP of {len(coords)} embeddings", fontsize=10)
    image, box = _render(figure, axes, width, height)
    return MapPicture(image, coords, limits, box)


def save_map_png(picture: MapPicture, path: str | Path) -> Path:
    """Write the picture as a PNG file (atomically) and return its path."""
    buffer = io.BytesIO()
    Image.fromarray(picture.image).save(buffer, format="png")
    atomic_write(Path(path), lambda f: f.write(buffer.getvalue()))
    return Path(path)


def _colour_values(collection: Collection, column: str | None, values, n: int) -> pd.Series | None:
    """The values to colour the ``n`` mapped galaxies by: ``values`` as given, or a catalog column."""
    if values is not None:
        values = np.asarray(values)
        if values.shape != (n,):
            raise ValueError(f"values must hold one value per mapped galaxy ({n}), got shape {values.shape}")
        return pd.Series(values)
    if column is None:
        return None
    if column not in collection.columns:
        known = ", ".join(collection.columns)
        raise CollectionError(f"no catalog column {column!r} to colour the map by; columns: {known}")
    return collection.catalog_columns([column])[column].iloc[:n]  # keeps nullable dtypes


def _highlight_rows(highlight, n: int) -> np.ndarray:
    """Highlighted rows as integers, checked against the ``n`` mapped galaxies."""
    rows = np.asarray([] if highlight is None else highlight).reshape(-1)
    rows = np.flatnonzero(rows) if rows.dtype == bool else rows.astype(np.int64)
    if len(rows) and (rows.min() < 0 or rows.max() >= n):
        raise ValueError(f"highlight rows must lie in [0, {n}): got {rows.min()}..{rows.max()}")
    return rows


def _limits(coords: np.ndarray) -> tuple[float, float, float, float]:
    """Axes limits around the coordinates with a 5 % margin."""
    low, high = coords.min(axis=0).astype(np.float64), coords.max(axis=0).astype(np.float64)
    pad = 0.05 * np.maximum(high - low, 1e-3)
    return float(low[0] - pad[0]), float(high[0] + pad[0]), float(low[1] - pad[1]), float(high[1] + pad[1])


def _point_size(n: int, width: int, height: int) -> float:
    """Marker area (points^2) so that a few thousand points fill the map without hiding each other."""
    return float(np.clip(0.05 * width * height / max(n, 1), 1.0, 40.0))


def is_categorical(values: pd.Series | np.ndarray) -> bool:
    """Whether values are categories: strings, booleans, or integers with few distinct values."""
    series = pd.Series(values)
    if pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series):
        return True
    return pd.api.types.is_integer_dtype(series) and series.nunique() <= CATEGORICAL_MAX


def _draw_points(
    figure: Figure,
    axes: Axes,
    coords: np.ndarray,
    values: pd.Series | None,
    label: str | None,
    point: float,
    highlight: np.ndarray,
) -> None:
    """Scatter the galaxies in one call (seeded random order, so no colour hides another), legend/bar."""
    if values is None:
        colours = np.tile(np.asarray(to_rgba(PLAIN_COLOUR)), (len(coords), 1))
    elif is_categorical(values):
        colours, handles = _categorical_colours(values)
        axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, title=label)
    else:
        colours, mappable = _numeric_colours(values)
        figure.colorbar(mappable, cax=figure.add_axes(COLORBAR_AXES), label=label)
    order = np.random.default_rng(SEED).permutation(len(coords))
    axes.scatter(*coords[order].T, s=point, c=colours[order], linewidths=0)
    if len(highlight):
        axes.scatter(
            *coords[highlight].T,
            s=max(5 * point, 40),
            c=colours[highlight],
            edgecolors=HIGHLIGHT_EDGE,
            linewidths=1.5,
            zorder=4,
        )


def _categorical_colours(values: pd.Series) -> tuple[np.ndarray, list[Line2D]]:
    """RGBA per galaxy from a qualitative palette (rarest categories past 20 lumped as 'other')."""
    series = pd.Series(values)
    missing = series.isna().to_numpy()
    counts = series[~missing].value_counts()
    counts = counts[counts > 0]  # a pandas Categorical lists unused categories too
    shown = list(counts.index[:CATEGORICAL_MAX] if len(counts) <= CATEGORICAL_MAX else counts.index[:19])
    shown = _sorted(shown)
    palette = _palette(len(shown))
    colours = np.tile(np.asarray(OTHER_COLOUR), (len(values), 1))
    colours[missing] = MISSING_COLOUR
    handles = []
    for i, category in enumerate(shown):
        colours[(series == category).to_numpy() & ~missing] = palette[i]
        handles.append(_legend_handle(str(category), palette[i]))
    if len(counts) > len(shown):
        handles.append(_legend_handle(f"other ({len(counts) - len(shown)} values)", OTHER_COLOUR))
    if missing.any():
        handles.append(_legend_handle("missing", MISSING_COLOUR))
    return colours, handles


def _palette(count: int) -> list[tuple[float, ...]]:
    """``count`` (at most 20) qualitative colours, none of them grey (grey means 'other' or 'missing')."""
    if count <= 9:
        return [colormaps["tab10"](i) for i in range(10) if i != 7][:count]
    tab20 = [colormaps["tab20"](i) for i in range(20) if i not in (14, 15)]
    return [*tab20, colormaps["tab20b"](0), colormaps["tab20b"](12)][:count]


def _sorted(categories: list) -> list:
    """Categories in their natural order (numbers as numbers), or as text when they do not compare."""
    try:
        return sorted(categories)
    except TypeError:
        return sorted(categories, key=str)


def _legend_handle(label: str, colour) -> Line2D:
    return Line2D([], [], linestyle="", marker="o", markersize=6, color=colour, label=label)


def _numeric_colours(values: pd.Series) -> tuple[np.ndarray, ScalarMappable]:
    """RGBA per galaxy from viridis (non-finite values grey) and the mappable for a colour bar."""
    numbers = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    finite = np.isfinite(numbers)
    low, high = (numbers[finite].min(), numbers[finite].max()) if finite.any() else (0.0, 1.0)
    mappable = ScalarMappable(Normalize(low, high), colormaps["viridis"])
    colours = np.tile(np.asarray(MISSING_COLOUR), (len(numbers), 1))
    colours[finite] = mappable.to_rgba(numbers[finite])
    return colours, mappable


def thumbnail_rows(coords: np.ndarray, count: int) -> np.ndarray:
    """Up to ``count`` rows spread over the map: on a grid, the galaxy nearest each cell's centre."""
    side = int(np.ceil(np.sqrt(count)))
    low, high = coords.min(axis=0), coords.max(axis=0)
    span = np.maximum(high - low, 1e-9)
    cell = np.clip(((coords - low) / span * side).astype(np.int64), 0, side - 1)
    centre = low + (cell + 0.5) / side * span
    distance = (((coords - centre) / span) ** 2).sum(axis=1)
    cell_id = cell[:, 0] * side + cell[:, 1]
    order = np.lexsort((distance, cell_id))
    first = np.r_[True, cell_id[order][1:] != cell_id[order][:-1]]
    chosen = order[first]
    if len(chosen) > count:  # more cells than stamps: keep the most populous cells
        population = np.bincount(cell_id, minlength=side * side)[cell_id[chosen]]
        chosen = chosen[np.argsort(-population, kind="stable")[:count]]
    return np.sort(chosen)


def _draw_thumbnails(
    axes: Axes,
    collection: Collection,
    coords: np.ndarray,
    count: int,
    limits: tuple[float, float, float, float],
    size: tuple[int, int],
) -> None:
    """Galaxy stamps in the collection's display bands centred on their map positions (one band in grey)."""
    side = int(np.ceil(np.sqrt(count)))
    position = axes.get_position()
    axes_w, axes_h = position.width * size[0], position.height * size[1]
    stamp_px = float(np.clip(0.6 * min(axes_w, axes_h) / side, *STAMP_PX))
    half_x = stamp_px / 2 * (limits[1] - limits[0]) / axes_w
    half_y = stamp_px / 2 * (limits[3] - limits[2]) / axes_h
    rows = thumbnail_rows(coords, count)
    for row, stamp in zip(rows, collection.rgb(rows, grey=True), strict=True):
        stamp = stamp[..., 0] if stamp.shape[-1] == 1 else stamp
        x, y = coords[row]
        axes.imshow(
            stamp,
            extent=(x - half_x, x + half_x, y - half_y, y + half_y),
            cmap="gray",
            vmin=0,
            vmax=255,
            interpolation="nearest",
            aspect="auto",
            zorder=3,
        )


def _render(figure: Figure, axes: Axes, width: int, height: int) -> tuple[np.ndarray, tuple[float, ...]]:
    """Draw with Agg: the (height, width, 3) uint8 picture and the map axes' pixel box (origin top left)."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3]
    extent = axes.get_window_extent()  # display pixels, origin bottom left of the drawn canvas
    top, bottom = rgb.shape[0] - extent.y1, rgb.shape[0] - extent.y0
    box = (float(extent.x0), float(top), float(extent.x1), float(bottom))
    if rgb.shape[:2] != (height, width):  # in case a float figure size rounds a pixel off: pad or crop
        framed = np.full((height, width, 3), 255, np.uint8)
        h, w = min(height, rgb.shape[0]), min(width, rgb.shape[1])
        framed[:h, :w] = rgb[:h, :w]
        rgb = framed
    return np.ascontiguousarray(rgb), box
