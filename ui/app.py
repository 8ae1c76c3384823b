"""The galsearch web app: Search, Discover, Classify and Map tabs over one collection, sharing one map
selection, one label store and the galaxies the map rings.

Layout and wiring only: every action calls into embedder, index or anomaly. The named actions are the
endpoints of Gradio's HTTP API (ui.api), e.g. ``Client(url).predict(..., api_name="/search")``.
"""

from __future__ import annotations

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: no phoning home

from pathlib import Path

import gradio as gr
import pandas as pd
from starlette.middleware import Middleware

from galsearch.embedder import describe

from . import band_picker, classify_tab, discover_tab, map_js, map_tab, search_tab
from .access import LoginRequired, LoginThrottle, ThrottledLogin
from .api import publish
from .credentials import Logins
from .samp import hub_available
from .state import AppState

MAX_UPLOAD = "50mb"  # uploaded images and label files; larger ones are refused before reaching galsearch
# Galaxy pictures are sent at their stored size (a 64-pixel stamp is a tenth of the CPU and bytes of one
# enlarged on the server) and the browser enlarges them pixel by pixel; gallery captions wrap over the
# stamp instead of being cut to "blob-0-00...": the whole id shows.
CSS = """
.gradio-container .thumbnail-item img, .gradio-container .preview img, .gradio-container .galaxy img {
  image-rendering: pixelated;
}
.gradio-container .galaxy img {
  object-fit: contain;
}
.gradio-container .thumbnail-item .caption-label {
  max-width: calc(100% - 2 * var(--block-label-margin));
  white-space: normal;
  overflow-wrap: break-word;
}
"""


def build_app(collection: str | Path) -> gr.Blocks:
    """The app for one collection."""
    state = AppState(collection)
    coll = state.collection()
    encoder = describe(coll.encoder) if coll.encoder else "no encoder yet"
    # No delete_cache: Gradio's cache is shared by content hash between servers, and one app's cleanup
    # deleted files that another still served (a download failed with 403 in tests).
    with gr.Blocks(title=f"galsearch · {coll.manifest['name']}") as app:
        # Shared by the tabs: the ids selected on the map, and the galaxies the map rings (search results,
        # the galaxy being rated) when it is drawn.
        selection = gr.State([])
        highlights = gr.State(dict(map_tab.NO_HIGHLIGHTS))
        gr.Markdown(
            f"## galsearch · {coll.manifest['name']}\n{len(coll)} galaxies · "
            f"{coll.counts['embedded']} embedded with {encoder}"
        )
        band_picker.build(state)
        with gr.Tab("Search", id="search"):
            search_samp, results = search_tab.build(state)
        with gr.Tab("Discover", id="discover") as tab:
            discover_samp, rated, session = discover_tab.build(state, tab)
        with gr.Tab("Classify", id="classify") as tab:
            classify_samp, trained = classify_tab.build(state, tab)
        with gr.Tab("Map", id="map") as tab:
            map_samp, colour = map_tab.build(state, tab, selection, highlights)
        samp_rows = [search_samp, discover_samp, classify_samp, map_samp]

        def ring_results(found: pd.DataFrame | None, marks: dict) -> dict:
            ids = [] if found is None or "id" not in found else found["id"].astype(str).tolist()
            return {**marks, "search": ids}

        def ring_rated(galaxy: str, marks: dict) -> dict:
            return {**marks, "rating": galaxy or None}

        def colour_by(column: str) -> dict:  # a head just trained: the map shows its probabilities
            return gr.Dropdown(choices=map_tab.colour_choices(state), value=column) if column else gr.skip()

        results.change(ring_results, [results, highlights], highlights, queue=False)
        rated.change(ring_rated, [rated, highlights], highlights, queue=False)
        trained.change(colour_by, trained, colour, queue=False)

        def show_samp() -> list[dict]:  # at each page load: TOPCAT may have started since the last one
            return [gr.update(visible=hub_available())] * len(samp_rows)

        app.load(show_samp, None, samp_rows, queue=False)

        def own_session(request: gr.Request) -> dict:  # a logged-in user rates in a session of their own
            return discover_tab.choose_own_session(state, request)

        app.load(own_session, None, session, queue=False)
    publish(app)
    return app


def launch(
    collection: str | Path,
    host: str = "127.0.0.1",
    port: int | None = None,
    auth: tuple[str, str] | Logins | None = None,
    block: bool = True,
    root_path: str = "",
    login_throttle: LoginThrottle | None = None,
) -> gr.Blocks:
    """Start serving the app for ``collection``; with ``block`` (default) until interrupted.

    Bound to ``host`` (this machine only by default). With ``auth`` (one ``(user, password)`` or
    :class:`galsearch.ui.credentials.Logins`), every route but the login page refuses a request without a
    login, and logins are throttled per address and per user name (``login_throttle``, default
    :class:`galsearch.ui.access.LoginThrottle`'s limits; see :mod:`galsearch.ui.access`). ``root_path`` is the
    path prefix under which a reverse proxy serves the app (e.g. ``/galsearch``; the proxy strips it).
    Features that would expose more are off whatever the environment says: server-side rendering (a Node
    server), the MCP server, the traffic monitor, the FastAPI schema page.
    """
    throttle = login_throttle or LoginThrottle()
    app = build_app(collection)
    app.queue(default_concurrency_limit=4)  # several users at once; long jobs don't block quick ones
    app.launch(
        server_name=host,
        server_port=port,
        auth=auth.check if isinstance(auth, Logins) else auth,
        auth_message=(
            f"After {throttle.limit} failed logins from one address or for one name, logins are refused "
            f"for {throttle.base_delay:g} s, doubling with each further failure up to "
            f"{throttle.max_delay:g} s: if Login does nothing, wait and try again."
        ),
        root_path=root_path or None,  # None: GRADIO_ROOT_PATH, if set
        max_file_size=MAX_UPLOAD,
        head=discover_tab.KEYS_JS + map_js.MAP_JS + map_js.preload_plotly(),
        css=CSS,
        prevent_thread_lock=not block,
        quiet=not block,
        ssr_mode=False,
        mcp_server=False,
        enable_monitoring=False,
        pwa=False,
        app_kwargs={
            "openapi_url": None,
            "docs_url": None,
            "redoc_url": None,
            "middleware": (
                [Middleware(LoginRequired), Middleware(ThrottledLogin, throttle=throttle)] if auth else []
            ),
        },
    )
    return app
