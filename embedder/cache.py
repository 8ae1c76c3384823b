"""Arrays computed from a collection's embeddings, cached in it while the embeddings stay the same::

    COLLECTION/cache/NAME-DIGEST.npy

``DIGEST`` hashes what the array was computed from: the embeddings' state (count, dimension, encoder
identity, and the size and modification time of ``embeddings.f32``) and the computation's parameters. A
re-embed, or galaxies embedded since, changes the digest, so a stale array is never read; writing a new one
removes the older ones of that name. Files are written atomically and read back as read-only memory maps;
a collection that cannot be written to computes the array each time.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from .collection import CACHE as CACHE_DIR
from .collection import EMBEDDINGS, Collection
from .embed import IDENTITY_KEYS
from .storage import atomic_write


def embeddings_state(collection: Collection) -> dict[str, Any]:
    """What identifies the embeddings of ``collection`` as they are now."""
    encoder = collection.encoder or {}
    file = collection.path / EMBEDDINGS
    stat = file.stat() if file.is_file() else None
    return {
        "count": collection.counts["embedded"],
        "dim": collection.embedding_dim,
        "encoder": {key: encoder.get(key) for key in IDENTITY_KEYS},
        "file": [stat.st_size, stat.st_mtime_ns] if stat else None,
    }


def cached_array(
    collection: Collection, name: str, params: dict[str, Any], compute: Callable[[], np.ndarray]
) -> np.ndarray:
    """The array ``compute()`` makes from the embeddings of ``collection`` with ``params``, cached on disk.

    ``name`` (letters, digits, ``-``, ``_``) tells arrays apart that may be cached side by side;
    ``params`` (JSON-ready) are everything else the array depends on besides the embeddings.
    """
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise ValueError(f"a cache name is letters, digits, '-' and '_', got {name!r}")
    key = json.dumps({"embeddings": embeddings_state(collection), "params": params}, sort_keys=True)
    folder = collection.path / CACHE_DIR
    file = folder / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npy"
    try:
        return np.load(file, mmap_mode="r")
    except (OSError, ValueError):  # absent, or damaged: compute it again
        pass
    array = compute()
    try:
        folder.mkdir(exist_ok=True)
        atomic_write(file, lambda f: np.save(f, np.ascontiguousarray(array)))
        for older in folder.glob(f"{name}-*.npy"):
            if older != file and re.fullmatch(rf"{re.escape(name)}-[0-9a-f]{{16}}\.npy", older.name):
                older.unlink(missing_ok=True)
        return np.load(file, mmap_mode="r")  # as a later call reads it, so both see the same array
    except OSError:  # a read-only collection: use what was computed, uncached
        return array
