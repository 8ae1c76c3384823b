"""Label sets: one SQLite file per collection (``labels.sqlite``) holding every labelling ever made.

A *label set* ("morphology", "lenses") gives galaxies a class ("ring", "merger", "1"). Each write is one
*action*: labelling 48 galaxies as ring at once is one action, removing labels another. Every row records
the galaxy and its class (none for a removal) under its action's user and UTC time. Rows are never
overwritten: labelling a galaxy again adds a row and the latest one counts; undo deletes a user's latest
action, all its rows. The file is in WAL mode and every action is one transaction, as in the ratings store.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from galsearch.embedder.errors import CollectionError, GalsearchError
from galsearch.embedder.storage import utc_now

from .sqlite_store import SQLiteStore, StoreFile, check_name, default_user

if TYPE_CHECKING:
    import sqlite3

    from galsearch.embedder.collection import Collection

LABELS_FILE = "labels.sqlite"
APPLICATION_ID = 0x47534C4C  # "GSLL": marks the file as a galsearch label database
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE label_sets (
    name TEXT PRIMARY KEY,
    created TEXT NOT NULL
);
CREATE TABLE actions (
    action INTEGER PRIMARY KEY AUTOINCREMENT,
    label_set TEXT NOT NULL REFERENCES label_sets(name),
    user TEXT NOT NULL,
    time TEXT NOT NULL
);
CREATE TABLE labels (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    action INTEGER NOT NULL REFERENCES actions(action),
    galaxy TEXT NOT NULL,
    label TEXT
);
CREATE INDEX actions_by_set ON actions(label_set, user);
CREATE INDEX labels_by_action ON labels(action);
"""
HISTORY = (
    "SELECT l.seq, l.action, a.label_set, l.galaxy, l.label, a.user, a.time "
    "FROM labels l JOIN actions a ON a.action = l.action"
)
HISTORY_COLUMNS = ["seq", "action", "set", "id", "label", "user", "time"]


class LabelError(GalsearchError):
    """The label database is unusable, or a label set, label or galaxy id is invalid."""


LABELS = StoreFile("label", LabelError, APPLICATION_ID, SCHEMA_VERSION, SCHEMA)


class LabelStore(SQLiteStore):
    """The label database at ``path`` (created on first use). It stores ids as given: check them against
    the collection first with ``check_ids``."""

    file = LABELS

    def sets(self) -> pd.DataFrame:
        """Every label set: its creation time, how many galaxies it labels now and their classes."""
        with self._connect() as db:
            sets = db.execute("SELECT name, created FROM label_sets ORDER BY created, rowid").fetchall()
            latest = db.execute(  # SQLite takes the bare columns from the row with the max(seq)
                "SELECT a.label_set, l.label, max(l.seq) FROM labels l JOIN actions a ON a.action = l.action "
                "GROUP BY a.label_set, l.galaxy"
            ).fetchall()
        labelled = pd.DataFrame(latest, columns=["set", "label", "seq"]).dropna(subset=["label"])
        by_set = labelled.groupby("set")["label"]
        table = pd.DataFrame(sets, columns=["set", "created"])
        table["labelled"] = table["set"].map(by_set.size()).fillna(0).astype(int)
        table["classes"] = table["set"].map(by_set.agg(lambda s: ",".join(sorted(set(s))))).fillna("")
        return table

    def label(self, label_set: str, ids: Iterable[str] | str, label: str, user: str | None = None) -> int:
        """Label the galaxies ``ids`` as ``label`` in ``label_set`` (created if new) in one action; returns
        the rows stored."""
        check_name(label_set, "label set", LabelError)
        check_name(label, "label", LabelError, example="ring")
        ids = _unique_ids(ids)
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO label_sets (name, created) VALUES (?, ?)", (label_set, utc_now())
            )
            self._store(db, label_set, [(galaxy, label) for galaxy in ids], user)
        return len(ids)

    def unlabel(self, label_set: str, ids: Iterable[str] | str, user: str | None = None) -> int:
        """Remove the labels of ``ids`` in ``label_set`` in one action (their history is kept); returns how
        many labels it removed (ids without a label are passed over)."""
        ids = _unique_ids(ids)
        with self._transaction() as db:
            labelled = set(self._current(db, label_set)["id"])
            removed = [galaxy for galaxy in ids if galaxy in labelled]
            if removed:
                self._store(db, label_set, [(galaxy, None) for galaxy in removed], user)
        return len(removed)

    def undo(self, label_set: str, user: str | None = None) -> pd.DataFrame | None:
        """Delete ``user``'s latest action in ``label_set`` (all its rows; never another user's) and return
        its rows as ``history`` gives them; None if the user has none. A set left without actions goes."""
        user = user or default_user()
        with self._transaction() as db:
            action = db.execute(
                "SELECT max(action) FROM actions WHERE label_set = ? AND user = ?", (label_set, user)
            ).fetchone()[0]
            if action is None:
                return None
            undone = _history(db, " WHERE l.action = ?", (action,))
            db.execute("DELETE FROM labels WHERE action = ?", (action,))
            db.execute("DELETE FROM actions WHERE action = ?", (action,))
            db.execute(
                "DELETE FROM label_sets WHERE name = ? AND NOT EXISTS "
                "(SELECT 1 FROM actions WHERE label_set = ?)",
                (label_set, label_set),
            )
        return undone

    def history(self, label_set: str | None = None) -> pd.DataFrame:
        """Every stored row, oldest first (of one set when given); a removal's label is missing (NaN)."""
        with self._connect() as db:
            if label_set is None:
                return _history(db, "", ())
            return _history(db, " WHERE a.label_set = ?", (label_set,))

    def current(self, label_set: str) -> pd.DataFrame:
        """Each galaxy's label in ``label_set`` now (its latest row, unless a removal), with who gave it when,
        in the order the galaxies were first labelled."""
        with self._connect() as db:
            return self._current(db, label_set)

    def export(self, path: str | Path, label_set: str, format: str | None = None) -> int:
        """Write the current labels of ``label_set`` (id, label, user, time) as CSV, FITS or VOTable, a file
        that ``finetune --labels`` reads; returns rows."""
        return self._export_table(self.current(label_set), path, format)

    def _current(self, db: sqlite3.Connection, label_set: str) -> pd.DataFrame:
        if db.execute("SELECT 1 FROM label_sets WHERE name = ?", (label_set,)).fetchone() is None:
            names = [name for (name,) in db.execute("SELECT name FROM label_sets ORDER BY name")]
            known = f"the sets are {', '.join(map(repr, names))}" if names else "it has none yet"
            raise LabelError(f"no label set {label_set!r} in {self.path} ({known})")
        history = _history(db, " WHERE a.label_set = ?", (label_set,))
        first_labelled = history.drop_duplicates("id")["id"]
        latest = history.drop_duplicates("id", keep="last").set_index("id").loc[first_labelled]
        now = latest[latest["label"].notna()].reset_index()
        return now[["id", "label", "user", "time"]]

    def _store(
        self, db: sqlite3.Connection, label_set: str, rows: list[tuple[str, str | None]], user: str | None
    ) -> None:
        """Store ``rows`` (galaxy, label or None) as one new action of ``user`` in ``label_set``."""
        action = db.execute(
            "INSERT INTO actions (label_set, user, time) VALUES (?, ?, ?)",
            (label_set, user or default_user(), utc_now()),
        ).lastrowid
        db.executemany(
            "INSERT INTO labels (action, galaxy, label) VALUES (?, ?, ?)",
            [(action, galaxy, label) for galaxy, label in rows],
        )


def _history(db: sqlite3.Connection, where: str, params: tuple) -> pd.DataFrame:
    rows = db.execute(HISTORY + where + " ORDER BY l.seq", params).fetchall()
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS).astype({"label": "str"})  # a removal's: missing


def _unique_ids(ids: Iterable[str] | str) -> list[str]:
    """The ids as text, each once, in their order (a single string is one id)."""
    unique = list(dict.fromkeys([ids] if isinstance(ids, str) else map(str, ids)))
    if not unique:
        raise LabelError("no galaxy ids given")
    blank = [galaxy for galaxy in unique if not galaxy.strip()]
    if blank:
        raise LabelError(f"a galaxy id is non-empty text, got {blank[0]!r}")
    return unique


def check_ids(collection: Collection, ids: list[str]) -> None:
    """Raise LabelError unless every id is a galaxy of ``collection`` (naming at most 10 that are not)."""
    try:
        collection.rows_of(ids)
    except CollectionError as exc:
        raise LabelError(str(exc)) from exc


def label_store(collection_path: str | Path) -> LabelStore:
    """The label store of the collection at ``collection_path``."""
    return LabelStore(Path(collection_path) / LABELS_FILE)
