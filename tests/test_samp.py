"""SAMP: results reach a client subscribed on a hub started here, on loopback, from the API, CLI and web app.

Each test gets its own HOME (so ~/.samp is a temporary file) and no SAMP_HUB: a real user's hub is never
seen, and pyvo is told not to probe the internet for its host name.
"""

from __future__ import annotations

import os
import queue
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import numpy as np
import pytest
from astropy.table import Table
from conftest import TINY_ENCODER, blob_images
from gradio_client import Client
from pyvo import samp
from test_app import free_port
from test_browser import WAIT_MS, browser  # noqa: F401 - a fixture

from galsearch.anomaly import Discovery
from galsearch.embedder import embed, ingest, open_collection
from galsearch.index import build_index, search
from galsearch.ui import samp as galsamp
from galsearch.ui.app import launch
from galsearch.ui.cli import main

WAIT_S = 30  # for a message to arrive (it comes at once; this only bounds a failing test)
ANSWER_AFTER_S = 0.2


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    """An embedded, indexed 40-galaxy collection whose catalog has sky positions."""
    folder = tmp_path_factory.mktemp("samp")
    images, labels = blob_images(40)
    rng = np.random.default_rng(1)
    np.savez(
        folder / "sky.npz",
        images=images,
        labels=labels,
        ids=np.array([f"sky-{i:03d}" for i in range(40)]),
        ra=rng.uniform(150, 151, 40),
        dec=rng.uniform(2, 3, 40),
    )
    ingest(folder / "sky.npz", folder / "sky", progress=False)
    embed(folder / "sky", TINY_ENCODER, device="cpu", progress=False)
    build_index(open_collection(folder / "sky"), progress=False)
    return folder / "sky"


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A HOME and temporary folder (where the tables sent are written) of this test's own, no SAMP_HUB, and
    pyvo kept off the internet."""
    folder = tmp_path / "home"
    folder.mkdir()
    monkeypatch.setenv("HOME", str(folder))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv("SAMP_HUB", raising=False)
    with samp.conf.set_temp("use_internet", False):
        yield folder


@pytest.fixture
def hub(home):
    """A SAMP hub on loopback whose lockfile is HOME/.samp, as TOPCAT's would be."""
    server = samp.SAMPHubServer(web_profile=False, addr="127.0.0.1")
    server.start(wait=False)
    yield server
    server.stop()


class Receiver:
    """A SAMP client that takes tables and sky positions, as TOPCAT and Aladin do, keeps them and answers
    (with ``error``, when given)."""

    def __init__(self, hub: samp.SAMPHubServer, name: str = "TOPCAT", error: str | None = None):
        self.messages: queue.Queue = queue.Queue()
        self.answer = {"samp.status": "samp.ok", "samp.result": {}}
        if error:
            self.answer = {"samp.status": "samp.error", "samp.error": {"samp.errortxt": error}}
        self.client = samp.SAMPIntegratedClient(name=name, addr="127.0.0.1")
        self.client.connect(hub=hub)
        for mtype in (galsamp.TABLE_MTYPE, galsamp.POINT_MTYPE):
            self.client.bind_receive_call(mtype, self._receive)

    def _receive(self, private_key, sender_id, msg_id, mtype, params, extra) -> None:
        self.messages.put((mtype, params))
        # As a desktop tool, not at once: pyvo's hub loses an answer that comes before it has noted the call
        # it forwarded (SAMPHubServer._call_and_wait notes it only after starting the delivery thread).
        time.sleep(ANSWER_AFTER_S)
        self.client.reply(msg_id, self.answer)

    def next(self, mtype: str) -> dict:
        """The parameters of the next message, which must be of ``mtype``."""
        received, params = self.messages.get(timeout=WAIT_S)
        assert received == mtype
        return params

    def table(self) -> tuple[Table, dict]:
        """The next table sent, read from the file its URL names, and the message's parameters."""
        params = self.next(galsamp.TABLE_MTYPE)
        url = urlparse(params["url"])
        assert url.scheme == "file"
        return Table.read(url2pathname(url.path), format="votable"), params


@pytest.fixture
def receiver(hub):
    listening = Receiver(hub)
    yield listening
    listening.client.disconnect()


def ids(table: Table) -> list[str]:
    return [str(v) for v in table["id"]]


def test_a_table_and_a_position_reach_the_subscribed_client(collection, receiver):
    found = search(collection, ids="sky-003", k=6)
    assert galsamp.hub_available()
    assert galsamp.send_table(found, "like sky-003") == "sent 6 rows to SAMP clients (TOPCAT)"
    table, params = receiver.table()
    assert ids(table) == found["id"].tolist()
    assert list(table["rank"]) == [1, 2, 3, 4, 5, 6]
    assert np.allclose(table["ra"], found["ra"]) and np.allclose(table["similarity"], found["similarity"])
    assert params["name"] == "like sky-003" and params["table-id"].startswith("galsearch-")
    assert "sent ra=150.250000" in galsamp.point_at(150.25, 2.5)
    assert receiver.next(galsamp.POINT_MTYPE) == {"ra": "150.25", "dec": "2.5"}


def test_the_hub_that_SAMP_HUB_names_is_used(tmp_path, home, monkeypatch):
    lockfile = tmp_path / "elsewhere" / "hub.lock"
    lockfile.parent.mkdir()
    monkeypatch.setenv("SAMP_HUB", f"std-lockurl:{lockfile.as_uri()}")
    server = samp.SAMPHubServer(web_profile=False, addr="127.0.0.1", lockfile=str(lockfile))
    server.start(wait=False)
    try:
        assert lockfile.exists() and not (home / ".samp").exists()
        assert galsamp.hub_available()
    finally:
        server.stop()
    monkeypatch.setenv("SAMP_HUB", "std-lockurl:http://example.org/hub.lock")
    with pytest.raises(galsamp.SampError, match="not a lockfile galsearch can read"):
        galsamp.point_at(1.0, 2.0)


def test_no_hub_a_dead_one_or_a_stuck_one_is_a_clear_error(home, monkeypatch):
    assert not galsamp.hub_available()
    with pytest.raises(galsamp.SampError, match=r"no SAMP hub is running .*start TOPCAT or Aladin"):
        galsamp.point_at(10.0, 20.0)
    with socket.socket() as closed:  # a lockfile left by a hub that died: its port answers nothing
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    lockfile = home / ".samp"
    lockfile.write_text(f"# a dead hub\nsamp.secret=x\nsamp.hub.xmlrpc.url=http://127.0.0.1:{port}/xmlrpc\n")
    with pytest.raises(galsamp.SampError, match=rf"no SAMP hub answers at http://127.0.0.1:{port}/xmlrpc"):
        galsamp.point_at(10.0, 20.0)
    monkeypatch.setattr(galsamp, "TIMEOUT_S", 0.5)
    with socket.socket() as stuck:  # a hub that accepts connections but never replies (e.g. suspended)
        stuck.bind(("127.0.0.1", 0))
        stuck.listen()
        url = f"http://127.0.0.1:{stuck.getsockname()[1]}/xmlrpc"
        lockfile.write_text(f"samp.secret=x\nsamp.hub.xmlrpc.url={url}\n")
        assert not galsamp.hub_available()
        with pytest.raises(galsamp.SampError, match=r"no SAMP hub answers .*timed out"):
            galsamp.point_at(10.0, 20.0)
    lockfile.write_text("this is no lockfile\n")
    with pytest.raises(galsamp.SampError, match="is not a SAMP hub's lockfile"):
        galsamp.point_at(10.0, 20.0)


def test_a_hub_without_a_table_tool_says_what_to_start(collection, hub):
    with pytest.raises(
        galsamp.SampError, match="no tool connected to the SAMP hub loads tables: start TOPCAT"
    ):
        galsamp.send_table(search(collection, ids="sky-001", k=2), "nobody")
    assert not list(Path(tempfile.gettempdir()).glob("galsearch-samp-*"))  # a table not sent is not kept
    with pytest.raises(galsamp.SampError, match="not a sky position"):
        galsamp.point_at(float("nan"), 2.0)


def test_a_refusal_is_reported(hub):
    refusing = Receiver(hub, "Aladin", error="cannot read it")
    try:
        with pytest.raises(galsamp.SampError, match=r"no SAMP client took .*\(not Aladin: cannot read it\)"):
            galsamp.point_at(10.0, 20.0)
        taking = Receiver(hub)
        try:
            assert galsamp.point_at(10.0, 20.0).endswith("(TOPCAT, not Aladin: cannot read it)")
        finally:
            taking.client.disconnect()
    finally:
        refusing.client.disconnect()


def test_cli_search_discover_and_anomalies_send(collection, receiver, home, capsys):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "galsearch.ui.cli",
            "search",
            str(collection),
            "--id",
            "sky-005",
            "-k",
            "4",
            "--samp",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HOME": str(home)},
    )
    assert done.returncode == 0, done.stderr
    assert "sent 4 rows to SAMP clients (TOPCAT)" in done.stderr
    expected = search(collection, ids="sky-005", k=4)["id"].tolist()
    assert ids(receiver.table()[0]) == expected and expected[0] in done.stdout  # results still printed

    hunt = ["discover", str(collection), "--session", "s", "--user", "ann"]
    assert main([*hunt, "--rate", "sky-001=5", "--rate", "sky-002=0", "--ranking", "5", "--samp"]) == 0
    assert "sent 5 rows to SAMP clients (TOPCAT)" in capsys.readouterr().err
    table, params = receiver.table()
    assert ids(table) == Discovery(collection, "s", user="ann").ranking(5)["id"].tolist()
    assert params["name"] == "galsearch s: ranking"
    assert main([*hunt, "--next", "2", "--samp"]) == 0
    assert len(receiver.table()[0]) == 2
    with pytest.raises(SystemExit) as usage:
        main([*hunt, "--samp"])
    assert usage.value.code == 2 and "--samp sends the --next or --ranking table" in capsys.readouterr().err

    assert main(["anomalies", str(collection), "--top", "3", "--samp"]) == 0
    out = capsys.readouterr()
    table = receiver.table()[0]
    assert "sent 3 rows" in out.err and all(galaxy in out.out for galaxy in ids(table))


def test_cli_without_a_hub_fails_with_the_message(collection, home, capsys):
    assert main(["search", str(collection), "--id", "sky-005", "-k", "2", "--samp"]) == 1
    assert "error: no SAMP hub is running" in capsys.readouterr().err


@pytest.fixture
def served(collection, home):
    port = free_port()
    app = launch(collection, port=port, block=False)
    yield Client(f"http://127.0.0.1:{port}/", verbose=False)
    app.close()


def test_web_app_sends_results_positions_and_the_ranking(collection, hub, served):
    listening = Receiver(hub)
    try:
        _, _, shown, _, _ = served.predict(
            "sky-007", "", "", 5.0, None, "", "", "", 5, "CSV", api_name="/search"
        )
        note = served.predict(shown, api_name="/samp_send_results")
        assert note == "sent 5 rows to SAMP clients (TOPCAT)"
        table, params = listening.table()
        expected = search(collection, ids="sky-007", k=5)
        assert ids(table) == expected["id"].tolist() and params["name"] == "galsearch search of sky"
        assert np.allclose(table["dec"], expected["dec"]) and "label" in table.colnames
        served.predict("sky-007", "", "", shown, api_name="/samp_point_at")
        ra, dec = open_collection(collection).catalog.set_index("id").loc["sky-007", ["ra", "dec"]]
        point = listening.next(galsamp.POINT_MTYPE)
        assert (float(point["ra"]), float(point["dec"])) == (ra, dec)
        served.predict("", "150.5", "2.5", shown, api_name="/samp_point_at")
        assert listening.next(galsamp.POINT_MTYPE) == {"ra": "150.5", "dec": "2.5"}
        Discovery(collection, "web-hunt", user="web").rate("sky-010", 5)
        assert served.predict("web-hunt", api_name="/samp_send_ranking").startswith("sent 40 rows")
        table, _ = listening.table()
        assert ids(table)[:3] == Discovery(collection, "web-hunt").ranking(3)["id"].tolist()
    finally:
        listening.client.disconnect()
    hub.stop()
    with pytest.raises(Exception, match="no SAMP hub"):
        served.predict(shown, api_name="/samp_send_results")
    with pytest.raises(Exception, match="Search first"):
        served.predict(
            {"headers": ["rank", "id"], "data": [], "metadata": None}, api_name="/samp_send_results"
        )


@pytest.mark.slow
def test_the_page_shows_the_buttons_only_while_a_hub_runs(collection, home, browser):  # noqa: F811
    from playwright.sync_api import expect

    def search_from_the_page() -> None:  # also lets the page-load check finish
        page.get_by_label("Galaxy id").fill("sky-004")
        page.locator("#search-button").click()
        page.locator("#neighbours .caption-label").first.wait_for()

    port = free_port()
    app = launch(collection, port=port, block=False)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(WAIT_MS)
    try:
        page.goto(f"http://127.0.0.1:{port}/")
        search_from_the_page()
        expect(page.locator("#samp-send-results")).to_be_hidden()
        hub = samp.SAMPHubServer(web_profile=False, addr="127.0.0.1")
        hub.start(wait=False)
        listening = Receiver(hub)
        try:
            page.reload()
            search_from_the_page()
            page.locator("#samp-send-results").click()
            page.locator("#samp-search-status").get_by_text(
                "sent 12 rows to SAMP clients (TOPCAT)"
            ).wait_for()
            assert ids(listening.table()[0]) == search(collection, ids="sky-004", k=12)["id"].tolist()
            page.get_by_role("tab", name="Discover").click()
            page.locator("#samp-send-ranking").click()
            page.locator("#samp-discover-status").get_by_text("sent 40 rows").wait_for()
            assert len(listening.table()[0]) == 40
        finally:
            listening.client.disconnect()
            hub.stop()
    finally:
        page.close()
        app.close()
