"""Classify tab: ratings, a label set or a label file to a classifier in one click — cross-validated
metrics, predictions for every galaxy, the top candidates not yet labelled, and the labels it doubts."""

from __future__ import annotations

import gradio as gr
import numpy as np
import pandas as pd

from galsearch.anomaly import ratings_store
from galsearch.anomaly.classifier import labels_from_ratings, labels_from_set, suspects, train_classifier
from galsearch.embedder import GalsearchError
from galsearch.embedder.storage import safe_name
from galsearch.embedder.training.finetune import FinetuneConfig, learning_curve, predict, summarize_curve
from galsearch.embedder.training.heads import head_folder
from galsearch.embedder.training.labels import Labels, read_labels
from galsearch.embedder.training.plots import plot_learning_curve
from galsearch.index import write_results

from . import label_bar
from .samp import SERVER_SIDE, send_table
from .state import DOWNLOADS, AppState, readable

SOURCES = {"ratings": "a ratings session", "set": "a label set", "file": "a label file or typed labels"}
LABEL_TYPES = [".csv", ".fits", ".fit", ".xml", ".vot"]
SHOWN = 24  # galaxies in the candidates and suspects galleries
CANDIDATES = 100  # candidates listed (table, export, SAMP)
DOUBTS = 50  # doubtful labels listed
SUSPECT_COLUMNS = ["id", "label", "predicted", "probability", "issue"]  # the doubtful labels table
FOLDS = 5
TRACK_TQDM = gr.Progress(track_tqdm=True)  # training's own tqdm bars become the page's progress bar


def _choices(state: AppState) -> tuple[list[str], list[str]]:
    sessions = ratings_store(state.path).sessions()["session"].tolist()
    return sessions, label_bar.set_names(state)


def build(state: AppState, tab: gr.Tab) -> tuple[gr.Row, gr.Textbox]:
    """The Classify tab's components and wiring (inside a gr.Blocks context); returns its SAMP row and the
    hidden box that holds the probability column of the last head trained (the map colours by it)."""
    sessions, sets = _choices(state)
    with gr.Row():
        with gr.Column():
            source = gr.Radio(
                [(text, key) for key, text in SOURCES.items()],
                value="ratings" if sessions else "set",
                label="Train on",
            )
            with gr.Row():
                session = gr.Dropdown(
                    sessions,
                    value=sessions[0] if sessions else None,
                    label="Session",
                    allow_custom_value=True,
                )
                positive_at = gr.Slider(
                    1, 5, value=4, step=0.5, label="Ratings at or above this are positive"
                )
            label_set = gr.Dropdown(
                sets, value=sets[0], label="Label set", allow_custom_value=True, elem_id="classify-set"
            )
            labels_file = gr.File(
                label="Label file (id + label columns)",
                file_types=LABEL_TYPES,
                type="filepath",
                elem_id="labels-file",
            )
            typed = gr.Dataframe(
                headers=["id", "label"],
                datatype=["str", "str"],
                row_count=3,
                column_count=2,
                label="…or type labels here",
                interactive=True,
            )
        with gr.Column():
            task = gr.Radio(["classify", "binary"], value="classify", label="Task (label sets and files)")
            head = gr.Radio(["linear", "mlp"], value="linear", label="Head")
            unfreeze = gr.Slider(
                0, 6, value=0, step=1, label="Encoder groups to unfreeze (0: frozen embeddings)"
            )
            with gr.Row():
                auto = gr.Checkbox(value=False, label="--auto: search the settings")
                budget = gr.Number(value=120, label="time budget (s)", minimum=10)
            name = gr.Textbox(label="Head name (default: the session, set or 'labels')", elem_id="head-name")
            target = gr.Textbox(
                label="Candidates of class (default: the positive or rarest class)",
                elem_id="candidates-class",
            )
            train = gr.Button("Train classifier", variant="primary", elem_id="train-button")
    metrics = gr.Markdown(elem_id="classifier-metrics")
    with gr.Row():
        confusion = gr.Image(label="Confusion matrix (cross-validated)", interactive=False)
        roc = gr.Image(label="ROC (cross-validated)", interactive=False)
    column = gr.Textbox(visible=False)
    gr.Markdown("### Top candidates not yet labelled or rated")
    candidates = gr.Gallery(
        columns=8, height="auto", allow_preview=False, label="Candidates", elem_id="candidates"
    )
    candidates_table = gr.Dataframe(
        headers=["id", "probability"], interactive=False, label="Candidates", elem_id="candidates-table"
    )
    with gr.Row():
        fmt = gr.Radio(list(DOWNLOADS), value="CSV", label="Download candidates as")
        download = gr.File(label="Candidates file", interactive=False)
    with gr.Row(visible=False) as samp_row:  # shown by the app when a SAMP hub answers
        to_topcat = gr.Button("Send candidates to TOPCAT", elem_id="samp-send-candidates", scale=0)
        samp_status = gr.Markdown()
        gr.Markdown(SERVER_SIDE)
    candidate_labels = label_bar.build(state, "candidates", "the candidates")
    gr.Markdown(
        "### Doubtful labels\nEvery label is predicted by heads that did not train on it; those they "
        "disagree with most come first (confident learning). Labels the encoder was trained with are "
        "echoed back by its embeddings and cannot be doubted: embed with an encoder that never saw them."
    )
    find = gr.Button("Find doubtful labels", elem_id="suspects-button")
    suspects_note = gr.Markdown()
    doubtful = gr.Gallery(
        columns=8, height="auto", allow_preview=False, label="Doubtful labels", elem_id="suspects"
    )
    doubtful_table = gr.Dataframe(
        headers=SUSPECT_COLUMNS, interactive=False, label="Doubtful labels", elem_id="suspects-table"
    )
    gr.Markdown(
        "Click a doubtful galaxy to put it and its predicted class in the bar below: **Label** relabels it."
    )
    relabel = label_bar.build(state, "suspects", "clicked doubtful labels")
    with gr.Accordion("Learning curve", open=False):
        with gr.Row():
            sizes = gr.Textbox(value="5,10,30", label="Labels per class")
            curve_button = gr.Button("Learning curve")
        curve_plot = gr.Image(label="Learning curve", interactive=False)
        curve_table = gr.Dataframe(interactive=False, label="Learning curve")
    with gr.Accordion("Apply a saved head", open=False):
        with gr.Row():
            apply_name = gr.Textbox(label="Head name")
            browse_class = gr.Textbox(
                label="Browse the galaxies most likely of class", placeholder="e.g. ring"
            )
            apply = gr.Button("Apply head to every galaxy", elem_id="apply-button")
        applied = gr.Markdown(elem_id="apply-status")
        predictions = gr.Gallery(columns=8, height="auto", allow_preview=False, label="Predictions")

    def labels_of(
        source, session, positive_at, label_set, label_file, typed_labels, task
    ) -> tuple[Labels, str]:
        """The labels the form names, and the default head name."""
        coll = state.collection()
        if source == "ratings":
            if not session:
                raise GalsearchError(
                    "Rate some galaxies in the Discover tab first, or choose another source."
                )
            return labels_from_ratings(coll, session, float(positive_at)), session
        if source == "set":
            return labels_from_set(coll, (label_set or "").strip(), task), label_set
        return read_labels(_labels_table(label_file, typed_labels), coll, task), "labels"

    # The inputs of every training event (finetune, suspects, curve): the labels (as labels_of reads them),
    # then the head; each event's function takes them first, in this order, and names them in the API.
    training = [source, session, positive_at, label_set, labels_file, typed, task, head, unfreeze]

    def finetune(
        source,
        session,
        positive_at,
        label_set,
        label_file,
        typed_labels,
        task,
        head,
        unfreeze,
        auto,
        time_budget,
        head_name,
        candidates_class,
        download_format,
        progress=TRACK_TQDM,
    ):
        coll = state.collection()
        try:
            labels, default = labels_of(
                source, session, positive_at, label_set, label_file, typed_labels, task
            )
            result = train_classifier(
                coll,
                labels,
                safe_name((head_name or "").strip() or default, "labels"),
                FinetuneConfig(head=head, unfreeze=int(unfreeze)),
                folds=FOLDS,
                auto_budget_s=float(time_budget) if auto else None,
                candidates=CANDIDATES,
                target=(candidates_class or "").strip() or None,
                progress=True,
            )
        except GalsearchError as exc:
            raise gr.Error(str(exc)) from None
        folder = result.finetune.folder
        pictures = [state.shown_copy(folder / f) for f in ("confusion.png", "roc.png")]
        found = result.candidates
        fmt, suffix = DOWNLOADS[download_format]
        path = state.download(f"candidates-{folder.name}{suffix}")
        write_results(found, path, fmt)
        shown = found.head(SHOWN)
        gallery = state.gallery(
            coll.rows_of(shown["id"].tolist()), [f" · p={p:.2f}" for p in shown["probability"]]
        )
        text = result.finetune.summary().replace("\n", "  \n")
        text += f"  \ncandidates: the galaxies most probably **{result.target}** among those not labelled"
        ids = ", ".join(shown["id"].astype(str))
        return text, *pictures, result.probability_column, gallery, _table(found), str(path), ids

    train.click(
        finetune,
        [*training, auto, budget, name, target, fmt],
        [metrics, confusion, roc, column, candidates, candidates_table, download, candidate_labels.ids],
        api_name="finetune",
    )

    def send_candidates(found: pd.DataFrame | None) -> str:
        if found is None or "id" not in found or found.empty:
            raise gr.Error("Train a classifier first: its candidates are what is sent.")
        try:
            return send_table(
                found, f"galsearch candidates of {state.path.name}", state.download("candidates.xml")
            )
        except GalsearchError as exc:
            raise gr.Error(str(exc)) from None

    to_topcat.click(send_candidates, candidates_table, samp_status, queue=False)

    def find_suspects(
        source,
        session,
        positive_at,
        label_set,
        label_file,
        typed_labels,
        task,
        head,
        unfreeze,
        progress=TRACK_TQDM,
    ):
        coll = state.collection()
        try:
            labels, _ = labels_of(source, session, positive_at, label_set, label_file, typed_labels, task)
            found = suspects(
                coll, labels, DOUBTS, FinetuneConfig(head=head, unfreeze=int(unfreeze)), FOLDS, True
            )
        except GalsearchError as exc:
            raise gr.Error(str(exc)) from None
        shown = found.head(SHOWN)
        extras = [
            f" · {given} → {pred} p={p:.2f}"
            for given, pred, p in zip(shown["label"], shown["predicted"], shown["probability"], strict=True)
        ]
        notes = " ".join(found.attrs["notes"])
        note = f"{found.attrs['issues']} of the {len(labels)} labels are flagged as label issues. {notes}"
        gallery = state.gallery(coll.rows_of(shown["id"].tolist()), extras)
        return note, gallery, readable(found[SUSPECT_COLUMNS])

    find.click(find_suspects, training, [suspects_note, doubtful, doubtful_table], api_name="suspects")

    def pick(found: pd.DataFrame, evt: gr.SelectData) -> tuple[str, str]:
        row = found.iloc[evt.index]
        return str(row["id"]), str(row["predicted"])

    doubtful.select(pick, doubtful_table, [relabel.ids, relabel.label])

    def curve(
        source,
        session,
        positive_at,
        label_set,
        label_file,
        typed_labels,
        task,
        head,
        unfreeze,
        head_name,
        label_counts,
        progress=TRACK_TQDM,
    ):
        coll = state.collection()
        try:
            counts = [int(v) for v in label_counts.split(",")]
        except ValueError:
            raise gr.Error("Label counts are comma-separated numbers, e.g. 10,30,100.") from None
        try:
            labels, default = labels_of(
                source, session, positive_at, label_set, label_file, typed_labels, task
            )
            folder = head_folder(coll, safe_name((head_name or "").strip() or default, "labels"))
            config = FinetuneConfig(head=head, unfreeze=int(unfreeze))
            summary = summarize_curve(
                learning_curve(coll, labels, counts, config, draws=3, progress=True), task
            )
        except GalsearchError as exc:
            raise gr.Error(str(exc)) from None
        folder.mkdir(parents=True, exist_ok=True)
        plot = plot_learning_curve(summary, "balanced_accuracy", folder / "learning_curve.png")
        return state.shown_copy(plot), readable(summary)

    curve_button.click(curve, [*training, name, sizes], [curve_plot, curve_table], api_name="curve")

    def apply_head(head_name: str, class_name: str):
        try:
            columns = predict(state.collection(), (head_name or "").strip())
        except GalsearchError as exc:
            raise gr.Error(str(exc)) from None
        return f"wrote columns {', '.join(columns)} for every galaxy", browse(head_name, class_name)

    def browse(head_name: str, class_name: str):
        coll = state.collection()
        head_name = (head_name or "").strip()
        class_name = (class_name or "").strip()
        column = f"{head_name}_prob_{class_name}" if class_name else f"{head_name}_prob"
        if column not in coll.columns:
            raise gr.Error(f"no column {column}: apply the head first, and name one of its classes")
        probability = coll.catalog_columns([column])[column].to_numpy(dtype=float)
        rows = np.argsort(-probability, kind="stable")[:SHOWN]
        return state.gallery(rows, [f" · p={probability[r]:.2f}" for r in rows])

    head_and_class = [apply_name, browse_class]  # what apply_head and browse take
    apply.click(apply_head, head_and_class, [applied, predictions], api_name="predict")
    browse_class.submit(browse, head_and_class, predictions)

    def opened():  # sessions and label sets made since the page loaded
        sessions, sets = _choices(state)
        return gr.Dropdown(choices=sessions), gr.Dropdown(choices=sets)

    tab.select(opened, None, [session, label_set], queue=False)
    return samp_row, column


def _labels_table(file: str | None, typed: pd.DataFrame | None) -> pd.DataFrame | str:
    if file:
        return file
    typed = (typed if typed is not None else pd.DataFrame()).replace("", np.nan).dropna(how="all")
    if typed.empty:
        raise GalsearchError(
            "Upload a label file (CSV/FITS/VOTable with id and label columns) or type labels."
        )
    return typed


def _table(found: pd.DataFrame):
    others = [c for c in found.columns if c not in ("id", "probability", "row")]
    columns = ["id", "probability", *others[:6]]
    return readable(found[columns])
