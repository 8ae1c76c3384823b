"""Many raters at once over the HTTP API: a killed server loses no acknowledged rating, and one user's
undo never removes another user's rating in a shared session."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import gradio as gr
import httpx
from conftest import TINY_ENCODER, free_port
from gradio_client import Client

from galsearch.anomaly import Discovery, ratings_store
from galsearch.anomaly.discover import own_session
from galsearch.embedder import embed
from galsearch.ui.app import launch
from galsearch.ui.credentials import Logins, hash_password
from galsearch.ui.discover_tab import choose_own_session
from galsearch.ui.state import AppState

KILL_AFTER = 10  # the server dies right after committing this many ratings
RATERS, RATINGS = 3, 8  # more ratings than KILL_AFTER, so that the kill always comes

# `galsearch serve` that SIGKILLs its own process (no cleanup runs) right after its KILL_AFTER-th rating is
# committed to the store, before that rating is answered: the same point however busy the machine is.
SERVER_KILLED_AFTER_COMMITS = f"""
import os, signal, sys, threading
import galsearch.ui.cli
from galsearch.anomaly.ratings import RatingsStore
rate, commits, lock = RatingsStore.rate, [], threading.Lock()
def rate_then_die(self, *args, **kwargs):
    stored = rate(self, *args, **kwargs)
    with lock:
        commits.append(stored.seq)
        if len(commits) == {KILL_AFTER}:
            os.kill(os.getpid(), signal.SIGKILL)
    return stored
RatingsStore.rate = rate_then_die
sys.exit(galsearch.ui.cli.main())
"""


def wait_until_serving(url: str, server: subprocess.Popen) -> None:
    """Poll ``url`` until the server answers (it imports gradio first); fail if it exits instead."""
    deadline = time.monotonic() + 300  # a bound on a hang, not a speed requirement
    while time.monotonic() < deadline:
        assert server.poll() is None, f"the server exited with {server.returncode} before serving"
        try:
            httpx.get(url, timeout=10)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer")


def rate_until_refused(url: str, session: str, acknowledged: list[tuple[str, str, float]]) -> None:
    """Rate RATINGS galaxies in ``session`` over raw HTTP, each answer naming the next, until the server
    stops answering; every rating answered with 200 goes to ``acknowledged``."""
    with httpx.Client(timeout=120) as http:
        try:
            answer = http.post(f"{url}gradio_api/run/next", json={"data": [session, []]})
            galaxy = answer.raise_for_status().json()["data"][0]["next"]["id"]
            for i in range(RATINGS):
                score = float(i % 6)
                body = {"data": [session, galaxy, score, []]}
                answer = http.post(f"{url}gradio_api/run/rate", json=body).raise_for_status()
                acknowledged.append((session, galaxy, score))
                galaxy = answer.json()["data"][0]["next"]["id"]
        except httpx.HTTPError:
            return  # the server died: this client's unanswered rating may or may not be stored


def test_a_killed_server_keeps_every_rating_it_acknowledged(blob_collection):
    embed(blob_collection, TINY_ENCODER, device="cpu", progress=False)
    Discovery(
        blob_collection, "rater-0"
    )  # stores the anomaly scores, which concurrent first loops would race to
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    arguments = ["serve", str(blob_collection.path), "--port", str(port)]
    env = {k: v for k, v in os.environ.items() if k != "GALSEARCH_AUTH"}
    root = Path(__file__).resolve().parents[1]
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER_KILLED_AFTER_COMMITS, *arguments], cwd=root, env=env
    )
    try:
        wait_until_serving(url, server)
        acknowledged: list[tuple[str, str, float]] = []
        raters = [
            threading.Thread(target=rate_until_refused, args=(url, f"rater-{i}", acknowledged))
            for i in range(RATERS)
        ]
        for rater in raters:
            rater.start()
        for rater in raters:
            rater.join()
        assert server.wait(timeout=120) == -signal.SIGKILL
    finally:
        if server.poll() is None:
            server.kill()
    history = ratings_store(blob_collection.path).history()
    stored = set(zip(history["session"], history["galaxy"], history["rating"], strict=True))
    assert set(acknowledged) <= stored
    assert len(acknowledged) < KILL_AFTER <= len(history)  # the last commit was never answered


def test_one_users_undo_never_removes_another_users_rating(blob_collection):
    embed(blob_collection, TINY_ENCODER, device="cpu", progress=False)
    logins = Logins({"ann": hash_password("ann-secret"), "bob": hash_password("bob-secret")})
    port = free_port()
    app = launch(blob_collection.path, port=port, auth=logins, block=False)
    try:
        url = f"http://127.0.0.1:{port}/"
        ann = Client(url, auth=("ann", "ann-secret"), verbose=False, download_files=False)
        bob = Client(url, auth=("bob", "bob-secret"), verbose=False, download_files=False)
        ann.predict("shared", "blob-0-0001", 5.0, api_name="/rate")
        bob.predict("shared", "blob-0-0002", 1.0, api_name="/rate")
        ann.predict("shared", "blob-0-0003", 4.0, api_name="/rate")
        store = ratings_store(blob_collection.path)

        def rated() -> list[tuple[str, str]]:
            history = store.history("shared")
            return list(zip(history["user"], history["galaxy"], strict=True))

        assert bob.predict("shared", api_name="/undo")["undone"]["galaxy"] == "blob-0-0002"
        assert rated() == [("ann", "blob-0-0001"), ("ann", "blob-0-0003")]
        assert bob.predict("shared", api_name="/undo")["undone"] is None
        assert rated() == [("ann", "blob-0-0001"), ("ann", "blob-0-0003")]
        assert ann.predict("shared", api_name="/undo")["undone"]["galaxy"] == "blob-0-0003"
        assert rated() == [("ann", "blob-0-0001")]
        # both users' ratings count in the session they share: bob's loop sees ann's rating too
        assert bob.predict("shared", api_name="/next")["rated"] == 1
    finally:
        app.close()


def test_a_logged_in_user_rates_in_a_session_of_their_own_unless_they_choose_a_shared_one(blob_collection):
    ratings_store(blob_collection.path).ensure_session("shared")
    state = AppState(blob_collection.path)
    chooser = choose_own_session(state, gr.Request(username="ann"))
    assert chooser.value == own_session("ann") == "interesting (ann)"
    assert {value for _, value in chooser.choices} == {"shared", "interesting (ann)"}
    assert choose_own_session(state, gr.Request(username="bob")).value == "interesting (bob)"
    assert choose_own_session(state, gr.Request()) == gr.skip()  # no login: the chooser stays as built
