"""Crash-safe file primitives: atomic replace, fsync'd appends and an exclusive writer lock."""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from .errors import CollectionError


def utc_now() -> str:
    """The current UTC time as an ISO 8601 string, to the second (for manifests and index records)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def safe_name(text: str, fallback: str) -> str:
    """``text`` made safe as a file name: runs of other characters than letters, digits, '_', '-' and
    '.' become '_', and leading or trailing dots, dashes and underscores go (``fallback`` if nothing
    is left)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._-")[:100] or fallback


def merged_parts(sizes: Sequence[int], added: int) -> tuple[int, int]:
    """Where ``added`` new rows go among parts of ``sizes`` rows (in order): merged with the last parts
    while each holds no more rows than the merge so far, so a store keeps a few parts and a row is
    rewritten a few times however many appends made it. Returns the first part merged (``len(sizes)``:
    none, a new part) and the rows of the merged part."""
    first, total = len(sizes), added
    while first > 0 and sizes[first - 1] <= total:
        first -= 1
        total += sizes[first]
    return first, total


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write a file through ``write(fileobj)`` into a temp file, fsync it, then rename it over ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def atomic_write_json(path: Path, data: Any) -> None:
    """Atomically write ``data`` as indented JSON."""
    payload = (json.dumps(data, indent=2, sort_keys=False) + "\n").encode()
    atomic_write(path, lambda f: f.write(payload))


def append_records(path: Path, committed_bytes: int, data: bytes) -> None:
    """Append ``data`` after the first ``committed_bytes`` of ``path``, dropping any uncommitted tail."""
    with open(path, "ab") as f:
        f.truncate(committed_bytes)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


@contextmanager
def exclusive_lock(path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` or fail at once with a clear message."""
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise CollectionError(f"{what} is being written by {holder}; wait for it to finish") from None
        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()}")
        f.flush()
        try:
            yield
        finally:
            f.truncate(0)
            fcntl.flock(f, fcntl.LOCK_UN)
