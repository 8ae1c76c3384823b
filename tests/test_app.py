"""The search page, served for real and called through Gradio's HTTP API."""

from __future__ import annotations

import socket

import pytest
from conftest import TINY_ENCODER
from gradio_client import Client

from embedder import embed
from index import similar
from ui.app import build_app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_page_serves_neighbours_over_http(blob_collection):
    embed(blob_collection, TINY_ENCODER, device="cpu", progress=False)
    app = build_app(blob_collection.path)
    port = _free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        query, gallery = client.predict("blob-0-0003", 4, api_name="/similar")
        expected = similar(blob_collection, "blob-0-0003", 4)["id"].tolist()
        assert [item["caption"].split(" · ")[0] for item in gallery] == expected
        assert query.endswith((".webp", ".png"))
        with pytest.raises(Exception, match="not in collection"):
            client.predict("no-such-galaxy", 4, api_name="/similar")
    finally:
        app.close()
