"""The ratings store: one SQLite file per collection (``ratings.sqlite``) holding every rating ever made.

A *session* is one user's named hunt ("mergers", "lenses"); each rating records the galaxy id, a score
from 0 (boring) to 5 (most interesting), the user and the UTC time. Ratings are never overwritten: rating
a galaxy again adds a row and the latest one counts; undo deletes the latest row. The file is in WAL
mode and every write is one transaction, so a process killed mid-write loses at most that rating and
several processes (or browser sessions) can rate at once.
"""

from __future__ import annotations

import getpass
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from embedder.errors import GalsearchError
from embedder.storage import utc_now

RATINGS_FILE = "ratings.sqlite"
APPLICATION_ID = 0x47534C52  # "GSLR": marks the file as a galsearch ratings database
SCHEMA_VERSION = 1
MIN_RATING, MAX_RATING = 0.0, 5.0
BUSY_TIMEOUT_S = 30  # how long a write waits for other writers
MAX_SESSION_NAME = 100  # characters; a name is stored and shown, never used as a path
EXPORT_FORMATS = {".csv": "csv", ".fits": "fits", ".fit": "fits", ".xml": "votable", ".vot": "votable"}

SCHEMA = f"""
PRAGMA application_id = {APPLICATION_ID};
PRAGMA user_version = {SCHEMA_VERSION};
CREATE TABLE sessions (
    name TEXT PRIMARY KEY,
    created TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT ''
);
CREATE TABLE ratings (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    session TEXT NOT NULL REFERENCES sessions(name),
    galaxy TEXT NOT NULL,
    rating REAL NOT NULL CHECK (rating BETWEEN {MIN_RATING} AND {MAX_RATING}),
    user TEXT NOT NULL,
    time TEXT NOT NULL
);
CREATE INDEX ratings_by_session ON ratings(session, galaxy);
"""


class RatingsError(GalsearchError):
    """The ratings database is unusable, or a rating or session is invalid."""


@dataclass(frozen=True)
class Rating:
    """One stored rating."""

    seq: int
    session: str
    galaxy: str
    rating: float
    user: str
    time: str


def default_user() -> str:
    """The name ratings are stored under when no user is given: the login name."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class RatingsStore:
    """The ratings database at ``path`` (created on first use)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with self._connect():
            pass

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise RatingsError(f"cannot open the ratings database {self.path}: {exc}") from exc
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
            raise RatingsError(f"the ratings database {self.path} {problem}: {exc}") from exc
        finally:
            db.close()

    def _check_or_create(self, db: sqlite3.Connection) -> None:
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        if app_id == APPLICATION_ID:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                raise RatingsError(
                    f"{self.path} has ratings schema version {version}; this galsearch reads {SCHEMA_VERSION}"
                )
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            if db.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:  # not made meanwhile
                if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                    raise RatingsError(f"{self.path} is an SQLite database but not a galsearch ratings store")
                for statement in SCHEMA.split(";"):
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
                    raise RatingsError(f"cannot put the ratings database {self.path} in WAL mode")
                time.sleep(0.02)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # ---- sessions ----------------------------------------------------------------------------

    def sessions(self) -> pd.DataFrame:
        """Every session with its creation time and number of rated galaxies."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT s.name, s.created, s.description, count(DISTINCT r.galaxy) "
                "FROM sessions s LEFT JOIN ratings r ON r.session = s.name GROUP BY s.name ORDER BY s.created"
            ).fetchall()
        return pd.DataFrame(rows, columns=["session", "created", "description", "rated"])

    def ensure_session(self, name: str, description: str = "") -> None:
        """Create the session ``name`` unless it exists."""
        _check_session_name(name)
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO sessions (name, created, description) VALUES (?, ?, ?)",
                (name, utc_now(), description),
            )

    # ---- ratings -----------------------------------------------------------------------------

    def rate(self, session: str, galaxy: str, rating: float, user: str | None = None) -> Rating:
        """Store one rating (0-5) of ``galaxy`` in ``session``, creating the session if needed."""
        rating = float(rating)
        if not MIN_RATING <= rating <= MAX_RATING:
            raise RatingsError(f"a rating is a number from 0 to 5, got {rating:g} for {galaxy}")
        user = user or default_user()
        _check_session_name(session)
        time = utc_now()
        with self._transaction() as db:  # one transaction: the session (if new) and the rating
            db.execute(
                "INSERT OR IGNORE INTO sessions (name, created, description) VALUES (?, ?, '')",
                (session, time),
            )
            cursor = db.execute(
                "INSERT INTO ratings (session, galaxy, rating, user, time) VALUES (?, ?, ?, ?, ?)",
                (session, str(galaxy), rating, user, time),
            )
        return Rating(cursor.lastrowid, session, str(galaxy), rating, user, time)

    def undo(self, session: str, user: str | None = None) -> Rating | None:
        """Delete and return the latest rating in ``session`` (by ``user`` when given); None if none."""
        query = "SELECT seq, session, galaxy, rating, user, time FROM ratings WHERE session = ?"
        params: tuple = (session,)
        if user:
            query, params = query + " AND user = ?", (session, user)
        with self._transaction() as db:
            row = db.execute(query + " ORDER BY seq DESC LIMIT 1", params).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM ratings WHERE seq = ?", (row[0],))
        return Rating(*row)

    def history(self, session: str | None = None) -> pd.DataFrame:
        """Every stored rating, oldest first (of one session when given)."""
        query = "SELECT seq, session, galaxy, rating, user, time FROM ratings"
        params: tuple = ()
        if session is not None:
            query, params = query + " WHERE session = ?", (session,)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY seq", params).fetchall()
        return pd.DataFrame(rows, columns=["seq", "session", "galaxy", "rating", "user", "time"])

    def latest(self, session: str) -> pd.DataFrame:
        """The current rating of each galaxy rated in ``session`` (its latest), in rating order."""
        history = self.history(session)
        return history.drop_duplicates("galaxy", keep="last").reset_index(drop=True)

    def export(self, path: str | Path, session: str | None = None, format: str | None = None) -> int:
        """Write the ratings (every row, of one session when given) as CSV, FITS or VOTable; returns rows."""
        path = Path(path)
        format = format or EXPORT_FORMATS.get(path.suffix.lower())
        if format not in set(EXPORT_FORMATS.values()):
            raise RatingsError(f"cannot tell the export format of {path}: use .csv, .fits or .xml (VOTable)")
        from astropy.table import Table

        table = Table.from_pandas(self.history(session))
        table.write(
            path, format={"csv": "ascii.csv", "fits": "fits", "votable": "votable"}[format], overwrite=True
        )
        return len(table)


def _check_session_name(name: str) -> None:
    if not name or not name.strip():
        raise RatingsError("a session needs a name, e.g. 'mergers'")
    if len(name) > MAX_SESSION_NAME or not name.isprintable():
        raise RatingsError(
            f"a session name is at most {MAX_SESSION_NAME} printable characters, "
            f"got {name[:MAX_SESSION_NAME]!r}"
        )


def ratings_store(collection_path: str | Path) -> RatingsStore:
    """The ratings store of the collection at ``collection_path``."""
    return RatingsStore(Path(collection_path) / RATINGS_FILE)
