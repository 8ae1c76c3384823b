"""Embed every galaxy of a collection with one encoder: streaming, batched, resumable."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .collection import Collection, open_collection
from .errors import EncoderError

if TYPE_CHECKING:
    from .encoders import Encoder

DEFAULT_ENCODER = "default"  # encoders.DEFAULT_SPEC, named here so that importing this module loads no torch
COMMIT_SECONDS = 2.0
# Fingerprint keys that identify the embedding function; the spec string that named it does not.
IDENTITY_KEYS = ("architecture", "weights_sha256", "input_size", "mean", "std", "interpolation", "dim", "tta")


@dataclass
class EmbedReport:
    """What one embed run did."""

    collection: Path
    encoder: str
    embedded: int
    resumed_from: int
    total: int
    seconds: float

    def summary(self) -> str:
        """One human-readable line."""
        if self.embedded == 0:
            return f"all {self.total} galaxies in {self.collection} are already embedded with {self.encoder}"
        rate = self.embedded / self.seconds if self.seconds else float("inf")
        resumed = f", resuming after {self.resumed_from}" if self.resumed_from else ""
        return (
            f"embedded {self.embedded} galaxies with {self.encoder} in {self.seconds:.1f} s "
            f"({rate:.0f} images/s{resumed}); {self.total} of {self.total} done"
        )


def same_encoder(a: dict, b: dict) -> bool:
    """Whether two encoder fingerprints make identical embeddings."""
    return all(a.get(k) == b.get(k) for k in IDENTITY_KEYS)


def describe(fingerprint: dict) -> str:
    """Short human description of an encoder fingerprint."""
    tta = ", tta" if fingerprint.get("tta") else ""
    size = "x".join(map(str, fingerprint["input_size"][1:]))
    return f"{fingerprint['spec']} ({fingerprint['architecture']}, {size} px{tta})"


def embed(
    collection: str | Path | Collection,
    encoder: str | Encoder = DEFAULT_ENCODER,
    *,
    tta: bool = False,
    replace: bool = False,
    batch_size: int = 128,
    device: str | None = None,
    progress: bool = True,
) -> EmbedReport:
    """Embed the galaxies of ``collection`` that have no embedding yet.

    A re-run continues where an interrupted one stopped, and embeds galaxies ingested since. If the
    collection was embedded with a different encoder, this refuses unless ``replace`` is set, which
    discards the old embeddings and starts again: embeddings of two encoders are never mixed.
    """
    from .encoders import load_encoder

    coll = collection if isinstance(collection, Collection) else open_collection(collection)
    enc = load_encoder(encoder, device) if isinstance(encoder, str) else encoder
    wanted = enc.fingerprint(coll.image_shape[0], tta)
    with coll.writing():
        current = coll.encoder
        if current is not None and coll.counts["embedded"] and not same_encoder(current, wanted):
            if not replace:
                raise EncoderError(
                    f"{coll.path} is embedded with {describe(current)}; you asked for {describe(wanted)}. "
                    "Embeddings of two encoders are never mixed: re-embed everything with --replace "
                    "(replace=True), or embed into another collection"
                )
            current = None
        if current is None or not same_encoder(current, wanted):
            coll.start_embeddings(wanted, enc.dim)
        start = coll.counts["embedded"]
        started = time.perf_counter()
        _embed_rows(coll, enc, start, tta, batch_size, progress)
    return EmbedReport(
        coll.path, enc.spec, len(coll) - start, start, len(coll), time.perf_counter() - started
    )


def _embed_rows(
    coll: Collection, enc: Encoder, start: int, tta: bool, batch_size: int, progress: bool
) -> None:
    """Embed rows ``start:`` in batches, committing every few seconds and on interruption."""
    from tqdm.auto import tqdm

    images = coll.images
    pending: list[np.ndarray] = []
    last_commit = time.monotonic()
    bar = tqdm(total=len(coll), initial=start, desc="embed", unit="img", disable=not progress)
    try:
        for first in range(start, len(coll), batch_size):
            pending.append(enc.embed(images[first : first + batch_size], tta=tta))
            bar.update(len(pending[-1]))
            if time.monotonic() - last_commit > COMMIT_SECONDS:
                coll.append_embeddings(np.concatenate(pending))
                pending.clear()
                last_commit = time.monotonic()
    finally:
        if pending:  # also on Ctrl-C: every finished batch is kept
            coll.append_embeddings(np.concatenate(pending))
        bar.close()


def encoder_of(collection: Collection, device: str | None = None) -> Encoder:
    """Reload the encoder that embedded ``collection`` (to embed query images the same way)."""
    from .encoders import load_encoder

    fingerprint = collection.encoder
    if fingerprint is None:
        raise EncoderError(
            f"{collection.path} has no embeddings yet: run `galsearch embed {collection.path}`"
        )
    enc = load_encoder(fingerprint["spec"], device)
    if enc.weights_sha256 != fingerprint["weights_sha256"]:
        raise EncoderError(
            f"the encoder {fingerprint['spec']!r} now has different weights than when {collection.path} "
            "was embedded; re-embed with --replace"
        )
    return enc
