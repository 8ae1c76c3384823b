"""The page's band picker: which three of an N-band collection's bands its pictures show as red, green and
blue (the collection's display mapping, used by every picture of the page, the map and `map --png`)."""

from __future__ import annotations

import gradio as gr

from galsearch.embedder import GalsearchError, open_collection

from .state import AppState

COLOURS = ("Red", "Green", "Blue")


def build(state: AppState) -> None:
    """The picker (inside a gr.Blocks context; elem_id ``bands``), shown for collections whose bands are
    named or more than three."""
    coll = state.collection()
    shown = len(coll.bands) > 3 or bool(coll.preprocessing.get("bands"))
    with gr.Accordion("Bands shown", open=False, visible=shown, elem_id="bands"):
        with gr.Row(equal_height=True):
            pickers = [
                gr.Dropdown(coll.bands, value=band, label=colour, scale=1, elem_id=f"bands-{colour.lower()}")
                for colour, band in zip(COLOURS, coll.display_rgb, strict=True)
            ]
            show = gr.Button("Show these bands", scale=1, elem_id="bands-show")
        note = gr.Markdown(elem_id="bands-status")

    def choose(red: str, green: str, blue: str) -> str:
        try:  # a fresh Collection: the shared one is read by other requests meanwhile
            open_collection(state.path).set_display([red, green, blue])
        except GalsearchError as exc:
            raise gr.Error(str(exc)) from None
        return (
            f"Pictures show **{red}, {green}, {blue}** as red, green, blue from the next search, rating or "
            "map on, for everyone using this collection."
        )

    show.click(choose, pickers, note, api_name=False)
