"""Discover tab: rate galaxies 0-5 (buttons or keys), undo, and watch the ranking of interesting ones."""

from __future__ import annotations

from dataclasses import asdict

import gradio as gr
import pandas as pd

from galsearch.anomaly import Discovery, ratings_store
from galsearch.anomaly.discover import DEFAULT_SESSION, own_session
from galsearch.embedder import GalsearchError
from galsearch.embedder.storage import safe_name

from . import label_bar
from .samp import SERVER_SIDE, send_table
from .state import AppState, json_records, readable, user_of

RANKED = 12
SENT_RANKED = 100  # the ranking sent to TOPCAT goes deeper than the one shown
MAX_RANKED = 1000  # the longest ranking the `ranking` endpoint answers
RATE_SIDE = 320  # pixels of the galaxy being rated
EXPORTS = {"CSV": ".csv", "FITS": ".fits", "VOTable": ".xml"}

# Keys 0-5 rate, u undoes, s skips, while the Discover tab is shown and no text field has the focus.
KEYS_JS = """
<script>
document.addEventListener("keydown", (event) => {
  const target = event.target;
  const typing = ["INPUT", "TEXTAREA"].includes(target?.tagName) || target?.isContentEditable;
  if (typing) return;
  const ids = {u: "undo-button", s: "skip-button"};
  const id = /^[0-5]$/.test(event.key) ? "rate-" + event.key : ids[event.key];
  const button = id && document.getElementById(id);
  if (button && button.offsetParent !== null) { button.click(); event.preventDefault(); }
});
</script>
"""


def build(state: AppState, tab: gr.Tab) -> tuple[gr.Row, gr.Textbox, gr.Dropdown]:
    """The Discover tab's components and wiring (inside a gr.Blocks context); returns its SAMP row, the
    hidden box with the id of the galaxy being rated (the map rings it) and the session chooser (set to
    the user's own session at page load, by :func:`choose_own_session`)."""
    sessions = ratings_store(state.path).sessions()["session"].tolist() or [DEFAULT_SESSION]
    with gr.Row():
        session = gr.Dropdown(sessions, value=sessions[0], label="Session", allow_custom_value=True, scale=2)
        start = gr.Button("Show next galaxy", variant="primary", scale=1, elem_id="discover-start")
    with gr.Row():
        with gr.Column(scale=2):
            current = gr.Image(
                label="Rate this galaxy",
                interactive=False,
                height=RATE_SIDE,
                elem_id="discover-galaxy",
                elem_classes="galaxy",
            )
            info = gr.Markdown()
        with gr.Column(scale=1):
            gr.Markdown("Rate 0 (boring) to 5 (most interesting) — or press the keys **0-5**, **u** to undo.")
            with gr.Row():
                rate_buttons = [gr.Button(str(r), elem_id=f"rate-{r}", min_width=40) for r in range(6)]
            with gr.Row():
                undo = gr.Button("Undo", elem_id="undo-button")
                skip = gr.Button("Skip", elem_id="skip-button")
            status = gr.Markdown(elem_id="discover-status")
    labels = label_bar.build(state, "discover", "the galaxy being rated")
    galaxy = gr.Textbox(visible=False)
    skipped = gr.State([])
    gr.Markdown("### Most interesting so far (GP mean and uncertainty)")
    ranked = gr.Gallery(columns=6, height="auto", allow_preview=False, label="Ranking")
    table = gr.Dataframe(interactive=False, label="Ranking", elem_id="ranking")
    with gr.Row():
        fmt = gr.Radio(list(EXPORTS), value="CSV", label="Export the session's ratings as")
        export = gr.Button("Export")
        exported = gr.File(label="Ratings file", interactive=False)
    with gr.Row(visible=False) as samp_row:  # shown by the app when a SAMP hub answers
        to_topcat = gr.Button(f"Send the top {SENT_RANKED} to TOPCAT", elem_id="samp-send-ranking", scale=0)
        samp_status = gr.Markdown(elem_id="samp-discover-status")
        gr.Markdown(SERVER_SIDE)

    def show(name: str, skip_ids: list[str], note: str, request: gr.Request, fresh: bool = False):
        hunt, lock = _hunt(state, name, request)
        with lock:
            if not fresh:  # pick up ratings made elsewhere (other tabs, users, processes)
                hunt.refresh()
            nxt = hunt.suggest(1, skip=skip_ids).iloc[0]
            ranking = hunt.ranking(RANKED)
        text = (
            f"**{nxt['id']}** · interest {nxt['interest']:.2f} ± {nxt['uncertainty']:.2f} · "
            f"anomaly {nxt['anomaly']:.3g}" + (f" · {nxt['class_name']}" if "class_name" in nxt else "")
        )
        rows = ranking["row"].to_numpy()
        extras = [
            f" · {m:.2f} ± {s:.2f}" for m, s in zip(ranking["interest"], ranking["uncertainty"], strict=True)
        ]
        columns = ["id", "interest", "uncertainty", "rating"] + [c for c in ("class_name",) if c in ranking]
        picture = state.collection().rgb(int(nxt["row"]))
        summary = f"{note}{len(hunt.ratings)} rated in session **{name}**"
        table = readable(ranking[columns], {"interest": 2, "uncertainty": 2})
        gallery = state.gallery(rows, extras)
        return picture, text, str(nxt["id"]), gallery, table, summary, str(nxt["id"])

    outputs = [current, info, galaxy, ranked, table, status, labels.ids]

    def rate(name: str, galaxy_id: str, skip_ids: list[str], score: float, request: gr.Request):
        if not galaxy_id:
            raise gr.Error("Press 'Show next galaxy' first.")
        hunt, lock = _hunt(state, name, request)
        try:
            with lock:
                hunt.rate(galaxy_id, score)
        except GalsearchError as exc:
            raise gr.Error(str(exc)) from None
        return show(name, skip_ids, f"rated {galaxy_id} = {score:g} · ", request, fresh=True)

    def undo_last(name: str, skip_ids: list[str], request: gr.Request):
        hunt, lock = _hunt(state, name, request)
        with lock:
            undone = hunt.undo()
        note = f"undid {undone.galaxy} = {undone.rating:g} · " if undone else "nothing to undo · "
        return show(name, skip_ids, note, request, fresh=True)

    def first(name: str, skip_ids: list[str], request: gr.Request):
        return show(name, skip_ids, "", request)

    def opened(name: str, skip_ids: list[str], galaxy_id: str, request: gr.Request):
        if galaxy_id:  # one is waiting for its rating already
            return (gr.skip(),) * len(outputs)
        return show(name, skip_ids, "", request)

    def rater(score: int):
        def rate_with(name: str, galaxy_id: str, skip_ids: list[str], request: gr.Request):
            return rate(name, galaxy_id, skip_ids, float(score), request)

        return rate_with

    start.click(first, [session, skipped], outputs, api_name=False, queue=False)
    session.input(first, [session, skipped], outputs)
    # On opening the tab, not at page load: a session's loop takes a while to build on a large collection.
    tab.select(opened, [session, skipped, galaxy], outputs, api_name=False)
    for score, button in enumerate(rate_buttons):
        button.click(rater(score), [session, galaxy, skipped], outputs, api_name=False, queue=False)
    undo.click(undo_last, [session, skipped], outputs, api_name=False, queue=False)
    skip.click(lambda g, s: [*s, g] if g else s, [galaxy, skipped], skipped).then(
        first, [session, skipped], outputs
    )

    def export_ratings(name: str, download_format: str) -> str:
        path = state.download(f"ratings-{safe_name(name, 'session')}{EXPORTS[download_format]}")
        ratings_store(state.path).export(path, session=name)
        return str(path)

    export.click(export_ratings, [session, fmt], exported, api_name="export_ratings")

    def send_ranking(name: str, request: gr.Request) -> str:
        hunt, lock = _hunt(state, name, request)
        with lock:
            hunt.refresh()
            ranking = hunt.ranking(SENT_RANKED)
        try:
            return send_table(ranking, f"galsearch {name}: ranking", state.download("ranking.xml"))
        except GalsearchError as exc:
            raise gr.Error(str(exc)) from None

    to_topcat.click(send_ranking, session, samp_status, api_name="samp_send_ranking", queue=False)
    _rating_api(state)
    return samp_row, galaxy, session


def choose_own_session(state: AppState, request: gr.Request) -> dict:
    """The session chooser of a page opened by a logged-in user, set to their own session (any other,
    shared or not, stays a choice); unchanged without a login."""
    if not request.username:
        return gr.skip()
    sessions = ratings_store(state.path).sessions()["session"].tolist()
    own = own_session(request.username)
    return gr.Dropdown(choices=sorted({*sessions, own}), value=own)


def _rating_api(state: AppState) -> None:
    """The endpoints scripts rate through: plain JSON answers without pictures, so that one server keeps
    up with many raters (a galaxy's picture is the ``stamp`` endpoint's)."""

    def next_galaxy(session: str, skip: list[str] | None = None, request: gr.Request = None) -> dict:
        hunt, lock = _hunt(state, session, request)
        with lock:
            hunt.refresh()  # ratings made elsewhere (the page, other users, processes) count
            return _next_answer(hunt, skip)

    def rate_galaxy(
        session: str, galaxy: str, rating: float, skip: list[str] | None = None, request: gr.Request = None
    ) -> dict:
        hunt, lock = _hunt(state, session, request)
        try:
            with lock:
                stored = hunt.rate(galaxy, rating)
                return {"stored": asdict(stored), **_next_answer(hunt, skip)}
        except GalsearchError as exc:
            raise gr.Error(str(exc)) from None

    def undo_rating(session: str, request: gr.Request = None) -> dict:
        hunt, lock = _hunt(state, session, request)
        with lock:
            undone = hunt.undo()
            return {"undone": asdict(undone) if undone else None, **_next_answer(hunt, [])}

    def ranking(session: str, top: int = RANKED, request: gr.Request = None) -> dict:
        hunt, lock = _hunt(state, session, request)
        with lock:
            hunt.refresh()
            table = hunt.ranking(max(1, min(int(top), MAX_RANKED)), columns=[])
        return {"session": hunt.session, "rated": len(hunt.ratings), "ranking": _records(table)}

    endpoints = {"next": next_galaxy, "rate": rate_galaxy, "undo": undo_rating, "ranking": ranking}
    for name, endpoint in endpoints.items():
        gr.api(endpoint, api_name=name, queue=False)


def _next_answer(hunt: Discovery, skip: list[str] | None) -> dict:
    """The session, how many galaxies are rated in it and the one to rate next."""
    suggested = hunt.suggest(1, skip=skip or (), columns=[])
    return {"session": hunt.session, "rated": len(hunt.ratings), "next": _records(suggested)[0]}


def _records(table: pd.DataFrame) -> list[dict]:
    """Rows of a suggestion or ranking table as JSON-ready dicts (a missing rating as None)."""
    columns = [c for c in ("id", "row", "interest", "uncertainty", "anomaly", "rating") if c in table]
    return json_records(table[columns])


def _hunt(state: AppState, name: str, request: gr.Request | None):
    name = (name or "").strip()
    if not name:
        raise gr.Error("Name the session first, e.g. 'mergers'.")
    try:
        return state.discovery(name, user_of(request))
    except GalsearchError as exc:
        raise gr.Error(str(exc)) from None
