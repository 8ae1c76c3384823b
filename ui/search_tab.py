"""Search tab: pick a galaxy (gallery, id, RA/Dec or an uploaded image), see and download its neighbours."""

from __future__ import annotations

import gradio as gr
import numpy as np
import pandas as pd

from galsearch.embedder import GalsearchError
from galsearch.index import search, write_results

from . import label_bar
from .samp import SERVER_SIDE, point_at, send_table
from .state import DOWNLOADS, AppState, ids_in, json_records, readable

SAMPLE_SIZE = 48
PICKER_COLUMNS = 6  # so that a stamp is wide enough for its whole id
QUERY_SIDE = 220  # pixels of the query galaxy
UPLOAD_TYPES = [".fits", ".fit", ".fts", ".fz", ".png", ".jpg", ".jpeg"]
SHOWN_COLUMNS = 8  # catalog columns in the results table besides rank, id and score


def _degrees(text: str | float | None, name: str) -> float | None:
    if text is None or str(text).strip() == "":
        return None
    try:
        return float(text)
    except ValueError:
        raise gr.Error(f"{name} is a number of degrees, got {text!r}") from None


def build(state: AppState) -> tuple[gr.Row, gr.Dataframe]:
    """The Search tab's components and wiring (inside a gr.Blocks context); returns its SAMP row and its
    results table (the map rings the galaxies in it)."""
    coll = state.collection()
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(len(coll), size=min(SAMPLE_SIZE, len(coll)), replace=False))
    with gr.Row():
        with gr.Column(scale=3):
            picker = gr.Gallery(
                value=lambda: state.gallery(sample),  # at each page load: in the bands shown now
                label="Pick a galaxy",
                columns=PICKER_COLUMNS,
                height=420,
                allow_preview=False,
                elem_id="galaxy-picker",
            )
        with gr.Column(scale=2):
            first_id = str(coll.catalog_rows([0], ["id"])["id"].iloc[0])
            galaxy_id = gr.Textbox(label="Galaxy id", placeholder=f"e.g. {first_id}")
            with gr.Row():
                ra = gr.Textbox(label="RA (deg)", placeholder="189.2")
                dec = gr.Textbox(label="Dec (deg)", placeholder="62.2")
                radius = gr.Number(label="radius (arcsec)", value=5.0)
            upload = gr.File(
                label="…or an image (FITS, PNG, JPEG)",
                file_types=UPLOAD_TYPES,
                type="filepath",
                elem_id="query-file",
            )
            positives = gr.Textbox(label="More like these (ids)", placeholder="id1, id2")
            negatives = gr.Textbox(label="Less like these (ids)", placeholder="id3")
            where = gr.Textbox(label="Filter", placeholder="mag < 21 and class_name != 'hdf'")
            k = gr.Slider(1, 60, value=12, step=1, label="Neighbours")
            with gr.Row():
                go = gr.Button("Search", variant="primary", elem_id="search-button")
                add_positive = gr.Button("+ add query")
                add_negative = gr.Button("- add query")
    with gr.Row():
        query = gr.Image(label="Query", interactive=False, height=QUERY_SIDE, scale=1, elem_classes="galaxy")
        neighbours = gr.Gallery(label="Most similar", columns=6, height="auto", scale=5, elem_id="neighbours")
    table = gr.Dataframe(
        headers=["rank", "id"], label="Results", interactive=False, wrap=True, elem_id="results"
    )
    labels = label_bar.build(state, "search", "the results")
    with gr.Row():
        fmt = gr.Radio(list(DOWNLOADS), value="CSV", label="Download as")
        download = gr.File(label="Results file", interactive=False)
    with gr.Row(visible=False) as samp_row:  # shown by the app when a SAMP hub answers
        to_topcat = gr.Button("Send to TOPCAT", elem_id="samp-send-results", scale=0)
        to_aladin = gr.Button("Show in Aladin", elem_id="samp-point-at", scale=0)
        samp_status = gr.Markdown(elem_id="samp-search-status")
        gr.Markdown(SERVER_SIDE)

    def run(
        galaxy_id, ra_deg, dec_deg, radius_arcsec, image, more_like, less_like, where, k, download_format
    ):
        query = (galaxy_id, ra_deg, dec_deg, radius_arcsec, image, more_like, less_like, where, k)
        found = _search(state, *query)
        return _results(state, found, ids_in(galaxy_id) + ids_in(more_like), download_format)

    def similar(
        galaxy_id: str = "",
        ra_deg: float | None = None,
        dec_deg: float | None = None,
        radius_arcsec: float = 5.0,
        more_like: str = "",
        less_like: str = "",
        where: str = "",
        k: int = 12,
    ) -> dict:
        query = (galaxy_id, ra_deg, dec_deg, radius_arcsec, None, more_like, less_like, where, k)
        found = _search(state, *query)
        return {
            "results": json_records(found),
            "matched": found.attrs.get("matched"),
            "fetched": found.attrs.get("fetched"),
        }

    gr.api(similar, api_name="similar", queue=False)

    inputs = [galaxy_id, ra, dec, radius, upload, positives, negatives, where, k, fmt]
    outputs = [query, neighbours, table, download, labels.ids]
    go.click(run, inputs, outputs, api_name="search", queue=False)
    for box in (galaxy_id, ra, dec, positives, negatives, where):  # Enter in a text field searches
        box.submit(run, inputs, outputs, api_name=False, queue=False)

    def pick(evt: gr.SelectData) -> str:
        return str(state.collection().catalog_rows([sample[evt.index]], ["id"])["id"].iloc[0])

    def follow(found_table: pd.DataFrame, evt: gr.SelectData) -> str:
        return str(found_table["id"].iloc[evt.index])

    picker.select(pick, None, galaxy_id).then(run, inputs, outputs)
    neighbours.select(follow, table, galaxy_id).then(run, inputs, outputs)
    add_positive.click(
        lambda g, p: ", ".join(dict.fromkeys(ids_in(p) + ids_in(g))), [galaxy_id, positives], positives
    )
    add_negative.click(
        lambda g, n: ", ".join(dict.fromkeys(ids_in(n) + ids_in(g))), [galaxy_id, negatives], negatives
    )

    def send_results(found_table: pd.DataFrame | None) -> str:
        if found_table is None or "id" not in found_table or found_table.empty:
            raise gr.Error("Search first: the results table is what is sent.")
        try:
            results, name = _full_results(state, found_table), f"galsearch search of {state.path.name}"
            return send_table(results, name, state.download("neighbours.xml"))
        except GalsearchError as exc:
            raise gr.Error(str(exc)) from None

    def show_in_aladin(galaxy: str, ra_deg: str, dec_deg: str, found_table: pd.DataFrame | None) -> str:
        ra_deg, dec_deg = _degrees(ra_deg, "RA"), _degrees(dec_deg, "Dec")
        try:
            if not ids_in(galaxy) and ra_deg is not None and dec_deg is not None:
                return point_at(ra_deg, dec_deg)
            ids = ids_in(galaxy) or (found_table["id"].head(1).tolist() if found_table is not None else [])
            if not ids:
                raise gr.Error("Choose a galaxy first: click one, type its id, or give RA and Dec.")
            return point_at(*_position(state, str(ids[0])))
        except GalsearchError as exc:
            raise gr.Error(str(exc)) from None

    to_topcat.click(send_results, table, samp_status, api_name="samp_send_results", queue=False)
    to_aladin.click(
        show_in_aladin, [galaxy_id, ra, dec, table], samp_status, api_name="samp_point_at", queue=False
    )
    return samp_row, table


def _search(
    state: AppState, galaxy_id, ra_deg, dec_deg, radius_arcsec, image, more_like, less_like, where, k
) -> pd.DataFrame:
    """The neighbours of what the page (or the API) names, or a gr.Error that says what is wrong."""
    ids = ids_in(galaxy_id) + ids_in(more_like)
    ra_deg, dec_deg = _degrees(ra_deg, "RA"), _degrees(dec_deg, "Dec")
    position = ra_deg is not None and dec_deg is not None
    if not (ids or image or position):
        raise gr.Error("Choose a galaxy: click one, type its id, give RA and Dec, or upload an image.")
    try:
        return search(
            state.collection(),
            ids=ids,
            negative_ids=ids_in(less_like),
            image=image,
            ra=ra_deg if position else None,
            dec=dec_deg if position else None,
            radius_arcsec=radius_arcsec or 5.0,
            where=where or None,
            k=int(k),
        )
    except GalsearchError as exc:
        raise gr.Error(str(exc)) from None


def _full_results(state: AppState, shown: pd.DataFrame) -> pd.DataFrame:
    """The shown results (rank, id, score, some columns) with every catalog column, for export."""
    coll = state.collection()
    own = [c for c in shown.columns if c == "id" or c not in coll.columns]
    ids = shown["id"].astype(str)
    found = coll.find_rows(ids.tolist())
    records = coll.catalog_rows(found[found >= 0]).set_index("id")
    return shown[own].astype({"id": str}).join(records, on="id")


def _position(state: AppState, galaxy: str) -> tuple[float, float]:
    """The catalogued (ra, dec) of ``galaxy``."""
    coll = state.collection()
    if not {"ra", "dec"} <= set(coll.columns):
        raise gr.Error(
            f"The catalog of {coll.path} has no ra/dec columns: its galaxies have no place on the sky."
        )
    record = coll.catalog_rows(coll.rows_of(galaxy), ["ra", "dec"]).iloc[0]
    return float(record["ra"]), float(record["dec"])


def _results(state: AppState, found: pd.DataFrame, ids: list[str], fmt_name: str):
    coll = state.collection()
    rows = coll.rows_of(found["id"].tolist())
    score = "similarity" if "similarity" in found else "distance"
    gallery = state.gallery(rows, [f" · {s:.3f}" for s in found[score]])
    matched = found.attrs.get("matched")
    anchor = ids[0] if ids else matched["id"] if matched else None
    query = coll.rgb(int(coll.rows_of(anchor)[0])) if anchor else None
    fmt, suffix = DOWNLOADS[fmt_name]
    path = state.download(f"neighbours{suffix}")
    write_results(found, path, fmt)
    shown = [c for c in found.columns if c not in ("rank", "id", score)][:SHOWN_COLUMNS]
    table = readable(found[["rank", "id", score, *shown]])
    return query, gallery, table, str(path), ", ".join(found["id"].astype(str))
