"""The galsearch web page: pick a galaxy, see its nearest neighbours (layout and wiring only)."""

from __future__ import annotations

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: no phoning home

from pathlib import Path

import gradio as gr
import numpy as np

from embedder import Collection, GalsearchError, describe, open_collection
from index import similar

SAMPLE_SIZE = 48
DISPLAY_SIDE = 160  # stamps are enlarged with whole pixels to about this side, so structure is visible


def _display(image: np.ndarray) -> np.ndarray:
    """A stored uint8 stamp enlarged by pixel repetition, as RGB."""
    factor = max(1, DISPLAY_SIDE // image.shape[0])
    image = image.repeat(factor, axis=0).repeat(factor, axis=1)
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image


def _caption(coll: Collection, row: int, extra: str = "") -> str:
    record = coll.catalog.iloc[row]
    label = f" · {record['class_name']}" if "class_name" in record else ""
    return f"{record['id']}{label}{extra}"


def build_app(collection: str | Path) -> gr.Blocks:
    """The search page for one collection."""
    coll = open_collection(collection)
    images = coll.images
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(len(coll), size=min(SAMPLE_SIZE, len(coll)), replace=False))
    encoder = describe(coll.encoder) if coll.encoder else "no encoder yet"

    def pick(evt: gr.SelectData) -> str:
        return str(coll.catalog["id"].iloc[sample[evt.index]])

    def search(galaxy_id: str, k: float) -> tuple[np.ndarray, list[tuple[np.ndarray, str]]]:
        try:
            found = similar(coll, galaxy_id.strip(), int(k))
            row = int(coll.rows_of(galaxy_id.strip())[0])
        except GalsearchError as exc:
            raise gr.Error(str(exc)) from None
        rows = coll.rows_of(found["id"].tolist())
        score = found["similarity" if "similarity" in found else "distance"]
        gallery = [
            (_display(images[r]), _caption(coll, r, f" · {s:.3f}")) for r, s in zip(rows, score, strict=True)
        ]
        return _display(images[row]), gallery

    with gr.Blocks(title=f"galsearch · {coll.manifest['name']}") as app:
        gr.Markdown(
            f"## galsearch · {coll.manifest['name']}\n{len(coll)} galaxies · "
            f"{coll.counts['embedded']} embedded with {encoder}. Click a galaxy or type its id."
        )
        with gr.Row():
            with gr.Column(scale=3):
                picker = gr.Gallery(
                    value=[(_display(images[r]), _caption(coll, r)) for r in sample],
                    label="Pick a galaxy",
                    columns=8,
                    height=420,
                    allow_preview=False,
                )
            with gr.Column(scale=1):
                galaxy_id = gr.Textbox(
                    label="Galaxy id", placeholder="e.g. " + str(coll.catalog["id"].iloc[0])
                )
                k = gr.Slider(1, 48, value=12, step=1, label="Neighbours")
                go = gr.Button("Find similar", variant="primary")
                query = gr.Image(label="Query", interactive=False, height=200)
        neighbours = gr.Gallery(label="Most similar (with similarity or distance)", columns=6, height="auto")
        picker.select(pick, None, galaxy_id).then(search, [galaxy_id, k], [query, neighbours])
        go.click(search, [galaxy_id, k], [query, neighbours], api_name="similar")
        galaxy_id.submit(search, [galaxy_id, k], [query, neighbours])
    return app


def serve(collection: str | Path, host: str = "127.0.0.1", port: int | None = None) -> None:
    """Serve the search page for ``collection`` until interrupted."""
    build_app(collection).launch(server_name=host, server_port=port)
