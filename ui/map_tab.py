"""Map tab: the UMAP of the embeddings as an interactive WebGL map (index.mapview): hover a galaxy for its
stamp, lasso or box a group into a gallery and act on it (search like these, export, SAMP); colour by any
catalog column, prediction, cluster, anomaly score or rating session; search results and the galaxy being
rated ringed. The page's side of it (hover cards, selections) is ui.map_js.
"""

from __future__ import annotations

import html
import json
from functools import lru_cache

import gradio as gr
import numpy as np

from galsearch.anomaly import ratings_store
from galsearch.anomaly.discover import DEFAULT_SESSION
from galsearch.embedder import GalsearchError
from galsearch.index import map_figure, rows_in_selection, search, values_of_ids, write_results
from galsearch.index.mapview import stamp_uri
from galsearch.index.projection import has_map, umap_coordinates, umap_seconds

from . import label_bar
from .samp import SERVER_SIDE, send_table
from .state import DOWNLOADS, AppState, user_of

SELECTED = 48  # stamps of a selection shown (a seeded sample of a larger one)
SIMILAR = 24  # galaxies found by "Search like these"
MAX_POSITIVES = 200  # a larger selection is searched by a seeded sample of this many
MAX_RATED = 500  # galaxies of a selection rated at once (each rating is a transaction of its own)
STAMP_CACHE = 4096  # hover stamps kept encoded
NO_COLOUR = "(none)"
RATING_PREFIX = "rating: "
SKIPPED_COLUMNS = {"id"}
TRACK_TQDM = gr.Progress(track_tqdm=True)  # UMAP's own tqdm bars become the page's progress bar
HIGHLIGHTED = {"search": "search results", "rating": "being rated"}  # keys of the highlights state
NO_HIGHLIGHTS = {"search": [], "rating": None}
HELP = (
    "Hover a galaxy to see it; drag a lasso around galaxies (or a box: the toolbar's box tool) to select "
    "them, over every galaxy even where only the density is drawn; scroll to zoom, double-click to see all."
)


def colour_choices(state: AppState) -> list[str]:
    """What the map can be coloured by: catalog columns (predictions, clusters, anomaly scores included)
    and the ratings of each session."""
    columns = [c for c in state.collection().columns if c not in SKIPPED_COLUMNS]
    sessions = ratings_store(state.path).sessions()["session"].tolist()
    return [NO_COLOUR, *columns, *(RATING_PREFIX + s for s in sessions)]


def first_map_note(state: AppState) -> str:
    """What drawing the first map of the collection costs, or "" when its map is cached."""
    coll = state.collection()
    n = coll.counts["embedded"]
    if n == 0:
        return "Nothing to map yet: the collection has no embeddings (`galsearch embed` makes them)."
    if has_map(coll):
        return ""
    took = _duration(umap_seconds(n))
    return (
        f"No map yet: **Draw map** first computes the UMAP of {n} embeddings, about {took} on a 2-core CPU. "
        "It is kept in the collection: later maps are drawn in a second."
    )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.0f} h"


def map_of(state: AppState, colour: str, highlights: dict | None):
    """The map's figure coloured by ``colour`` (a column, a rating session or none), highlights ringed."""
    coll = state.collection()
    values = None
    if colour.startswith(RATING_PREFIX):
        latest = ratings_store(state.path).latest(colour.removeprefix(RATING_PREFIX))
        values = values_of_ids(coll, latest["galaxy"].tolist(), latest["rating"].to_numpy())
    figure = map_figure(
        coll, None if colour == NO_COLOUR else colour, values, highlight=_highlighted(state, highlights)
    )
    # The page shows its own hover card (stamp, id, value), no Plotly label under it; rings stay unhoverable.
    return figure.update_traces(hoverinfo="none", hovertemplate=None, selector=_hoverable)


def _hoverable(trace) -> bool:
    return trace.hoverinfo != "skip"


def _highlighted(state: AppState, highlights: dict | None) -> dict[str, np.ndarray]:
    """Rows of the highlighted galaxies by group name (ids no longer in the collection left out)."""
    coll = state.collection()
    groups = {}
    for key, name in HIGHLIGHTED.items():
        ids = (highlights or {}).get(key) or []
        ids = [ids] if isinstance(ids, str) else ids
        rows = coll.find_rows([str(i) for i in ids]) if ids else np.zeros(0, np.int64)
        groups[name] = rows[(rows >= 0) & (rows < coll.counts["embedded"])]
    return groups


def _stamp_grid(state: AppState, rows: np.ndarray, extras: list[str] | None = None) -> str:
    """HTML of a gallery of stamps in the collection's display bands (WebP data URIs at their stored size,
    enlarged by the page pixel by pixel) captioned ``id · class`` + extras: one answer, where a gr.Gallery's
    browser fetches each stamp's file after it (100 ms more for 24 stamps on a 2-core server,
    benchmarks/map.py)."""
    pictures = state.collection().rgb(np.asarray(rows, dtype=np.int64), grey=True)
    figures = [
        f'<figure><img src="{stamp_uri(p, "webp")}" alt=""><figcaption>{html.escape(caption)}'
        "</figcaption></figure>"
        for p, caption in zip(pictures, state.captions(rows, extras), strict=True)
    ]
    return f'<div class="map-stamps">{"".join(figures)}</div>'


def _drawn_key(state: AppState, colour: str, highlights: dict | None) -> str:
    """What identifies a drawn map: collection version, colour, highlights."""
    version = (state.path / "manifest.json").stat().st_mtime_ns
    return json.dumps([version, colour, highlights or NO_HIGHLIGHTS], sort_keys=True, default=str)


def build(
    state: AppState, tab: gr.Tab, selection: gr.State, highlights: gr.State
) -> tuple[gr.Row, gr.Dropdown]:
    """The Map tab's components and wiring (inside a gr.Blocks context); returns its SAMP row and its
    colour choice (other tabs set it, e.g. to a new head's probabilities).

    ``selection`` holds the ids of the galaxies selected on the map; ``highlights`` the galaxies ringed on
    it (``{"search": [ids], "rating": id}``), read when the map is drawn.
    """
    with gr.Row():
        colour = gr.Dropdown(
            colour_choices(state), value=NO_COLOUR, label="Colour by", scale=3, allow_custom_value=True
        )
        draw = gr.Button("Draw map", variant="primary", elem_id="map-button", scale=1)
    note = gr.Markdown(elem_id="map-note")
    gr.Markdown(HELP)
    plot = gr.Plot(label="UMAP of the embeddings", elem_id="map-plot")
    shape = gr.Textbox(visible="hidden", elem_id="map-shape")  # the page's script writes selections here
    info = gr.Markdown(elem_id="map-selection-info")
    gallery = gr.HTML(elem_id="map-selection")
    with gr.Row():
        like = gr.Button("Search like these", elem_id="map-search-like", scale=0)
        fmt = gr.Radio(list(DOWNLOADS), value="CSV", label="Export the selection as", scale=1)
        export = gr.Button("Export", elem_id="map-export", scale=0)
        exported = gr.File(label="Selection file", interactive=False, elem_id="map-export-file", scale=1)
    with gr.Row(visible=False) as samp_row:  # shown by the app when a SAMP hub answers
        to_topcat = gr.Button("Send the selection to TOPCAT", elem_id="samp-send-selection", scale=0)
        samp_status = gr.Markdown(elem_id="samp-map-status")
        gr.Markdown(SERVER_SIDE)
    label_bar.build(state, "map", "the selection", selection)
    with gr.Row(equal_height=True):
        sessions = ratings_store(state.path).sessions()["session"].tolist() or [DEFAULT_SESSION]
        session = gr.Dropdown(sessions, value=sessions[0], label="Session", allow_custom_value=True, scale=2)
        score = gr.Dropdown([str(r) for r in range(6)], value="0", label="Rating", scale=1)
        rate = gr.Button("Rate the selection", elem_id="map-rate", scale=0)
    rated = gr.Markdown(elem_id="map-rated")
    similar_note = gr.Markdown(elem_id="map-similar-note")
    similar = gr.HTML(elem_id="map-similar")
    drawn = gr.State("")  # _drawn_key of the map on screen

    def draw_map(color_by: str, marks: dict, progress=TRACK_TQDM):
        """Draw the map coloured by a catalog column or "rating: SESSION" (computing the UMAP first if the
        collection has none yet)."""
        coll = state.collection()
        try:
            if not has_map(coll):
                progress(0, desc=f"UMAP of {coll.counts['embedded']} embeddings")
                umap_coordinates(coll, progress=True)
            figure = map_of(state, color_by, marks)
        except GalsearchError as exc:
            raise gr.Error(str(exc)) from None
        return figure, "", _drawn_key(state, color_by, marks)

    def redraw(color_by: str, marks: dict, shown: str):
        """The map again when it is cached and something it shows changed; else nothing (a first map
        waits for the button)."""
        if not has_map(state.collection()) or shown == _drawn_key(state, color_by, marks):
            return gr.skip(), gr.skip(), gr.skip()
        return draw_map(color_by, marks)

    def opened(color_by: str, marks: dict, shown: str):
        choices = gr.Dropdown(choices=colour_choices(state))  # new columns, sessions
        figure, _, key = redraw(color_by, marks, shown)
        return choices, first_map_note(state), figure, key

    # One map event at a time, in order: a map drawn on opening never lands over one asked for since.
    queued = {"concurrency_id": "map", "concurrency_limit": 1}
    draw.click(draw_map, [colour, highlights], [plot, note, drawn], api_name="map", **queued)
    # A colour chosen in the page redraws at once; one set by another tab (a head just trained) waits for
    # the tab to open, since Plotly cannot size a figure drawn in a hidden tab.
    colour.input(redraw, [colour, highlights, drawn], [plot, note, drawn], api_name=False, **queued)
    tab.select(opened, [colour, highlights, drawn], [colour, note, plot, drawn], api_name=False, **queued)

    @lru_cache(maxsize=STAMP_CACHE)
    def encoded(version: int, row: int) -> dict:
        coll = state.collection()
        galaxy = str(coll.catalog_rows([row], ["id"])["id"].iloc[0])
        return {"id": galaxy, "image": stamp_uri(coll.rgb(row, grey=True))}

    def stamp(row: int) -> dict:
        """The stamp of the galaxy at catalog row ``row`` (its display bands) as a PNG data URI, with its id:
        {"id": ..., "image": "data:image/png;base64,..."} (what the map shows on hover)."""
        n = len(state.collection())
        if not 0 <= int(row) < n:
            raise gr.Error(f"no galaxy at row {row}: the collection's rows are 0 to {n - 1}")
        return encoded((state.path / "manifest.json").stat().st_mtime_ns, int(row))

    gr.api(stamp, api_name="stamp", queue=False)

    def select_on_map(shape: str):
        """Select the galaxies inside a lasso or box in map coordinates, given as Plotly's selection event
        has them: {"lassoPoints": {"x": [...], "y": [...]}} or {"range": {"x": [x0, x1], "y": [y0, y1]}}."""
        coll = state.collection()
        try:
            described = json.loads(shape)
        except ValueError as exc:
            raise gr.Error(f"a selection is JSON, got {shape[:80]!r}: {exc}") from None
        try:
            rows = rows_in_selection(umap_coordinates(coll), described)
        except GalsearchError as exc:
            raise gr.Error(str(exc)) from None
        ids = coll.catalog_rows(rows, ["id"])["id"].tolist()
        shown = rows
        text = f"**{len(rows)} {'galaxy' if len(rows) == 1 else 'galaxies'} selected**"
        if len(rows) > SELECTED:
            shown = np.sort(np.random.default_rng(0).choice(rows, SELECTED, replace=False))
            text += f" (showing {SELECTED} of them, at random)"
        return _stamp_grid(state, shown), text, ids

    shape.change(
        select_on_map,
        shape,
        [gallery, info, selection],
        api_name="select_on_map",
        queue=False,
        show_progress="hidden",
    )

    def search_selection(selected: list[str], marks: dict, color_by: str):
        """The galaxies most like those selected on the map (this session's selection), ringed on the map
        drawn coloured by ``color_by``."""
        if not selected:
            raise gr.Error("Select galaxies first: drag a lasso (or a box) around them on the map.")
        positives = selected
        text = f"The {SIMILAR} galaxies most like the {len(selected)} selected, ringed on the map"
        if len(selected) > MAX_POSITIVES:
            positives = np.random.default_rng(0).choice(selected, MAX_POSITIVES, replace=False).tolist()
            text += f" (searched with {MAX_POSITIVES} of them at random)"
        try:
            found = search(state.collection(), ids=positives, k=SIMILAR)
        except GalsearchError as exc:
            raise gr.Error(str(exc)) from None
        marks = {**NO_HIGHLIGHTS, **(marks or {}), "search": found["id"].astype(str).tolist()}
        rows = state.collection().rows_of(marks["search"])
        score = "similarity" if "similarity" in found else "distance"
        gallery_items = _stamp_grid(state, rows, [f" · {s:.3f}" for s in found[score]])
        figure, _, key = draw_map(color_by, marks)
        return gallery_items, text, marks, figure, key

    like.click(
        search_selection,
        [selection, highlights, colour],
        [similar, similar_note, highlights, plot, drawn],
        api_name="search_selection",
        **queued,
    )

    def selected_table(selected: list[str]):
        if not selected:
            raise gr.Error("Select galaxies first: drag a lasso (or a box) around them on the map.")
        coll = state.collection()
        rows = coll.find_rows(selected)
        return coll.catalog_rows(np.sort(rows[rows >= 0]))

    def export_selection(selected: list[str], download_format: str) -> str:
        """The catalog rows of the galaxies selected on the map (this session's selection) as a CSV, FITS
        or VOTable file."""
        fmt_name, suffix = DOWNLOADS[download_format]
        path = state.download(f"selection{suffix}")
        write_results(selected_table(selected), path, fmt_name)
        return str(path)

    export.click(export_selection, [selection, fmt], exported, api_name="export_selection")

    def send_selection(selected: list[str]) -> str:
        """Send the catalog rows of the galaxies selected on the map to TOPCAT over SAMP (server-side hub)."""
        try:
            name = f"galsearch map selection of {state.path.name}"
            return send_table(selected_table(selected), name, state.download("selection.xml"))
        except GalsearchError as exc:
            raise gr.Error(str(exc)) from None

    to_topcat.click(send_selection, selection, samp_status, api_name="samp_send_selection", queue=False)

    def rate_selection(selected: list[str], name: str, rating: str, request: gr.Request) -> str:
        """Rate every galaxy selected on the map in a discovery session (at most MAX_RATED at once)."""
        if not selected:
            raise gr.Error("Select galaxies first: drag a lasso (or a box) around them on the map.")
        if len(selected) > MAX_RATED:
            raise gr.Error(f"{len(selected)} galaxies are selected; rate at most {MAX_RATED} at once")
        try:
            hunt, lock = state.discovery((name or "").strip(), user_of(request))
            with lock:
                hunt.rate_many([(galaxy, float(rating)) for galaxy in selected])
        except GalsearchError as exc:
            raise gr.Error(str(exc)) from None
        return f"rated {len(selected)} galaxies {rating} in session **{name}**"

    rate.click(rate_selection, [selection, session, score], rated)
    return samp_row, colour
