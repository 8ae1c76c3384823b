"""The interactive map of a collection: a Plotly WebGL scatter of its UMAP coordinates, for the web app
and for notebooks.

Every point carries its catalog row as ``customdata``, so a hover or a selection maps back to galaxies.
Past ``max_points`` galaxies a seeded sample of them is drawn (highlighted galaxies always among them) over
a density layer of all; selections are therefore computed here, from the lasso or box in map coordinates,
over every galaxy, drawn or not::

    fig = map_figure(coll, "class_name")            # fig.show() in a notebook
    rows = rows_in_box(umap_coordinates(coll), (-1, 2), (0, 3))

Plotly (6 or later) sends numpy arrays base64-encoded: 100,000 points are about 2 MB of figure.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.colors import to_hex
from matplotlib.path import Path as Polygon
from PIL import Image

from galsearch.embedder.collection import Collection
from galsearch.embedder.errors import GalsearchError

from .projection import (
    CATEGORICAL_MAX,
    MISSING_COLOUR,
    OTHER_COLOUR,
    PLAIN_COLOUR,
    SEED,
    _colour_values,
    _palette,
    _sorted,
    is_categorical,
    umap_coordinates,
)

if TYPE_CHECKING:
    import plotly.graph_objects as go

# Points drawn at most (the rest are in the density layer): 2 MB of figure, and in Chromium's software
# WebGL ~0.3 s a frame of pan or zoom, while a hover reaches a tenth of a million galaxies (docs/map.md).
MAX_POINTS = 100_000
DENSITY_BINS = 200  # per axis, for the density layer of all galaxies past MAX_POINTS
MAX_VERTICES = 10_000  # of a lasso: a longer one is refused rather than tested against every galaxy
HEIGHT = 650  # pixels
DENSITY_COLOURS = [[0.0, "#ececec"], [1.0, "#5a5a5a"]]  # log counts, light to dark grey
HIGHLIGHT_COLOURS = ["#000000", "#d62728", "#ff7f0e", "#9467bd"]  # rings of the highlighted groups
NUMERIC_SCALE = "Viridis"
STAMP_FORMATS = {"png": {}, "webp": {"quality": 90}}  # PIL's save options of each


class MapSelectionError(GalsearchError):
    """A selection on the map is not a box or a lasso in map coordinates."""


def map_figure(
    collection: Collection,
    color_by: str | None = None,
    values: np.ndarray | None = None,
    highlight: Mapping[str, Sequence[int]] | Sequence[int] | np.ndarray | None = None,
    max_points: int = MAX_POINTS,
    height: int = HEIGHT,
) -> go.Figure:
    """The map as a Plotly figure of WebGL scatter traces, coloured by a catalog column or by ``values``.

    ``values`` (one per mapped galaxy) take the place of the column, ``color_by`` then only names them.
    ``highlight`` rows (or named groups of rows) are ringed on top. Each point's ``customdata`` is its
    catalog row. Past ``max_points`` galaxies, a seeded sample of them (plus every highlighted one) is drawn
    over a density layer of all.
    """
    import plotly.graph_objects as go

    coords = umap_coordinates(collection)
    n = len(coords)
    colours = _colour_values(collection, color_by, values, n)
    label = color_by or ("value" if values is not None else None)
    groups = _highlight_groups(highlight, n)
    rows = shown_rows(n, max_points, np.concatenate([np.zeros(0, np.int64), *groups.values()]))
    figure = go.Figure()
    if len(rows) < n:
        figure.add_trace(_density(coords))
    for trace in _point_traces(coords, rows, colours, label, _marker_size(len(rows))):
        figure.add_trace(trace)
    for i, (name, group) in enumerate(groups.items()):
        figure.add_trace(_ring_trace(coords, group, name, HIGHLIGHT_COLOURS[i % len(HIGHLIGHT_COLOURS)]))
    title = f"{collection.manifest['name']}: UMAP of {n:,} embeddings"
    if len(rows) < n:
        title += f" ({len(rows):,} drawn over the density of all)"
    numeric = any(t.type == "scattergl" and t.marker.colorscale for t in figure.data)  # a colour bar
    hidden = {"showticklabels": False, "showgrid": False, "zeroline": False, "ticks": ""}
    figure.update_layout(
        title={"text": title, "font": {"size": 14}},
        height=height,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        plot_bgcolor="white",
        xaxis=hidden,
        yaxis=hidden,
        dragmode="lasso",
        hovermode="closest",
        uirevision=str(collection.path),  # a new colouring keeps the user's zoom
        legend=_legend(label, numeric=numeric),
        meta={"color_by": label or ""},
    )
    return figure


def _legend(label: str | None, numeric: bool) -> dict:
    """Categories (and rings) listed beside the map; under it when a colour bar takes that place."""
    legend = {"itemsizing": "constant", "title": {"text": "" if numeric else label or ""}}
    return {**legend, "orientation": "h", "x": 0, "y": 0, "yanchor": "top"} if numeric else legend


def shown_rows(n: int, max_points: int, keep: np.ndarray | Sequence[int] = ()) -> np.ndarray:
    """Rows drawn of ``n`` galaxies: all up to ``max_points``, else a seeded sample of ``max_points`` of
    them plus the rows ``keep``, in ascending order."""
    if max_points < 1:
        raise ValueError(f"max_points must be at least 1, got {max_points}")
    if n <= max_points:
        return np.arange(n)
    sample = np.random.default_rng(SEED).choice(n, max_points, replace=False)
    return np.union1d(sample, np.asarray(keep, dtype=np.int64))


def rows_in_box(coords: np.ndarray, x_range: Sequence[float], y_range: Sequence[float]) -> np.ndarray:
    """Rows of the galaxies inside the box ``x_range`` x ``y_range`` (map coordinates, either order)."""
    (x0, x1), (y0, y1) = sorted(_numbers(x_range, "x range")), sorted(_numbers(y_range, "y range"))
    x, y = coords[:, 0], coords[:, 1]
    return np.flatnonzero((x >= x0) & (x <= x1) & (y >= y0) & (y <= y1))


def rows_in_polygon(coords: np.ndarray, xy: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Rows of the galaxies inside the polygon with vertices ``xy`` (k, 2) in map coordinates."""
    vertices = np.asarray(xy, dtype=np.float64)
    if vertices.ndim != 2 or vertices.shape[1] != 2 or len(vertices) < 3:
        raise MapSelectionError(f"a lasso needs at least 3 (x, y) vertices, got an array of {vertices.shape}")
    if len(vertices) > MAX_VERTICES:
        raise MapSelectionError(f"a lasso has at most {MAX_VERTICES} vertices, got {len(vertices)}")
    if not np.isfinite(vertices).all():
        raise MapSelectionError("a lasso's vertices must be finite numbers")
    (x0, y0), (x1, y1) = vertices.min(axis=0), vertices.max(axis=0)
    candidates = rows_in_box(coords, (x0, x1), (y0, y1))  # the polygon test only for those in its bounds
    inside = Polygon(vertices).contains_points(np.asarray(coords[candidates], dtype=np.float64))
    return candidates[inside]


def rows_in_selection(coords: np.ndarray, selection: Mapping) -> np.ndarray:
    """Rows of the galaxies inside a selection as Plotly's ``plotly_selected`` event describes it:
    ``{"range": {"x": [x0, x1], "y": [y0, y1]}}`` (box) or ``{"lassoPoints": {"x": [...], "y": [...]}}``."""
    if not isinstance(selection, Mapping):
        raise MapSelectionError(f"a selection is a box or a lasso, got {type(selection).__name__}")
    if isinstance(selection.get("range"), Mapping):
        box = selection["range"]
        return rows_in_box(coords, box.get("x"), box.get("y"))
    if isinstance(selection.get("lassoPoints"), Mapping):
        lasso = selection["lassoPoints"]
        xs, ys = _numbers(lasso.get("x"), "lasso x", None), _numbers(lasso.get("y"), "lasso y", None)
        if len(xs) != len(ys):
            raise MapSelectionError(f"a lasso has as many x as y, got {len(xs)} and {len(ys)}")
        return rows_in_polygon(coords, np.column_stack([xs, ys]))
    raise MapSelectionError(
        f"a selection has a 'range' (box) or 'lassoPoints' (lasso), got keys {sorted(map(str, selection))}"
    )


def values_of_ids(collection: Collection, ids: Sequence[str], values: Sequence[float]) -> np.ndarray:
    """One value per mapped galaxy: ``values`` at the galaxies ``ids``, NaN for the rest (ids not in the
    collection or not mapped are left out), e.g. a rating session's latest ratings."""
    mapped = collection.counts["embedded"]
    out = np.full(mapped, np.nan)
    rows = collection.find_rows([str(i) for i in ids])
    numbers = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(numbers) != len(rows):
        raise ValueError(f"values_of_ids needs one value per id: got {len(rows)} ids, {len(numbers)} values")
    keep = (rows >= 0) & (rows < mapped)
    out[rows[keep]] = numbers[keep]
    return out


def stamp_uri(image: np.ndarray, format: str = "png") -> str:
    """A galaxy's picture (H, W, 3 uint8, or H, W, 1 in grey: ``Collection.rgb(row, grey=True)``) as a data
    URI at its own size: PNG (lossless) or WebP (quality 90, a third of the bytes, for galleries)."""
    if format not in STAMP_FORMATS:
        raise ValueError(f"stamp format is one of {', '.join(STAMP_FORMATS)}, got {format!r}")
    pixels = np.asarray(image)
    buffer = io.BytesIO()
    picture = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    picture.save(buffer, format=format, **STAMP_FORMATS[format])
    return f"data:image/{format};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _numbers(values, what: str, count: int | None = 2) -> list[float]:
    """``values`` as finite floats (``count`` of them unless None), else a MapSelectionError naming them."""
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        raise MapSelectionError(f"the {what} must be numbers, got {values!r}"[:200]) from None
    if (count is not None and len(numbers) != count) or not all(map(math.isfinite, numbers)):
        expected = f"{count} finite numbers" if count is not None else "finite numbers"
        raise MapSelectionError(f"the {what} must be {expected}, got {values!r}"[:200])
    return numbers


def _highlight_groups(highlight, n: int) -> dict[str, np.ndarray]:
    """Named groups of highlighted rows, checked against the ``n`` mapped galaxies."""
    if highlight is None:
        return {}
    named = highlight if isinstance(highlight, Mapping) else {"highlighted": highlight}
    groups = {}
    for name, rows in named.items():
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= n):
            raise ValueError(
                f"highlighted rows must lie in [0, {n}): {name!r} holds {rows.min()}..{rows.max()}"
            )
        if len(rows):
            groups[str(name)] = np.unique(rows)
    return groups


def _marker_size(shown: int) -> float:
    """Marker diameter in pixels: large for a few galaxies, 2 for 100,000."""
    return float(np.clip(30 / math.sqrt(math.sqrt(max(shown, 1))), 2, 9))


def _scatter(coords: np.ndarray, rows: np.ndarray, name: str, marker: dict, hover: str) -> go.Scattergl:
    import plotly.graph_objects as go

    xy = np.asarray(coords[rows], dtype=np.float32)
    return go.Scattergl(
        x=xy[:, 0],
        y=xy[:, 1],
        customdata=rows.astype(np.int32),
        mode="markers",
        name=name,
        marker=marker,
        hovertemplate=hover,
    )


def _point_traces(
    coords: np.ndarray, rows: np.ndarray, values: pd.Series | None, label: str | None, size: float
) -> list[go.Scattergl]:
    """The drawn galaxies: one trace (plain or numeric) or one per category, plus one of missing values."""
    marker = {"size": size, "opacity": 0.85 if len(rows) > 10_000 else 1.0}
    if values is None:
        plain = {**marker, "color": to_hex(PLAIN_COLOUR)}
        return [_scatter(coords, rows, "galaxies", plain, "row %{customdata}<extra></extra>")]
    series = pd.Series(values)
    drawn = series.iloc[rows]
    grey = {**marker, "color": to_hex(MISSING_COLOUR)}
    if is_categorical(series):
        missing = drawn.isna().to_numpy()
        traces = _category_traces(coords, rows, series, drawn, missing, label, marker)
    else:
        every = pd.to_numeric(series, errors="coerce").to_numpy(np.float64, na_value=np.nan)
        numbers = every[rows]
        missing = ~np.isfinite(numbers)  # NaN, None and infinities alike
        traces = []
        if (~missing).any():
            finite = every[np.isfinite(every)]
            order = np.random.default_rng(SEED).permutation(np.flatnonzero(~missing))  # no systematic overlap
            scale = {
                "color": numbers[order].astype(np.float32),
                "colorscale": NUMERIC_SCALE,
                "cmin": float(finite.min()),
                "cmax": float(finite.max()),
                "colorbar": {"title": {"text": label}, "thickness": 14},
            }
            hover = f"row %{{customdata}}<br>{label}: %{{marker.color:.4g}}<extra></extra>"
            traces.append(_scatter(coords, rows[order], label or "value", {**marker, **scale}, hover))
    if missing.any():
        hover = f"row %{{customdata}}<br>{label}: missing<extra></extra>"
        traces.append(_scatter(coords, rows[missing], "missing", grey, hover))
    return traces


def _category_traces(
    coords: np.ndarray,
    rows: np.ndarray,
    every: pd.Series,
    drawn: pd.Series,
    missing: np.ndarray,
    label: str | None,
    marker: dict,
) -> list[go.Scattergl]:
    """One trace per category (the 19 commonest past 20 categories, the rest as 'other'), commonest first
    so that rare ones are drawn on top."""
    counts = every[every.notna()].value_counts()
    counts = counts[counts > 0]  # a pandas Categorical lists unused categories too
    shown = list(counts.index[: CATEGORICAL_MAX if len(counts) <= CATEGORICAL_MAX else CATEGORICAL_MAX - 1])
    ordered = _sorted(shown)  # the legend's order, and the palette's as in the PNG map
    colours = dict(zip(ordered, _palette(len(shown)), strict=True))
    traces = []
    for category in shown:
        members = (drawn == category).to_numpy() & ~missing
        if members.any():
            hover = f"row %{{customdata}}<br>{label}: {category}<extra></extra>"
            style = {**marker, "color": to_hex(colours[category])}
            trace = _scatter(coords, rows[members], str(category), style, hover)
            traces.append(trace.update(legendrank=1 + ordered.index(category)))
    other = ~missing & ~drawn.isin(shown).to_numpy()
    if other.any():
        hover = f"row %{{customdata}}<br>{label}: other<extra></extra>"
        name = f"other ({len(counts) - len(shown)} values)"
        traces.append(_scatter(coords, rows[other], name, {**marker, "color": to_hex(OTHER_COLOUR)}, hover))
    return traces


def _ring_trace(coords: np.ndarray, rows: np.ndarray, name: str, colour: str) -> go.Scattergl:
    """Highlighted galaxies as rings on top; not hoverable, so a hover finds the galaxy underneath."""
    trace = _scatter(
        coords, rows, name, {"size": 13, "symbol": "circle-open", "color": colour, "line": {"width": 2}}, ""
    )
    trace.update(hoverinfo="skip", hovertemplate=None)
    return trace


def _density(coords: np.ndarray) -> go.Heatmap:
    """A heatmap of log counts of all galaxies, empty cells transparent."""
    import plotly.graph_objects as go

    counts, x_edges, y_edges = np.histogram2d(coords[:, 0], coords[:, 1], bins=DENSITY_BINS)
    density = np.where(counts > 0, np.log10(np.maximum(counts, 1)) + 1, np.nan).T.astype(np.float32)
    dx, dy = x_edges[1] - x_edges[0], y_edges[1] - y_edges[0]
    return go.Heatmap(
        z=density,
        x0=float(x_edges[0] + dx / 2),
        dx=float(dx),
        y0=float(y_edges[0] + dy / 2),
        dy=float(dy),
        colorscale=DENSITY_COLOURS,
        showscale=False,
        hoverinfo="skip",
        name="density of all",
        zsmooth=False,
    )
