"""Fine-tune tab: labels from a file or typed in the page, train a head, see metrics, apply it, browse."""

from __future__ import annotations

import gradio as gr
import numpy as np
import pandas as pd

from embedder import GalsearchError
from embedder.training.finetune import FinetuneConfig, finetune, learning_curve, predict, summarize_curve
from embedder.training.heads import head_folder
from embedder.training.labels import read_labels
from embedder.training.plots import plot_learning_curve

from .state import AppState, readable

LABEL_TYPES = [".csv", ".fits", ".fit", ".xml", ".vot"]
BROWSE = 24
TRACK_TQDM = gr.Progress(track_tqdm=True)  # training's own tqdm bars become the page's progress bar


def _labels_table(file: str | None, typed: pd.DataFrame | None) -> pd.DataFrame | str:
    if file:
        return file
    typed = (typed if typed is not None else pd.DataFrame()).replace("", np.nan).dropna(how="all")
    if typed.empty:
        raise gr.Error("Upload a label file (CSV/FITS/VOTable with id and label columns) or type labels.")
    return typed


def build(state: AppState) -> None:
    """The Fine-tune tab's components and wiring (inside a gr.Blocks context)."""
    with gr.Row():
        with gr.Column():
            labels_file = gr.File(
                label="Label file (id + label columns)",
                file_types=LABEL_TYPES,
                type="filepath",
                elem_id="labels-file",
            )
            typed = gr.Dataframe(
                headers=["id", "label"],
                datatype=["str", "str"],
                row_count=4,
                column_count=2,
                label="…or type labels here",
                interactive=True,
            )
        with gr.Column():
            task = gr.Radio(["classify", "binary", "regress"], value="classify", label="Task")
            head = gr.Radio(["linear", "mlp"], value="linear", label="Head")
            unfreeze = gr.Slider(
                0, 6, value=0, step=1, label="Encoder groups to unfreeze (0: frozen embeddings)"
            )
            name = gr.Textbox(value="labels", label="Head name")
            train = gr.Button("Train", variant="primary", elem_id="train-button")
    metrics = gr.Markdown(elem_id="finetune-metrics")
    with gr.Row():
        confusion = gr.Image(label="Confusion matrix", interactive=False)
        roc = gr.Image(label="ROC", interactive=False)
    with gr.Row():
        sizes = gr.Textbox(value="5,10,30", label="Learning curve: labels per class")
        curve_button = gr.Button("Learning curve")
    curve_plot = gr.Image(label="Learning curve", interactive=False)
    curve_table = gr.Dataframe(interactive=False, label="Learning curve")
    gr.Markdown("### Apply to the collection")
    with gr.Row():
        apply = gr.Button("Apply head to every galaxy", elem_id="apply-button")
        browse_class = gr.Textbox(label="Browse the galaxies most likely of class", placeholder="e.g. ring")
    applied = gr.Markdown(elem_id="apply-status")
    predictions = gr.Gallery(columns=8, height="auto", allow_preview=False, label="Predictions")

    def run(file, table, task_name, kind, groups, head_name, progress=TRACK_TQDM):
        coll = state.collection()
        try:
            labels = read_labels(_labels_table(file, table), coll, task_name)
            result = finetune(
                coll,
                labels,
                FinetuneConfig(head=kind, unfreeze=int(groups)),
                name=(head_name or "").strip(),
                progress=True,
            )
        except GalsearchError as exc:
            raise gr.Error(str(exc)) from None
        text = result.summary().replace("\n", "  \n")
        folder = result.folder
        pictures = [str(folder / f) if (folder / f).is_file() else None for f in ("confusion.png", "roc.png")]
        return text, *pictures

    train.click(
        run, [labels_file, typed, task, head, unfreeze, name], [metrics, confusion, roc], api_name="finetune"
    )

    def curve(file, table, task_name, kind, groups, head_name, label_counts, progress=TRACK_TQDM):
        coll = state.collection()
        try:
            counts = [int(v) for v in label_counts.split(",")]
        except ValueError:
            raise gr.Error("Label counts are comma-separated numbers, e.g. 10,30,100.") from None
        try:
            folder = head_folder(coll, (head_name or "").strip())
            labels = read_labels(_labels_table(file, table), coll, task_name)
            config = FinetuneConfig(head=kind, unfreeze=int(groups))
            summary = summarize_curve(
                learning_curve(coll, labels, counts, config, draws=3, progress=True), task_name
            )
        except GalsearchError as exc:
            raise gr.Error(str(exc)) from None
        folder.mkdir(parents=True, exist_ok=True)
        metric = "rmse" if task_name == "regress" else "balanced_accuracy"
        return str(plot_learning_curve(summary, metric, folder / "learning_curve.png")), readable(summary)

    curve_button.click(
        curve,
        [labels_file, typed, task, head, unfreeze, name, sizes],
        [curve_plot, curve_table],
        api_name="curve",
    )

    def apply_head(head_name: str, wanted: str):
        try:
            columns = predict(state.collection(), (head_name or "").strip())
        except GalsearchError as exc:
            raise gr.Error(str(exc)) from None
        note = f"wrote columns {', '.join(columns)} for every galaxy"
        return note, browse(head_name, wanted)

    def browse(head_name: str, wanted: str):
        coll = state.collection()
        head_name = (head_name or "").strip()
        column = f"{head_name}_prob_{wanted.strip()}" if wanted and wanted.strip() else f"{head_name}_prob"
        if column not in coll.columns:
            raise gr.Error(f"no column {column}: apply the head first, and name one of its classes")
        probability = coll.catalog_columns([column])[column].to_numpy(dtype=float)
        rows = np.argsort(-probability, kind="stable")[:BROWSE]
        return state.gallery(rows, [f" · p={probability[r]:.2f}" for r in rows])

    apply.click(apply_head, [name, browse_class], [applied, predictions], api_name="apply_head")
    browse_class.submit(browse, [name, browse_class], predictions)
