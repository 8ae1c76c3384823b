"""Embed every galaxy of a collection with one encoder: streaming, batched, resumable."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .band_mixer import BandMixer, calibrated_mixer, recorded_mixer, shares_inputs
from .collection import Collection, image_rows, open_collection
from .distributed import PARTITION_ROWS
from .errors import EncoderError

if TYPE_CHECKING:
    from distributed import Client

    from .encoders import Encoder

DEFAULT_ENCODER = "default"  # encoders.DEFAULT_SPEC, named here so that importing this module loads no torch
COMMIT_SECONDS = 2.0
CALIBRATION_SAMPLE = 2048  # galaxies the band mixer of new N-band embeddings is measured on
# Fingerprint keys that identify the embedding function; the spec string that named it does not, nor do the
# band names (recorded with it): an encoder fitted to other bands has other input_size channels or weights.
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
    bands = f", bands {' '.join(fingerprint['bands'])}" if fingerprint.get("bands") else ""
    mixer = recorded_mixer(fingerprint)
    if mixer is not None and fingerprint.get("bands"):
        bands += f"; {BandMixer(mixer, fingerprint['bands'])}"
    return f"{fingerprint['spec']} ({fingerprint['architecture']}, {size} px{bands}{tta})"


def band_names(collection: Collection) -> list[str] | None:
    """The band names recorded for ``collection``'s channels, or None for a collection without them
    (encoders are then matched to it by band count)."""
    recorded = collection.preprocessing.get("bands")
    return [str(b) for b in recorded] if recorded else None


def embed(
    collection: str | Path | Collection,
    encoder: str | Encoder = DEFAULT_ENCODER,
    *,
    tta: bool = False,
    replace: bool = False,
    batch_size: int = 128,
    device: str | None = None,
    progress: bool = True,
    dask: str | None = None,
    workers: int | None = None,
    partition_rows: int = PARTITION_ROWS,
) -> EmbedReport:
    """Embed the galaxies of ``collection`` that have no embedding yet.

    A re-run continues where an interrupted one stopped, and embeds galaxies ingested since. If the
    collection was embedded with a different encoder, this refuses unless ``replace`` is set, which
    discards the old embeddings and starts again: embeddings of two encoders are never mixed.

    With ``dask`` (a scheduler address, ``tcp://host:8786``) or ``workers`` (a local cluster of that many
    processes), the rows are cut into partitions of ``partition_rows`` that Dask workers embed in
    parallel, each loading the encoder (a spec) once and reading its rows from the collection's files,
    which must be on a filesystem every worker sees; partitions are committed here in row order.
    """
    coll = collection if isinstance(collection, Collection) else open_collection(collection)
    channels, bands = coll.image_shape[2], band_names(coll)
    if isinstance(encoder, str) and not replace and _done_by(coll, encoder, tta):
        return EmbedReport(coll.path, coll.encoder["spec"], 0, len(coll), len(coll), 0.0)
    mixer = _band_mixer(coll, replace)
    if dask is None and workers is None:
        from .encoders import load_encoder, match_bands

        if isinstance(encoder, str):
            enc = load_encoder(encoder, device, channels=channels, bands=bands, source=coll.path, mixer=mixer)
        else:
            enc = match_bands(encoder, channels, bands, coll.path, mixer)
        with coll.writing():
            start = _begin(coll, enc.fingerprint(coll.image_shape[0], tta), replace)
            started = time.perf_counter()
            _embed_rows(coll, enc, start, tta, batch_size, progress)
        spec = enc.spec
    else:
        if not isinstance(encoder, str):
            raise EncoderError(
                "Dask workers load the encoder themselves: give its spec (a string), not an Encoder"
            )
        from .distributed import dask_client

        with dask_client(dask, workers) as client:
            wanted = client.submit(
                _worker_fingerprint, encoder, device, coll.image_shape, bands, mixer, tta, pure=False
            ).result()
            with coll.writing():
                start = _begin(coll, wanted, replace)
                started = time.perf_counter()
                _embed_partitions(
                    client, coll, wanted, bands, mixer, start, device, batch_size, partition_rows, progress
                )
        spec = wanted["spec"]
    return EmbedReport(coll.path, spec, len(coll) - start, start, len(coll), time.perf_counter() - started)


def _band_mixer(coll: Collection, replace: bool) -> np.ndarray | None:
    """The band mixer that adapts 3-band weights to the bands of ``coll`` where several feed one input: that
    of its embeddings; for new ones (none yet, or ``replace``), measured on its first CALIBRATION_SAMPLE
    galaxies (:func:`galsearch.embedder.band_mixer.calibrated_mixer`); None where no input is shared."""
    if coll.counts["embedded"] and not replace:
        return recorded_mixer(coll.encoder)
    bands = band_names(coll)
    if not shares_inputs(bands):
        return None
    return calibrated_mixer(np.asarray(coll.images[:CALIBRATION_SAMPLE]), bands)


def _done_by(coll: Collection, spec: str, tta: bool) -> bool:
    """Whether every galaxy is embedded already by the encoder ``spec`` names (with ``tta`` alike), known
    without loading it (no torch import, no cluster): a name whose weights cannot change under it (a timm,
    hub, ``imagenet:`` or packaged encoder); a checkpoint file may have been rewritten, so it is loaded."""
    current = coll.encoder
    if current is None or coll.counts["embedded"] < len(coll) or Path(spec.strip()).exists():
        return False
    return current.get("spec") == spec.strip() and bool(current.get("tta")) == tta


def _begin(coll: Collection, wanted: dict, replace: bool) -> int:
    """Apply the one-encoder rule for embeddings made by ``wanted``; the first row to embed (in writing)."""
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
        coll.start_embeddings(wanted, wanted["dim"])
    return coll.counts["embedded"]


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


def _embed_partitions(
    client: Client,
    coll: Collection,
    wanted: dict,
    bands: list[str] | None,
    mixer: np.ndarray | None,
    start: int,
    device: str | None,
    batch_size: int,
    partition_rows: int,
    progress: bool,
) -> None:
    """Embed rows ``start:`` on the cluster, one task per partition, committing each in row order."""
    from tqdm.auto import tqdm

    from .distributed import in_order, row_ranges, slots_per_host

    results = in_order(
        client,
        _embed_partition,
        row_ranges(start, len(coll), partition_rows),
        collection=str(coll.path.resolve()),
        image_shape=coll.image_shape,
        bands=bands,
        mixer=mixer,
        wanted=wanted,
        device=device,
        batch_size=batch_size,
        slots=slots_per_host(client),
    )
    with tqdm(total=len(coll), initial=start, desc="embed", unit="img", disable=not progress) as bar:
        for vectors in results:
            coll.append_embeddings(vectors)
            bar.update(len(vectors))


# ---- on a Dask worker -------------------------------------------------------------------------------

_worker_encoder: tuple[str, Encoder] | None = None  # the last encoder this process loaded, by fingerprint
_worker_lock = threading.Lock()


def _worker_fingerprint(
    spec: str,
    device: str | None,
    image_shape: tuple[int, int, int],
    bands: list[str] | None,
    mixer: np.ndarray | None,
    tta: bool,
) -> dict:
    """The fingerprint of the encoder ``spec`` fitted to the images' bands as a worker loads it (keeping it
    loaded for the tasks)."""
    from .encoders import load_encoder

    global _worker_encoder
    with _worker_lock:
        encoder = load_encoder(spec, device, channels=image_shape[2], bands=bands, mixer=mixer)
        fingerprint = encoder.fingerprint(image_shape[0], tta)
        _worker_encoder = (_cache_key(fingerprint, device), encoder)
    return fingerprint


def _embed_partition(
    first: int,
    stop: int,
    *,
    collection: str,
    image_shape: tuple[int, int, int],
    bands: list[str] | None,
    mixer: np.ndarray | None,
    wanted: dict,
    device: str | None,
    batch_size: int,
    slots: dict[str, int],
) -> np.ndarray:
    """Embeddings of rows ``first:stop``, read from the collection's image file, by the ``wanted`` encoder."""
    import torch

    from .distributed import cpus_per_task
    from .encoders import load_encoder

    global _worker_encoder
    torch.set_num_threads(cpus_per_task(slots))
    key = _cache_key(wanted, device)
    with _worker_lock:
        if _worker_encoder is None or _worker_encoder[0] != key:
            encoder = load_encoder(wanted["spec"], device, channels=image_shape[2], bands=bands, mixer=mixer)
            if not same_encoder(encoder.fingerprint(image_shape[0], wanted["tta"]), wanted):
                raise EncoderError(
                    f"the encoder {wanted['spec']!r} loads with other weights or preprocessing on this "
                    "worker than on the first one: every worker needs the same files and versions"
                )
            _worker_encoder = (key, encoder)
        encoder = _worker_encoder[1]
    images = image_rows(collection, image_shape, first, stop)
    return np.concatenate(
        [
            encoder.embed(images[i : i + batch_size], tta=wanted["tta"])
            for i in range(0, stop - first, batch_size)
        ]
    )


def _cache_key(fingerprint: dict, device: str | None) -> str:
    identity = {k: fingerprint.get(k) for k in IDENTITY_KEYS}
    return json.dumps([identity, device], sort_keys=True)


def encoder_of(collection: Collection, device: str | None = None) -> Encoder:
    """Reload the encoder that embedded ``collection``, fitted to its bands (to embed query images the same
    way)."""
    from .encoders import load_encoder

    fingerprint = collection.encoder
    if fingerprint is None:
        raise EncoderError(
            f"{collection.path} has no embeddings yet: run `galsearch embed {collection.path}`"
        )
    channels, bands, mixer = collection.image_shape[2], band_names(collection), recorded_mixer(fingerprint)
    enc = load_encoder(
        fingerprint["spec"], device, channels=channels, bands=bands, source=collection.path, mixer=mixer
    )
    if enc.weights_sha256 != fingerprint["weights_sha256"]:
        raise EncoderError(
            f"the encoder {fingerprint['spec']!r} now has different weights than when {collection.path} "
            "was embedded; re-embed with --replace"
        )
    return enc


def calibrate_bands(
    collection: str | Path | Collection,
    out: str | Path,
    encoder: str = DEFAULT_ENCODER,
    sample: int = CALIBRATION_SAMPLE,
    device: str | None = None,
) -> BandMixer:
    """Save to ``out`` the 3-band ``encoder`` adapted to the bands of ``collection`` through the band mixer
    measured on its first ``sample`` images (:func:`galsearch.embedder.band_mixer.calibrated_mixer`), and
    return the mixer. ``embed`` measures one for each collection by itself; this saves one to share:
    embedding other collections of the same bands with ``out`` makes their embeddings comparable."""
    from .encoders import load_encoder, save_encoder

    coll = collection if isinstance(collection, Collection) else open_collection(collection)
    bands = band_names(coll)
    if bands is None or len(coll) == 0:
        missing = "no galaxies" if len(coll) == 0 else "no band names"
        raise EncoderError(
            f"{coll.path} has {missing}: a band mixer is measured on galaxies of named filters "
            "(ingest with --bands)"
        )
    if sample < 1:
        raise ValueError(f"sample must be at least 1 galaxy, got {sample}")
    mixer = calibrated_mixer(np.asarray(coll.images[:sample]), bands)
    adapted = load_encoder(encoder, device, channels=len(bands), bands=bands, source=coll.path, mixer=mixer)
    if "band_mixer" not in (adapted.provenance or {}):  # not adapted, or no input shared: nothing folded
        raise EncoderError(
            f"nothing to calibrate: encoder {encoder} takes the bands {bands} of {coll.path} without "
            "sharing an input among them (a band mixer weights bands that feed one input of 3-band weights)"
        )
    save_encoder(adapted, out, training={"band_mixer": mixer.tolist(), "calibrated_on": str(coll.path)})
    return BandMixer(mixer, bands)
