"""Ingest: validate, stretch and resize images from any source and append them to a collection."""

from __future__ import annotations

import operator
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from skimage.transform import resize
from tqdm.auto import tqdm

from .collection import MANIFEST, Collection
from .errors import IngestError
from .sources import Item, read_source
from .stretch import Stretch, to_uint8

MIN_SIDE = 8


@dataclass
class Skipped:
    """An item that was not stored, and why."""

    source: str
    id: str | None
    reason: str


@dataclass
class IngestReport:
    """What one ingest run stored and skipped."""

    collection: Path
    stored: int = 0
    already_present: int = 0
    skipped: list[Skipped] = field(default_factory=list)

    def summary(self) -> str:
        """A few human-readable lines: counts, then one line per skipped item (first 50)."""
        lines = [
            f"stored {self.stored} galaxies in {self.collection}"
            + (f"; {self.already_present} already present (skipped)" if self.already_present else "")
            + (f"; {len(self.skipped)} bad items skipped" if self.skipped else "")
        ]
        lines += [
            f"  skipped {s.source}" + (f" (id {s.id})" if s.id else "") + f": {s.reason}"
            for s in self.skipped[:50]
        ]
        if len(self.skipped) > 50:
            lines.append(f"  ... and {len(self.skipped) - 50} more")
        return "\n".join(lines)


def prepare_image(
    image: np.ndarray, size: int, channels: int, stretch: Stretch, crop: float = 1.0
) -> np.ndarray:
    """A raw (H, W[, C]) image validated and made uint8 (size, size, channels); ValueError says why not.

    8-bit inputs are taken as already display-stretched; any other dtype is stretched with ``stretch``.
    Images are centre-cropped to a square, and to its central ``crop`` fraction, before resizing. A few
    NaN/inf pixels (e.g. at a survey edge) are filled with the median; an image with none finite, or
    constant, is refused.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3:
        raise ValueError(f"wrong dimensions: expected a 2-D image or (H, W, C), got shape {image.shape}")
    if image.shape[2] != channels:
        raise ValueError(
            f"has {image.shape[2]} channel(s) but the collection has {channels} (pick them with --bands)"
        )
    side = _cropped_side(image, crop)
    if side < MIN_SIDE:
        kept = f"; the central {side} after cropping" if crop < 1 else ""
        raise ValueError(f"too small: {image.shape[0]}x{image.shape[1]} pixels{kept} (minimum {MIN_SIDE})")
    if not np.issubdtype(image.dtype, np.number) or np.issubdtype(image.dtype, np.complexfloating):
        raise ValueError(f"pixels are not real numbers (dtype {image.dtype})")
    eight_bit = image.dtype == np.uint8
    image = image.astype(np.float64)
    finite = np.isfinite(image)
    if not finite.any():
        raise ValueError("all pixels are NaN or infinite")
    if not finite.all():
        image = np.where(finite, image, np.median(image[finite]))
    if np.ptp(image) == 0:
        raise ValueError(f"blank image: every pixel equals {image.flat[0]:g}")
    scaled = image / 255.0 if eight_bit else stretch.apply(image)
    h, w = scaled.shape[:2]
    top, left = (h - side) // 2, (w - side) // 2
    scaled = scaled[top : top + side, left : left + side]
    if side != size:
        scaled = resize(scaled, (size, size), order=1, anti_aliasing=side > size, preserve_range=True)
    return to_uint8(scaled)


def ingest(
    source: str | Path | Iterable[Item],
    collection: str | Path,
    *,
    catalog: str | Path | None = None,
    size: int | None = None,
    stretch: Stretch | None = None,
    crop: float | None = None,
    bands: list[int] | None = None,
    cutout_size: int = 64,
    commit_every: int = 2048,
    progress: bool = True,
) -> IngestReport:
    """Add the galaxies in ``source`` to ``collection`` (created if absent); bad items are reported, skipped.

    ``source`` is a folder of FITS/PNG/JPEG cutouts, an ``.npz``/HDF5 file with an ``images`` array, a
    large FITS image with WCS (give ``catalog``, a FITS/CSV source table with RA/Dec), or an iterable of
    :class:`Item`. A new collection takes its image size from ``size`` (default: the first valid image)
    and its channels from the first valid image; ``stretch`` applies to non-8-bit pixels, and ``crop``
    keeps the central fraction of each image (for cutouts much wider than their galaxies); both are
    fixed when the collection is created. Work is committed every ``commit_every`` galaxies, so an
    interrupted run keeps what it stored and a re-run skips the ids already present.
    """
    collection = Path(collection)
    items = (
        read_source(Path(source), catalog=catalog, bands=bands, cutout_size=cutout_size)
        if isinstance(source, str | Path)
        else source
    )
    report = IngestReport(collection)
    coll = Collection(collection) if (collection / MANIFEST).exists() else None
    if coll is not None:
        if stretch is not None and stretch != coll.stretch:
            raise IngestError(
                f"{collection} stretches its images with a {coll.stretch}, not a {stretch}: a collection "
                "keeps one stretch (leave out the stretch options, or ingest into a new collection)"
            )
        stretch = coll.stretch
        if crop is not None and crop != coll.crop:
            raise IngestError(f"{collection} keeps the central {coll.crop:.3g} of each image, not {crop:.3g}")
        crop = coll.crop
    stretch = stretch or Stretch()
    crop = 1.0 if crop is None else crop
    if not 0 < crop <= 1:
        raise IngestError(f"crop is the central fraction of each image to keep, in (0, 1]; got {crop:g}")
    seen: set[str] = set(coll.catalog["id"]) if coll is not None else set()
    existing = set(seen)
    buffer_images: list[np.ndarray] = []
    buffer_rows: list[dict] = []

    def flush() -> None:
        if buffer_images:
            with coll.writing():
                coll.append_galaxies(np.stack(buffer_images), pd.DataFrame(buffer_rows))
            report.stored += len(buffer_images)
            buffer_images.clear()
            buffer_rows.clear()

    try:
        total = operator.length_hint(items) or None
        for item in tqdm(items, total=total, desc="ingest", unit="img", disable=not progress):
            if item.error is not None:
                report.skipped.append(Skipped(item.source, item.id, item.error))
                continue
            if item.id in existing:
                report.already_present += 1
                continue
            if item.id in seen:
                report.skipped.append(Skipped(item.source, item.id, "duplicate id (an earlier item has it)"))
                continue
            try:
                side, channels = (
                    coll.image_shape[1:] if coll is not None else _new_shape(item.image, size, crop)
                )
                stored = prepare_image(item.image, side, channels, stretch, crop)
            except ValueError as exc:
                report.skipped.append(Skipped(item.source, item.id, str(exc)))
                continue
            if coll is None:
                preprocessing = {
                    "size": side,
                    "channels": channels,
                    "stretch": stretch.to_dict(),
                    "crop": crop,
                }
                coll = Collection.create(collection, (side, side, channels), preprocessing)
            seen.add(item.id)
            buffer_images.append(stored)
            buffer_rows.append({"id": item.id, "source": item.source, **item.columns})
            if len(buffer_images) >= commit_every:
                flush()
    finally:
        if coll is not None:
            flush()
    if coll is None or (report.stored == 0 and report.already_present == 0):
        reasons = "; ".join(sorted({s.reason for s in report.skipped})[:5]) or "the source holds no images"
        raise IngestError(f"no valid images in {source}: {reasons}")
    with coll.writing():
        coll.record_source({"source": str(source), "stored": report.stored, "skipped": len(report.skipped)})
    return report


def _new_shape(image: np.ndarray, size: int | None, crop: float) -> tuple[int, int]:
    """Image side and channel count for a new collection whose first valid image is ``image``."""
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f"wrong dimensions: expected a 2-D image or (H, W, C), got shape {image.shape}")
    channels = image.shape[2] if image.ndim == 3 else 1
    if channels not in (1, 3):
        raise ValueError(f"has {channels} bands; choose 1 or 3 of them (bands=[...] / --bands)")
    return size or _cropped_side(image, crop), channels


def _cropped_side(image: np.ndarray, crop: float) -> int:
    """Side of the central square of ``image`` that a ``crop`` keeps."""
    return round(min(image.shape[:2]) * crop)
