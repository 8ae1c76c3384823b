"""The label bar under the app's galleries: label the galaxies shown (or some of them) as a class in a
label set, unlabel them, or undo your latest labelling; every tab fills its galaxy box with what it shows."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from galsearch.anomaly.labels import check_ids, label_store
from galsearch.embedder import GalsearchError

from .state import AppState, ids_in, user_of

DEFAULT_SET = "labels"


def set_names(state: AppState) -> list[str]:
    """The collection's label sets, or the default name when it has none."""
    return label_store(state.path).sets()["set"].tolist() or [DEFAULT_SET]


@dataclass
class LabelBar:
    """The boxes of a label bar that a tab fills: the galaxies, the label set and the class."""

    ids: gr.Textbox | gr.State
    label_set: gr.Dropdown
    label: gr.Textbox


def build(state: AppState, key: str, what: str, selection: gr.State | None = None) -> LabelBar:
    """A label bar (inside a gr.Blocks context; elem_ids ``KEY-labels`` and ``KEY-labels-status``) for the
    galaxies ``what`` names, e.g. "the results": typed in its box, or those of ``selection`` (a list of
    ids) when given."""
    with gr.Row(equal_height=True, elem_id=f"{key}-labels"):
        if selection is None:
            ids = gr.Textbox(label=f"Galaxies to label ({what}; ids, comma-separated)", scale=4, max_lines=3)
        else:
            ids = selection
            gr.Markdown(f"Label {what}:")
        sets = set_names(state)
        label_set = gr.Dropdown(sets, value=sets[0], label="Label set", allow_custom_value=True, scale=1)
        label_name = gr.Textbox(label="Class", placeholder="e.g. ring", scale=1)
        label_button = gr.Button("Label", variant="primary", scale=0, min_width=80)
        unlabel_button = gr.Button("Unlabel", scale=0, min_width=80)
        undo_button = gr.Button("Undo", scale=0, min_width=80)
    status = gr.Markdown(elem_id=f"{key}-labels-status")

    def label(label_set: str, ids: str | list[str], label: str, request: gr.Request) -> str:
        galaxies = ids_in(ids)
        try:
            check_ids(state.collection(), galaxies)
            stored = label_store(state.path).label(
                label_set, galaxies, (label or "").strip(), user_of(request)
            )
        except GalsearchError as exc:
            raise gr.Error(str(exc)) from None
        return f"labelled {stored} galax{'y' if stored == 1 else 'ies'} as **{label}** in set **{label_set}**"

    def unlabel(label_set: str, ids: str | list[str], request: gr.Request) -> str:
        try:
            removed = label_store(state.path).unlabel(label_set, ids_in(ids), user_of(request))
        except GalsearchError as exc:
            raise gr.Error(str(exc)) from None
        return f"removed {removed} label{'' if removed == 1 else 's'} from set **{label_set}**"

    def undo_label(label_set: str, request: gr.Request) -> str:
        try:
            undone = label_store(state.path).undo(label_set, user_of(request))
        except GalsearchError as exc:
            raise gr.Error(str(exc)) from None
        if undone is None:
            return f"nothing of yours to undo in set **{label_set}**"
        what = "labels" if undone["label"].notna().all() else "removals"
        return f"undid your latest action in **{label_set}**: {len(undone)} {what}"

    label_button.click(label, [label_set, ids, label_name], status, api_name="label", queue=False)
    unlabel_button.click(unlabel, [label_set, ids], status, api_name="unlabel", queue=False)
    undo_button.click(undo_label, label_set, status, api_name="undo_label", queue=False)
    return LabelBar(ids, label_set, label_name)
