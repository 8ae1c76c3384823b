"""The web app's HTTP API: the named endpoints it documents, and nothing else.

Every event of the page is an endpoint of Gradio's API; :func:`publish` keeps those named in
:data:`ENDPOINTS` (with their descriptions) and makes every other one private, so that
``/gradio_api/info`` and ``gradio_client`` see a short, stable list. The page itself still calls the
private ones. Parameters are named after the Python parameters of each endpoint's function.
"""

from __future__ import annotations

import gradio as gr

ENDPOINTS = {
    "search": "Galaxies like one (by id, RA/Dec or an uploaded image), like and unlike others, filtered: "
    "the page's answer (query stamp, gallery, table, results file, ids).",
    "similar": "As search, without an image, answered as JSON (results: rank, id, score and catalog "
    "columns; matched: the galaxy a position matched).",
    "samp_send_results": "Send the search results table to TOPCAT over SAMP (the server's hub).",
    "samp_point_at": "Point Aladin at a galaxy or a position over SAMP.",
    "next": "The next galaxy to rate in a discovery session (JSON: session, rated, next), skipping the "
    "galaxies listed.",
    "rate": "Store a rating (0-5) of a galaxy in a session; returns it and the next galaxy (JSON).",
    "undo": "Remove your latest rating in a session; returns it (or null) and the next galaxy (JSON).",
    "ranking": "The top galaxies of a session by GP interest, with uncertainty and ratings (JSON).",
    "export_ratings": "A session's ratings as a CSV, FITS or VOTable file.",
    "samp_send_ranking": "Send a session's ranking to TOPCAT over SAMP.",
    "label": "Label galaxies (comma-separated ids) as a class in a label set.",
    "unlabel": "Remove galaxies from a label set.",
    "undo_label": "Remove your latest labelling action in a label set.",
    "finetune": "Train a classifier from a ratings session, a label set or a label file; cross-validated "
    "metrics, predictions for every galaxy and the top candidates.",
    "curve": "A learning curve: test metrics of heads trained on N labels per class.",
    "predict": "Apply a trained head to every galaxy and show the most likely members of a class.",
    "suspects": "The labels of a set or file that cross-validated heads doubt most (confident learning).",
    "map": "Draw the interactive map (UMAP of the embeddings) coloured by a column, a head or a session.",
    "stamp": "A galaxy's stamp as a PNG data URI (the map's hover).",
    "select_on_map": "Select the galaxies inside a lasso or box drawn on the map (kept for this session).",
    "search_selection": "The galaxies most like those selected on the map, ringed on the map.",
    "export_selection": "The selected galaxies' catalog rows as a CSV, FITS or VOTable file.",
    "samp_send_selection": "Send the selected galaxies' catalog rows to TOPCAT over SAMP.",
}


def publish(app: gr.Blocks) -> None:
    """Document the endpoints of :data:`ENDPOINTS` and make every other event of ``app`` private."""
    named = set()
    for fn in app.fns.values():
        if fn.api_name in ENDPOINTS:
            fn.api_description = ENDPOINTS[fn.api_name]
            named.add(fn.api_name)
        else:
            fn.api_visibility = "private"
    missing = set(ENDPOINTS) - named
    if missing:
        raise RuntimeError(f"the app defines no endpoint named {sorted(missing)}")
