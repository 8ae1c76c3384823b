"""The galsearch web app: Search, Discover, Fine-tune and Map tabs over one collection.

Layout and wiring only: every action calls into embedder, index or anomaly. Each action is also an
endpoint of Gradio's HTTP API (see the README), e.g. ``Client(url).predict(..., api_name="/search")``.
"""

from __future__ import annotations

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: no phoning home

from pathlib import Path

import gradio as gr
from starlette.middleware import Middleware

from embedder import describe

from . import discover_tab, finetune_tab, map_tab, search_tab
from .access import LoginRequired
from .samp import hub_available
from .state import AppState

MAX_UPLOAD = "50mb"  # uploaded images and label files; larger ones are refused before reaching galsearch
# Gallery captions wrap over the stamp instead of being cut to "blob-0-00...": the whole id shows.
CSS = """
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
        gr.Markdown(
            f"## galsearch · {coll.manifest['name']}\n{len(coll)} galaxies · "
            f"{coll.counts['embedded']} embedded with {encoder}"
        )
        with gr.Tab("Search", id="search"):
            samp_rows = [search_tab.build(state)]
        with gr.Tab("Discover", id="discover") as tab:
            samp_rows.append(discover_tab.build(state, tab))
        with gr.Tab("Fine-tune", id="finetune"):
            finetune_tab.build(state)
        with gr.Tab("Map", id="map") as tab:
            map_tab.build(state, tab)

        def show_samp() -> list[dict]:  # at each page load: TOPCAT may have started since the last one
            return [gr.update(visible=hub_available())] * len(samp_rows)

        app.load(show_samp, None, samp_rows, api_name=False, queue=False)
    return app


def launch(
    collection: str | Path,
    host: str = "127.0.0.1",
    port: int | None = None,
    auth: tuple[str, str] | None = None,
    block: bool = True,
) -> gr.Blocks:
    """Start serving the app for ``collection``; with ``block`` (default) until interrupted.

    Bound to ``host`` (this machine only by default). With ``auth``, every route but the login page
    refuses a request without a login (see :mod:`ui.access`). Features that would expose more are off
    whatever the environment says: server-side rendering (a Node server), the MCP server, the traffic
    monitor, the FastAPI schema page.
    """
    app = build_app(collection)
    app.queue(default_concurrency_limit=4)  # several users at once; long jobs don't block quick ones
    app.launch(
        server_name=host,
        server_port=port,
        auth=auth,
        max_file_size=MAX_UPLOAD,
        head=discover_tab.KEYS_JS,
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
            "middleware": [Middleware(LoginRequired)] if auth else [],
        },
    )
    return app
