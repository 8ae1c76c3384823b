"""Map tab: the UMAP of the embeddings, coloured by any column; click a galaxy, click twice for a box."""

from __future__ import annotations

import gradio as gr
import numpy as np

from anomaly import ratings_store
from embedder import GalsearchError
from index import render_map
from index.projection import has_map, umap_seconds

from .state import AppState, stamp

SELECTED = 48
CLICKED_SIDE = 200  # pixels of the clicked galaxy
RATING_PREFIX = "rating: "
SKIPPED_COLUMNS = {"id", "source", "ra", "dec"}


def colour_choices(state: AppState) -> list[str]:
    """Catalog columns worth colouring by, and the ratings of each session."""
    columns = [c for c in state.collection().columns if c not in SKIPPED_COLUMNS and not c.endswith("_prob")]
    sessions = ratings_store(state.path).sessions()["session"].tolist()
    return ["(none)", *columns, *(RATING_PREFIX + s for s in sessions)]


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


def _picture(state: AppState, colour: str, thumbnails: bool):
    coll = state.collection()
    n = coll.counts["embedded"]
    latest = None
    if colour.startswith(RATING_PREFIX):
        latest = ratings_store(state.path).latest(colour.removeprefix(RATING_PREFIX))
    ratings_version = None if latest is None else (len(latest), int(latest["seq"].sum()))
    key = (colour, thumbnails, n, state.path.joinpath("manifest.json").stat().st_mtime_ns, ratings_version)
    if key not in state.maps:
        values = None
        if latest is not None:
            values = np.full(n, np.nan)
            rows = coll.rows_of(latest["galaxy"].tolist())
            keep = rows < n
            values[rows[keep]] = latest["rating"].to_numpy()[keep]
        state.maps.clear()  # one picture kept: the pixel mapping of the one on screen
        state.maps[key] = render_map(
            coll,
            color_by=None if colour == "(none)" else colour,
            values=values,
            thumbnails=40 if thumbnails else 0,
        )
    return state.maps[key]


def build(state: AppState, tab: gr.Tab) -> None:
    """The Map tab's components and wiring (inside a gr.Blocks context)."""
    with gr.Row():
        colour = gr.Dropdown(
            colour_choices(state), value="(none)", label="Colour by", scale=2, allow_custom_value=True
        )
        thumbnails = gr.Checkbox(value=False, label="Galaxy thumbnails on the map")
        draw = gr.Button("Draw map", variant="primary", elem_id="map-button")
    note = gr.Markdown(elem_id="map-note")
    gr.Markdown("Click a point to see that galaxy; click two corners to select the galaxies in a box.")
    with gr.Row():
        picture = gr.Image(label="UMAP of the embeddings", interactive=False, elem_id="map-image", scale=3)
        with gr.Column(scale=1):
            clicked = gr.Image(label="Clicked galaxy", interactive=False, height=CLICKED_SIDE)
            info = gr.Markdown(elem_id="map-info")
    corner = gr.State(None)
    drawn = gr.State(False)
    selection = gr.Gallery(
        label="Selected galaxies", columns=8, height="auto", allow_preview=False, elem_id="map-selection"
    )

    def show(colour_name: str, with_thumbnails: bool):
        try:
            return _picture(state, colour_name, with_thumbnails).image, None, True
        except GalsearchError as exc:
            raise gr.Error(str(exc)) from None

    def opened(colour_name: str, with_thumbnails: bool, shown: bool):
        choices = gr.Dropdown(choices=colour_choices(state))  # new columns, sessions
        text = first_map_note(state)
        if shown or text:  # a map on screen already, or none that draws at once
            return choices, text, gr.skip(), gr.skip(), gr.skip()
        return choices, text, *show(colour_name, with_thumbnails)

    # One map event at a time, in order: a map drawn on opening never lands over one asked for since.
    queued = {"concurrency_id": "map", "concurrency_limit": 1}
    draw.click(show, [colour, thumbnails], [picture, corner, drawn], api_name="map", **queued).then(
        lambda: "", None, note, api_name=False, queue=False
    )
    tab.select(
        opened, [colour, thumbnails, drawn], [colour, note, picture, corner, drawn], api_name=False, **queued
    )

    def click(colour_name: str, with_thumbnails: bool, first, evt: gr.SelectData):
        current = _picture(state, colour_name, with_thumbnails)
        x, y = evt.index
        row = current.nearest(x, y)
        image = stamp(state.collection().images[row], CLICKED_SIDE)
        if first is None:
            return (
                image,
                f"**{state.caption(row)}** · first corner set: click the opposite corner",
                (x, y),
                gr.skip(),
            )
        rows = current.rows_in_box(first, (x, y))
        text = (
            f"**{state.caption(row)}** · {len(rows)} galaxies in the box (showing {min(len(rows), SELECTED)})"
        )
        return image, text, None, state.gallery(rows[:SELECTED])

    picture.select(click, [colour, thumbnails, corner], [clicked, info, corner, selection])
