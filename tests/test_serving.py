"""Serving the web app to several people: logins throttled per address and per name, logins kept off the
command line (an auth file of scrypt hashes, or the environment), and the app behind a reverse proxy
under a path prefix. Time is a clock the tests move: nothing sleeps and nothing depends on speed."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from conftest import TINY_ENCODER, free_port, write_blob_npz
from gradio_client import Client

from galsearch.embedder import embed, ingest, open_collection
from galsearch.index import build_index
from galsearch.ui.access import LoginThrottle
from galsearch.ui.app import launch
from galsearch.ui.cli import main
from galsearch.ui.credentials import CredentialsError, Logins, hash_password, login_from_env, verify_password

ANN, BOB = "ann's long secret", "bob's other secret"


class Clock:
    """Seconds that pass only when a test moves them on."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def coll(tmp_path_factory):
    """An embedded, indexed 64-galaxy collection."""
    folder = tmp_path_factory.mktemp("serving")
    ingest(write_blob_npz(folder / "blobs.npz", 64), folder / "blobs", progress=False)
    embed(folder / "blobs", TINY_ENCODER, device="cpu", progress=False)
    build_index(open_collection(folder / "blobs"), progress=False)
    return open_collection(folder / "blobs")


def auth_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


# ---- the throttle ----------------------------------------------------------------------------------


def test_failures_lock_out_an_address_and_a_name_for_a_time_that_doubles():
    clock = Clock()
    throttle = LoginThrottle(limit=5, base_delay=1, max_delay=8, forget_after=60, clock=clock)
    assert [throttle.attempt("10.0.0.1", "ann") for _ in range(5)] == [0] * 5
    assert throttle.attempt("10.0.0.1", "ann") == 1  # the sixth must wait, and is not counted
    waits = []
    for _ in range(5):
        clock.now += throttle.wait("10.0.0.1", "ann")
        assert throttle.attempt("10.0.0.1", "ann") == 0
        waits.append(throttle.wait("10.0.0.1", "ann"))
    assert waits == [2, 4, 8, 8, 8]  # doubling up to max_delay
    assert throttle.wait("10.0.0.1", "bob") == 8  # the address is locked out for every name
    assert throttle.wait("10.0.0.2", "ann") == 8  # the name from every address
    assert throttle.wait("10.0.0.2", "bob") == 0  # others are not
    throttle.succeeded("10.0.0.1", "ann")  # a login clears both
    assert throttle.wait("10.0.0.1", "ann") == 0 == throttle.wait("10.0.0.2", "ann")
    assert [throttle.attempt("10.0.0.1", "ann") for _ in range(6)] == [0] * 5 + [1]  # counted from 0 again


def test_failures_are_forgotten_after_a_quiet_while():
    clock = Clock()
    throttle = LoginThrottle(limit=3, base_delay=1, max_delay=8, forget_after=60, clock=clock)
    for _ in range(2):
        throttle.attempt("10.0.0.1", "ann")
    clock.now += 60
    assert [throttle.attempt("10.0.0.1", "ann") for _ in range(4)] == [0, 0, 0, 1]


def test_made_up_names_cannot_fill_memory():
    clock = Clock()
    throttle = LoginThrottle(limit=2, max_entries=50, clock=clock)
    throttle.attempt("10.0.0.1", "ann")
    throttle.attempt("10.0.0.1", "ann")
    assert throttle.wait("10.0.0.1", "ann") > 0
    for i in range(100):  # 200 new addresses and names: the 50 most recent are remembered
        throttle.attempt(f"10.1.0.{i}", f"made-up-{i}")
    assert throttle.wait("10.0.0.1", "ann") == 0  # forgotten first: it failed longest ago
    throttle.attempt("10.1.0.99", "made-up-99")
    assert throttle.wait("10.1.0.99", "made-up-99") > 0  # the most recent are still counted


def test_ipv6_addresses_count_by_their_network():
    throttle = LoginThrottle(limit=1, clock=Clock())
    throttle.attempt("2001:db8:1:2::10", None)
    assert throttle.wait("2001:db8:1:2:ffff::1", None) > 0  # the same /64: one machine may own it all
    assert throttle.wait("2001:db8:1:3::10", None) == 0


def test_a_served_login_is_refused_during_a_lockout_whatever_its_password(coll):
    clock, port = Clock(), free_port()
    logins = Logins({"ann": hash_password(ANN), "bob": hash_password(BOB)})
    app = launch(coll.path, port=port, auth=logins, block=False, login_throttle=LoginThrottle(clock=clock))
    url = f"http://127.0.0.1:{port}/login"

    def login(address: str, user: str, password: str, multipart: bool = False) -> httpx.Response:
        # From 127.0.0.1 uvicorn trusts X-Forwarded-For, as it does from a reverse proxy on this machine.
        form = {"username": user, "password": password}
        encoded = {"files": {k: (None, v) for k, v in form.items()}} if multipart else {"data": form}
        return httpx.post(url, **encoded, headers={"X-Forwarded-For": address}, timeout=60)

    try:
        wrong = [login("203.0.113.1", "ann", f"guess {i}", multipart=i % 2 == 0) for i in range(5)]
        assert [answer.status_code for answer in wrong] == [400] * 5  # the browser's form (multipart) too
        refused = login("203.0.113.1", "ann", ANN)
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
        assert "try again in 1 s" in refused.json()["detail"]
        assert login("203.0.113.1", "bob", BOB).status_code == 429  # the address, for every name
        assert login("203.0.113.2", "ann", ANN).status_code == 429  # the name, from every address
        assert login("203.0.113.2", "bob", BOB).status_code == 200  # others log in
        clock.now += 1
        assert login("203.0.113.2", "ann", ANN).status_code == 200  # after the wait; clears ann's count
        assert login("203.0.113.1", "ann", "guess 6").status_code == 400  # the address's sixth failure
        assert login("203.0.113.1", "ann", ANN).headers["Retry-After"] == "2"  # doubles the wait
        clock.now += 2
        assert login("203.0.113.1", "ann", ANN).status_code == 200  # clears the address's count
        assert [login("203.0.113.1", "ann", "again").status_code for _ in range(5)] == [400] * 5
        assert login("203.0.113.1", "ann", ANN).status_code == 429
        # A form without a name, or a huge one, never reaches the password check.
        assert httpx.post(url, data={"password": ANN}, timeout=60).status_code == 422
        huge = {"username": "x" * 20_000, "password": ANN}
        assert httpx.post(url, data=huge, timeout=60).status_code == 413
    finally:
        app.close()


# ---- logins off the command line ---------------------------------------------------------------------


def test_passwd_prints_a_line_the_auth_file_takes(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO(ANN + "\n"))  # piped, as from a password manager
    assert main(["passwd", "ann"]) == 0
    line = capsys.readouterr().out
    assert line.startswith("ann:scrypt:") and ANN not in line
    logins = Logins.from_file(auth_file(tmp_path / "users.txt", f"# the team\n\n{line}"))
    assert logins.users == ["ann"]
    assert logins.verify("ann", ANN)
    assert not logins.verify("ann", ANN + " ") and not logins.verify("bob", ANN)
    hashed = hash_password(BOB)
    assert verify_password(BOB, hashed) and not verify_password(ANN, hashed)
    assert hashed != hash_password(BOB)  # salted


def test_an_auth_file_others_may_read_is_refused(tmp_path, coll, capsys):
    users = auth_file(tmp_path / "users.txt", f"ann:{hash_password(ANN)}\n", mode=0o644)
    with pytest.raises(CredentialsError, match=r"mode 644.*chmod 600"):
        Logins.from_file(users)
    assert main(["serve", str(coll.path), "--auth-file", str(users)]) == 1  # refused before serving
    assert "chmod 600" in capsys.readouterr().err


def test_a_malformed_auth_file_line_is_named_without_its_secret(tmp_path):
    hashed = hash_password(ANN)
    cases = {
        f"# users\nann:{hashed}\nbob:{BOB}\n": "line 3: expected USER:HASH",  # a password, not a hash
        f"ann:{hashed}\n\nann:{hashed}\n": "line 3: the user 'ann' is already named",
        f"ann {hashed}\n": "line 1: expected USER:HASH",
        f"a b:{hashed}\n": "line 1: a user name is",
        "ann:scrypt:3:8:1$AAAA$AAAA\n": "line 1: a password hash needs N a power of 2",
        "# nobody yet\n": "names no user",
    }
    for text, message in cases.items():
        with pytest.raises(CredentialsError, match=message) as refused:
            Logins.from_file(auth_file(tmp_path / "users.txt", text))
        assert BOB not in str(refused.value)


def test_a_login_from_the_environment(tmp_path, monkeypatch, capsys):
    assert login_from_env({"GALSEARCH_AUTH": "ann:pass:word"}) == ("ann", "pass:word")
    assert login_from_env({}) is None
    monkeypatch.setenv("GALSEARCH_AUTH", "ann")
    assert main(["serve", str(tmp_path)]) == 1  # refused before the collection is even opened
    assert "GALSEARCH_AUTH takes USER:PASSWORD" in capsys.readouterr().err


@pytest.mark.parametrize("given", ["environment", "--auth"])
def test_galsearch_serve_takes_a_login_from_the_environment_or_with_a_warning_from_auth(
    coll, given, tmp_path
):
    """`galsearch serve` takes a login from $GALSEARCH_AUTH, or from --auth with a warning. Stopped with
    SIGTERM, as a service manager stops it, it closes as on Ctrl-C: exit status 0, download folder gone."""
    port = free_port()
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp")}
    env |= {"GALSEARCH_AUTH": f"ann:{ANN}"} if given == "environment" else {}
    command = ["serve", str(coll.path), "--port", str(port), "--root-path", "/galsearch/"]
    command += ["--auth", f"ann:{ANN}"] if given == "--auth" else []
    server = subprocess.Popen(
        [sys.executable, "-m", "galsearch.ui.cli", *command],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as browser:
            wait_until_served(browser, server)
            assert browser.post("/login", data={"username": "ann", "password": "nope"}).status_code == 400
            assert browser.post("/login", data={"username": "ann", "password": ANN}).status_code == 200
            assert browser.get("/config").json()["root"] == f"http://127.0.0.1:{port}/galsearch"
    finally:
        server.terminate()
        server.wait(timeout=60)
    warned = "warning: --auth puts the password where `ps` shows it" in server.stderr.read().decode()
    assert warned == (given == "--auth")
    assert server.returncode == 0
    assert not list((tmp_path / "tmp").glob("galsearch-downloads-*"))


def wait_until_served(browser: httpx.Client, server: subprocess.Popen) -> None:
    """Return once the server answers (it imports Gradio first); fail if it exits."""
    while server.poll() is None:
        try:
            browser.get("/gradio_api/startup-events")
            return
        except httpx.TransportError:
            time.sleep(0.2)
    pytest.fail(f"galsearch serve exited with {server.returncode}: {server.stderr.read().decode()}")


# ---- behind a reverse proxy --------------------------------------------------------------------------

HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"te", b"trailer"}


class PrefixProxy:
    """A reverse proxy as docs/serving.md sets nginx up: ``PREFIX/x`` to ``UPSTREAM/x``, keeping Host,
    adding X-Forwarded-For and -Proto, streaming answers (the queue's server-sent events); it notes each
    path it forwards."""

    def __init__(self, prefix: str, upstream: str):
        self.prefix, self.upstream, self.paths = prefix, upstream, []

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        path = scope["path"]
        if scope["type"] != "http" or not path.startswith(self.prefix + "/"):
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        self.paths.append(path)
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        headers = [(k, v) for k, v in scope["headers"] if k not in HOP_BY_HOP | {b"content-length"}]
        headers += [(b"x-forwarded-for", scope["client"][0].encode()), (b"x-forwarded-proto", b"http")]
        query = scope["query_string"].decode()
        url = self.upstream + path.removeprefix(self.prefix) + (f"?{query}" if query else "")
        async with httpx.AsyncClient(timeout=None) as client:
            request = client.build_request(scope["method"], url, headers=headers, content=body)
            response = await client.send(request, stream=True)
            headers = [(k, v) for k, v in response.headers.raw if k.lower() not in HOP_BY_HOP]
            await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            await response.aclose()


@contextmanager
def reverse_proxy(prefix: str, upstream_port: int):
    """Serve a PrefixProxy to 127.0.0.1:``upstream_port`` on a free port: yield (its URL, the proxy)."""
    proxy, port = PrefixProxy(prefix, f"http://127.0.0.1:{upstream_port}"), free_port()
    server = uvicorn.Server(
        uvicorn.Config(proxy, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=10)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}{prefix}/", proxy
    finally:
        server.should_exit = True
        thread.join()


def test_behind_a_reverse_proxy_under_a_path_prefix(coll):
    port = free_port()
    app = launch(coll.path, port=port, auth=("ann", ANN), block=False, root_path="/galsearch")
    with reverse_proxy("/galsearch", port) as (url, proxy):
        try:
            with httpx.Client(base_url=url, timeout=60) as web:
                page = web.get("")
                assert page.status_code == 200 and "./assets/" in page.text  # its files, under the prefix
                assert web.get(page.text.split('src="./')[1].split('"')[0]).status_code == 200
                assert web.get("gradio_api/info").status_code == 401  # LoginRequired, through the proxy
                assert web.post("login", data={"username": "ann", "password": "wrong"}).status_code == 400
                assert web.post("login", data={"username": "ann", "password": ANN}).status_code == 200
                assert web.get("config").json()["root"] == url.rstrip("/")  # where the page sends calls
                logout = web.get("logout")
                assert logout.status_code == 302 and logout.headers["location"] == url.rstrip("/")
            client = Client(url, auth=("ann", ANN), verbose=False)
            search = ("blob-0-0003", "", "", 5.0, None, "", "", "", 5, "CSV")
            download = client.predict(*search, api_name="/search")[3]  # the results file
            assert "blob-0-" in Path(download).read_text()  # downloaded through the proxy
            galaxy = client.predict("proxied", api_name="/next")["next"]["id"]
            client.predict("proxied", galaxy, 4.0, api_name="/rate")
            exported = client.predict("proxied", "CSV", api_name="/export_ratings")  # queued: events
            (rating,) = csv.DictReader(io.StringIO(Path(exported).read_text()))
            assert (rating["galaxy"], float(rating["rating"]), rating["user"]) == (galaxy, 4, "ann")
            client.close()
            assert any(p.startswith("/galsearch/gradio_api/file=") for p in proxy.paths)
            assert any(p.startswith("/galsearch/gradio_api/queue/data") for p in proxy.paths)
        finally:
            app.close()  # first: the proxy waits for the streams it forwards to end
