"""The ratings store: durable, concurrent, undoable, exportable, and loud about foreign files."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from multiprocessing import Pool

import pytest
from astropy.table import Table

from galsearch.anomaly import RatingsError, RatingsStore


def test_rate_latest_history_and_sessions(tmp_path):
    store = RatingsStore(tmp_path / "r.sqlite")
    store.rate("mergers", "g1", 5, user="ann")
    store.rate("mergers", "g2", 0, user="ann")
    store.rate("mergers", "g1", 3, user="bob")  # a later rating of the same galaxy counts
    store.rate("lenses", "g1", 4, user="ann")
    latest = store.latest("mergers")
    assert dict(zip(latest.galaxy, latest.rating, strict=True)) == {"g1": 3.0, "g2": 0.0}
    assert len(store.history("mergers")) == 3 and len(store.history()) == 4
    sessions = store.sessions().set_index("session")
    assert sessions.loc["mergers", "rated"] == 2 and sessions.loc["lenses", "rated"] == 1


def test_undo_removes_the_users_latest_rating(tmp_path):
    store = RatingsStore(tmp_path / "r.sqlite")
    store.rate("s", "g1", 5, user="ann")
    store.rate("s", "g2", 1, user="bob")
    undone = store.undo("s", user="ann")
    assert (undone.galaxy, undone.rating, undone.user) == ("g1", 5.0, "ann")
    assert store.latest("s").galaxy.tolist() == ["g2"]
    assert store.undo("s", user="ann") is None


@pytest.mark.parametrize("bad", [-1, 5.5, float("nan")])
def test_ratings_outside_0_to_5_are_refused(tmp_path, bad):
    with pytest.raises(RatingsError, match="0 to 5"):
        RatingsStore(tmp_path / "r.sqlite").rate("s", "g1", bad)


@pytest.mark.parametrize("suffix", [".csv", ".fits", ".xml"])
def test_export_round_trips_through_astropy(tmp_path, suffix):
    store = RatingsStore(tmp_path / "r.sqlite")
    for i in range(5):
        store.rate("s", f"g{i}", i, user="ann")
    assert store.export(tmp_path / f"out{suffix}", session="s") == 5
    table = Table.read(tmp_path / f"out{suffix}")
    assert [str(g) for g in table["galaxy"]] == [f"g{i}" for i in range(5)]
    assert list(table["rating"]) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert set(table.colnames) >= {"session", "galaxy", "rating", "user", "time"}


def test_foreign_and_damaged_files_are_reported(tmp_path):
    foreign = tmp_path / "other.sqlite"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE stars (id TEXT)")
    with pytest.raises(RatingsError, match="not a galsearch ratings store"):
        RatingsStore(foreign)
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(RatingsError, match="damaged or not a database"):
        RatingsStore(garbage)


WRITER = """
import sys
from galsearch.anomaly import RatingsStore
store = RatingsStore(sys.argv[1])
i = 0
while True:
    store.rate("s", f"g{i}", i % 6, user="child")
    print(i, flush=True)
    i += 1
"""


def test_a_killed_writer_loses_nothing_it_committed(tmp_path):
    path = tmp_path / "r.sqlite"
    RatingsStore(path)
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    committed = [int(child.stdout.readline()) for _ in range(30)]
    time.sleep(0.2)
    child.kill()
    child.wait()
    store = RatingsStore(path)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = set(store.history("s").galaxy)
    assert {f"g{i}" for i in committed} <= stored
    store.rate("s", "after", 5)  # and the store still takes ratings
    assert "after" in set(store.latest("s").galaxy)


def _rate_many(args: tuple[str, int]) -> int:
    path, worker = args
    store = RatingsStore(path)
    for i in range(40):
        store.rate("s", f"w{worker}-g{i}", i % 6, user=f"user{worker}")
    return worker


def test_concurrent_writers_lose_nothing(tmp_path):
    path = str(tmp_path / "r.sqlite")
    with Pool(4) as pool:
        pool.map(_rate_many, [(path, w) for w in range(4)])
    history = RatingsStore(path).history("s")
    assert len(history) == 160 and history.galaxy.nunique() == 160
    assert history.seq.is_monotonic_increasing


def _open_and_rate(args: tuple[str, int]) -> int:
    path, worker = args
    RatingsStore(path).rate("s", f"w{worker}", 1)
    return worker


def test_processes_creating_one_store_at_once_all_get_it(tmp_path):
    """The first opening of a new store (schema, then WAL mode) races with the others opening it."""
    paths = [str(tmp_path / f"r{i}.sqlite") for i in range(30)]
    with Pool(4) as pool:
        pool.map(_open_and_rate, [(path, w) for path in paths for w in range(4)], chunksize=1)
    for path in paths:
        assert len(RatingsStore(path).history("s")) == 4
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
