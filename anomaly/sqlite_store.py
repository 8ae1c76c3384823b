"""The SQLite plumbing of galsearch's stores (ratings, labels): one file per collection, marked as theirs by
an application id and schema version, in WAL mode, one ``BEGIN IMMEDIATE`` transaction per write, SQLite
failures raised as the store's own error; and the rules the stores share for names, users and exports.
"""

from __future__ import annotations

import getpass
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pandas as pd

from galsearch.embedder.errors import GalsearchError

BUSY_TIMEOUT_S = 30  # how long a write waits for other writers
MAX_NAME = 100  # characters; a name is stored and shown, never used as a path
EXPORT_FORMATS = {".csv": "csv", ".fits": "fits", ".fit": "fits", ".xml": "votable", ".vot": "votable"}
ASTROPY_FORMATS = {"csv": "ascii.csv", "fits": "fits", "votable": "votable"}


def default_user() -> str:
    """The name ratings and labels are stored under when no user is given: the login name."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def check_name(name: str, what: str, error: type[GalsearchError], example: str = "mergers") -> None:
    """Raise ``error`` unless ``name`` (of a ``what``: session, label set, ...) is non-empty printable text
    of at most ``MAX_NAME`` characters."""
    if not name or not name.strip():
        raise error(f"a {what} needs a name, e.g. {example!r}")
    if len(name) > MAX_NAME or not name.isprintable():
        raise error(f"a {what} name is at most {MAX_NAME} printable characters, got {name[:MAX_NAME]!r}")


@dataclass(frozen=True)
class StoreFile:
    """How a store's SQLite file is named in messages, recognised and created."""

    kind: str  # "ratings": "the ratings database ...", "not a galsearch ratings store"
    error: type[GalsearchError]  # what the store raises
    application_id: int  # marks a file as this store's
    version: int  # of the schema
    schema: str  # CREATE statements separated by ';'


class SQLiteStore:
    """A galsearch store in the SQLite file ``path``, created on first use; a subclass sets ``file``."""

    file: ClassVar[StoreFile]

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with self._connect():
            pass

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise self.file.error(f"cannot open the {self.file.kind} database {self.path}: {exc}") from exc
        try:
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
            self._check_or_create(db)
            self._use_wal(db)
            yield db
        except sqlite3.DatabaseError as exc:
            locked = isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)
            problem = "is damaged or not a database"
            if locked:
                problem = f"stayed locked by another process for {BUSY_TIMEOUT_S} s"
            raise self.file.error(f"the {self.file.kind} database {self.path} {problem}: {exc}") from exc
        finally:
            db.close()

    def _check_or_create(self, db: sqlite3.Connection) -> None:
        file = self.file
        if db.execute("PRAGMA application_id").fetchone()[0] == file.application_id:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version != file.version:
                raise file.error(
                    f"{self.path} has {file.kind} schema version {version}; "
                    f"this galsearch reads {file.version}"
                )
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            if db.execute("PRAGMA application_id").fetchone()[0] != file.application_id:  # not made meanwhile
                if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                    raise file.error(
                        f"{self.path} is an SQLite database but not a galsearch {file.kind} store"
                    )
                db.execute(f"PRAGMA application_id = {int(file.application_id)}")
                db.execute(f"PRAGMA user_version = {int(file.version)}")
                for statement in file.schema.split(";"):
                    if statement.strip():
                        db.execute(statement)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _use_wal(self, db: sqlite3.Connection) -> None:
        """Put the file in WAL mode (it stays so). Switching needs the file to itself and, unlike other
        statements, does not wait for locks: when other processes are opening the new store at the same
        moment, try again until they let go."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
        while mode != "wal":
            try:
                mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc):
                    raise
            if mode != "wal":
                if time.monotonic() > deadline:
                    raise self.file.error(f"cannot put the {self.file.kind} database {self.path} in WAL mode")
                time.sleep(0.02)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A connection inside one write transaction: committed on success, rolled back on any error."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _export_table(self, table: pd.DataFrame, path: str | Path, format: str | None) -> int:
        """Write ``table`` as CSV, FITS or VOTable (``format``, else from the suffix of ``path``); returns
        its rows."""
        path = Path(path)
        format = format or EXPORT_FORMATS.get(path.suffix.lower())
        if format not in ASTROPY_FORMATS:
            raise self.file.error(
                f"cannot tell the export format of {path}: use .csv, .fits or .xml (VOTable)"
            )
        from galsearch.index.query import to_astropy

        astropy_table = to_astropy(table, utf8_bytes=format == "fits")
        astropy_table.write(path, format=ASTROPY_FORMATS[format], overwrite=True)
        return len(table)
