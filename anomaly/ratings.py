"""The ratings store: one SQLite file per collection (``ratings.sqlite``) holding every rating ever made.

A *session* is one user's named hunt ("mergers", "lenses"); each rating records the galaxy id, a score
from 0 (boring) to 5 (most interesting), the user and the UTC time. Ratings are never overwritten: rating
a galaxy again adds a row and the latest one counts; undo deletes the latest row. The file is in WAL
mode and every write is one transaction, so a process killed mid-write loses at most that rating and
several processes (or browser sessions) can rate at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from galsearch.embedder.errors import GalsearchError
from galsearch.embedder.storage import utc_now

from .sqlite_store import SQLiteStore, StoreFile, check_name, default_user

RATINGS_FILE = "ratings.sqlite"
APPLICATION_ID = 0x47534C52  # "GSLR": marks the file as a galsearch ratings database
SCHEMA_VERSION = 1
MIN_RATING, MAX_RATING = 0.0, 5.0

SCHEMA = f"""
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


RATINGS = StoreFile("ratings", RatingsError, APPLICATION_ID, SCHEMA_VERSION, SCHEMA)


@dataclass(frozen=True)
class Rating:
    """One stored rating."""

    seq: int
    session: str
    galaxy: str
    rating: float
    user: str
    time: str


class RatingsStore(SQLiteStore):
    """The ratings database at ``path`` (created on first use)."""

    file = RATINGS

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
        check_name(name, "session", RatingsError)
        with self._connect() as db:  # a read first: most loops open a session that exists
            if db.execute("SELECT 1 FROM sessions WHERE name = ?", (name,)).fetchone():
                return
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
        check_name(session, "session", RatingsError)
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
        with self._connect() as db:
            rows = db.execute(
                "SELECT seq, session, galaxy, rating, user, time FROM ratings WHERE seq IN "
                "(SELECT max(seq) FROM ratings WHERE session = ? GROUP BY galaxy) ORDER BY seq",
                (session,),
            ).fetchall()
        return pd.DataFrame(rows, columns=["seq", "session", "galaxy", "rating", "user", "time"])

    def export(self, path: str | Path, session: str | None = None, format: str | None = None) -> int:
        """Write the ratings (every row, of one session when given) as CSV, FITS or VOTable; returns rows."""
        return self._export_table(self.history(session), path, format)


def ratings_store(collection_path: str | Path) -> RatingsStore:
    """The ratings store of the collection at ``collection_path``."""
    return RatingsStore(Path(collection_path) / RATINGS_FILE)
