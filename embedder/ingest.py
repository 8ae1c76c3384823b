"""Ingest: validate, stretch and resize images from any source and append them to a collection."""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from skimage.transform import resize
from tqdm.auto import tqdm

from .collection import MANIFEST, Collection
from .display import fallback_bands
from .distributed import PARTITION_ROWS
from .errors import IngestError
from .sources import (
    MAX_BANDS,
    Bands,
    Item,
    band_folders,
    file_id,
    folder_files,
    read_file,
    read_source,
)
from .stretch import Stretch, to_uint8

MIN_SIDE = 8
LOOK_UP_ROWS = 64  # items whose ids are looked up in the collection at once


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
    bands: Bands = None,
    zero_points: dict[str, float] | None = None,
    cutout_size: int = 64,
    commit_every: int = 2048,
    progress: bool = True,
    dask: str | None = None,
    workers: int | None = None,
    partition_rows: int = PARTITION_ROWS,
) -> IngestReport:
    """Add the galaxies in ``source`` to ``collection`` (created if absent); bad items are reported, skipped.

    ``source`` is a folder of FITS/PNG/JPEG cutouts (a FITS cube or one HDU per band gives several bands),
    a folder with one sub-folder per band (``g/NGC1.fits``, ``r/NGC1.fits`` ...), a table of file names
    with one column per band, an ``.npz``/HDF5 file with an ``images`` array, a large FITS image with WCS
    (or a folder of one per band; give ``catalog``, a FITS/CSV source table with RA/Dec), or an iterable
    of :class:`Item` (see :mod:`embedder.sources`). ``bands`` picks and orders the bands, by name or
    channel number from 0; a collection holds 1 to 16.

    A new collection takes its image size from ``size`` (default: the first valid image), its channels
    from the first valid image and records their names (``preprocessing["bands"]``) where the source
    names them; a galaxy with other bands (names or number) than the collection's is skipped with both
    lists named. ``stretch`` (default: the colour-keeping Lupton stretch) applies to non-8-bit pixels,
    ``zero_points`` (band name -> flux factor, default 1) put the bands on one flux scale first, and
    ``crop`` keeps the central fraction of each image (for cutouts much wider than their galaxies); all
    are fixed when the collection is created. Work is committed every ``commit_every`` galaxies, so an
    interrupted run keeps what it stored and a re-run skips the ids already present.

    With ``dask`` (a scheduler address) or ``workers`` (a local cluster of that many processes), the
    files of a folder are read and prepared by Dask workers, ``partition_rows`` files per task, and
    stored here in the folder's order: the same collection as without them.
    """
    writer = _Writer(Path(collection), size, stretch, crop, commit_every, zero_points)
    try:
        if dask is None and workers is None:
            items = (
                read_source(Path(source), catalog=catalog, bands=bands, cutout_size=cutout_size)
                if isinstance(source, str | Path)
                else source
            )
            total = operator.length_hint(items) or None
            with tqdm(total=total, desc="ingest", unit="img", disable=not progress) as bar:
                items = iter(items)
                while chunk := list(itertools.islice(items, LOOK_UP_ROWS)):
                    writer.look_up([item.id for item in chunk])
                    for item in chunk:
                        writer.offer(item)
                    bar.update(len(chunk))
        else:
            one_file_each = isinstance(source, str | Path) and Path(source).is_dir()
            if catalog is not None or not one_file_each or band_folders(Path(source), bands) is not None:
                raise IngestError(
                    f"a Dask cluster ingests a folder of cutouts, one file per galaxy; {source} is read "
                    "by one process (leave out --dask/--workers)"
                )
            _ingest_on_cluster(Path(source), writer, bands, dask, workers, partition_rows, progress)
    finally:
        writer.flush()
    return writer.finish(source)


class _Writer:
    """Ingest's one writer: stores, counts as present or skips each item in turn, committing in order."""

    def __init__(
        self,
        path: Path,
        size: int | None,
        stretch: Stretch | None,
        crop: float | None,
        commit_every: int,
        zero_points: dict[str, float] | None,
    ):
        self.report = IngestReport(path)
        self.coll = Collection(path) if (path / MANIFEST).exists() else None
        if stretch is not None and stretch.band_scales is not None and zero_points:
            raise IngestError("give the band scales once: in the stretch or as zero points, not both")
        self.zero_points = dict(zero_points or {})
        self.bands: list[str] | None = None  # the collection's band names, None while unnamed
        if self.coll is not None:
            if stretch is not None and self.zero_points:  # the zero points are checked on their own
                stretch = replace(stretch, band_scales=self.coll.stretch.band_scales)
            if stretch is not None and stretch != self.coll.stretch:
                raise IngestError(
                    f"{path} stretches its images with a {self.coll.stretch}, not a {stretch}: a collection "
                    "keeps one stretch (leave out the stretch options, or ingest into a new collection)"
                )
            self.bands = self.coll.preprocessing.get("bands")
            self.stretch = self.coll.stretch
            self._check_zero_points(path)
            if crop is not None and crop != self.coll.crop:
                raise IngestError(
                    f"{path} keeps the central {self.coll.crop:.3g} of each image, not {crop:.3g}"
                )
            crop = self.coll.crop
        else:
            self.stretch = stretch or Stretch()
        self.crop = 1.0 if crop is None else crop
        if not 0 < self.crop <= 1:
            raise IngestError(
                f"crop is the central fraction of each image to keep, in (0, 1]; got {self.crop:g}"
            )
        self.size, self.commit_every = size, commit_every
        self.existing: set[str] = set()  # ids looked up (see look_up) and found in the collection
        self.asked: set[str] = set()
        self.seen: set[str] = set()
        self.images: list[np.ndarray] = []
        self.rows: list[dict] = []

    @property
    def shape(self) -> tuple[int, int] | None:
        """Side and channels of the stored images; None until the first valid image creates the collection."""
        return None if self.coll is None else self.coll.image_shape[1:]

    def _scaled(self, stretch: Stretch, names: list[str] | None, channels: int) -> Stretch:
        """``stretch`` with the zero points as band scales for bands ``names`` (unnamed: fallback names)."""
        if not self.zero_points:
            return stretch
        known = names or fallback_bands(channels)
        unknown = [band for band in self.zero_points if band not in known]
        if unknown:
            raise IngestError(
                f"zero points for band {','.join(unknown)}, but the bands are {','.join(known)}"
            )
        try:
            return replace(stretch, band_scales=tuple(self.zero_points.get(band, 1.0) for band in known))
        except ValueError as exc:
            raise IngestError(f"zero points {self.zero_points}: {exc}") from None

    def _check_zero_points(self, path: Path) -> None:
        """IngestError if zero points are given that differ from the existing collection's band scales."""
        channels = self.coll.image_shape[2]
        wanted = self._scaled(self.stretch, self.bands, channels).band_scales
        stored = self.stretch.band_scales
        if self.zero_points and (wanted or (1.0,) * channels) != (stored or (1.0,) * channels):
            raise IngestError(
                f"{path} scales its bands by {stored or 'nothing (all 1)'}, not by the zero points "
                f"{self.zero_points}: a collection keeps one stretch (leave out --zero-points)"
            )

    def look_up(self, ids: list[str]) -> None:
        """Find which of ``ids`` the collection holds already (in its id index, a batch at a time: the
        cost follows the ids, not the collection), adding them to :attr:`existing`."""
        ids = [str(galaxy) for galaxy in ids if galaxy is not None and galaxy not in self.asked]
        self.asked.update(ids)
        if self.coll is not None and ids:
            rows = self.coll.find_rows(ids)
            self.existing.update(galaxy for galaxy, row in zip(ids, rows, strict=True) if row >= 0)

    def offer(self, item: Item, prepared: np.ndarray | str | None = None) -> None:
        """Take the next item; ``prepared`` is its stored image or why it has none (None: prepare it here)."""
        if item.error is not None:
            self.report.skipped.append(Skipped(item.source, item.id, item.error))
            return
        if item.id not in self.asked:
            self.look_up([item.id])
        if item.id in self.existing:
            self.report.already_present += 1
            return
        if item.id in self.seen:
            self.report.skipped.append(Skipped(item.source, item.id, "duplicate id (an earlier item has it)"))
            return
        other = self._other_bands(item)
        if other is not None:
            self.report.skipped.append(Skipped(item.source, item.id, other))
            return
        stretch = self.stretch
        if prepared is None:
            try:
                if self.coll is None:
                    side, channels = _new_shape(item.image, self.size, self.crop)
                    stretch = self._scaled(self.stretch, item.bands, channels)
                else:
                    side, channels = self.shape
                prepared = prepare_image(item.image, side, channels, stretch, self.crop)
            except ValueError as exc:
                prepared = str(exc)
        if isinstance(prepared, str):
            self.report.skipped.append(Skipped(item.source, item.id, prepared))
            return
        if self.coll is None:
            self._create(prepared.shape, stretch, item.bands)
        self.seen.add(item.id)
        self.images.append(prepared)
        self.rows.append({"id": item.id, "source": item.source, **item.columns})
        if len(self.images) >= self.commit_every:
            self.flush()

    def _create(self, shape: tuple[int, int, int], stretch: Stretch, bands: list[str] | None) -> None:
        """Create the collection for images of ``shape`` made with ``stretch``, recording named bands."""
        self.stretch, self.bands = stretch, bands
        preprocessing = {
            "size": shape[0],
            "channels": shape[2],
            "stretch": stretch.to_dict(),
            "crop": self.crop,
        }
        if bands is not None:
            preprocessing["bands"] = list(bands)
        self.coll = Collection.create(self.report.collection, shape, preprocessing)

    def _other_bands(self, item: Item) -> str | None:
        """Why ``item`` cannot join the collection for its bands (their number, or names where both
        are named), or None."""
        if self.coll is None:
            return None
        ours = self.shape[1]
        image = None if item.image is None else np.asarray(item.image)
        if image is not None and image.ndim in (2, 3):
            theirs = image.shape[2] if image.ndim == 3 else 1
        else:
            theirs = len(item.bands) if item.bands else ours
        named_apart = self.bands is not None and item.bands is not None and item.bands != self.bands
        if theirs == ours and not named_apart:
            return None
        return (
            f"has {_band_list(item.bands, theirs)} but the collection has {_band_list(self.bands, ours)}: "
            "a collection keeps one set of bands, in one order (pick them with --bands, or ingest into "
            "another collection)"
        )

    def flush(self) -> None:
        """Commit the galaxies taken since the last commit."""
        if self.images:
            with self.coll.writing():
                self.coll.append_galaxies(np.stack(self.images), pd.DataFrame(self.rows))
            self.report.stored += len(self.images)
            self.images.clear()
            self.rows.clear()

    def finish(self, source: object) -> IngestReport:
        """Record the source in the collection's provenance; IngestError if nothing at all was usable."""
        report, coll = self.report, self.coll
        if coll is None or (report.stored == 0 and report.already_present == 0):
            reasons = (
                "; ".join(sorted({s.reason for s in report.skipped})[:5]) or "the source holds no images"
            )
            raise IngestError(f"no valid images in {source}: {reasons}")
        with coll.writing():
            coll.record_source(
                {"source": str(source), "stored": report.stored, "skipped": len(report.skipped)}
            )
        return report


def _ingest_on_cluster(
    folder: Path,
    writer: _Writer,
    bands: Bands,
    dask: str | None,
    workers: int | None,
    partition_rows: int,
    progress: bool,
) -> None:
    """Have Dask workers read and prepare the files of ``folder``, and store them in the folder's order."""
    from .distributed import dask_client, in_order, row_ranges

    files = folder_files(folder.resolve())
    with tqdm(total=len(files), desc="ingest", unit="img", disable=not progress) as bar:
        writer.look_up([file_id(relative) for _, relative in files])
        todo = [(str(path), relative) for path, relative in files if file_id(relative) not in writer.existing]
        writer.report.already_present += len(files) - len(todo)  # present by name: not even read again
        bar.update(len(files) - len(todo))
        first = 0
        while writer.shape is None and first < len(todo):  # the first valid image shapes a new collection
            writer.offer(read_file(Path(todo[first][0]), todo[first][1], bands))
            first += 1
            bar.update()
        if first == len(todo):
            return
        side, channels = writer.shape
        with dask_client(dask, workers) as client:
            partitions = ((todo[a:b],) for a, b in row_ranges(first, len(todo), partition_rows))
            results = in_order(
                client,
                _prepare_files,
                partitions,
                bands=bands,
                side=side,
                channels=channels,
                stretch=writer.stretch.to_dict(),
                crop=writer.crop,
            )
            for prepared in results:
                for item, image in prepared:
                    writer.offer(item, image)
                bar.update(len(prepared))


def _prepare_files(
    files: list[tuple[str, str]],
    *,
    bands: Bands,
    side: int,
    channels: int,
    stretch: dict,
    crop: float,
) -> list[tuple[Item, np.ndarray | str | None]]:
    """On a Dask worker: read and prepare cutout files (path, relative path); the items come back without
    their raw pixels, each with its stored image or why it has none (None: unreadable, as the item says)."""
    stretch_ = Stretch(**stretch)
    results: list[tuple[Item, np.ndarray | str | None]] = []
    for path, relative in files:
        item = read_file(Path(path), relative, bands)
        prepared = None
        if item.error is None:
            try:
                prepared = prepare_image(item.image, side, channels, stretch_, crop)
            except ValueError as exc:
                prepared = str(exc)
            item.image = None
        results.append((item, prepared))
    return results


def _new_shape(image: np.ndarray, size: int | None, crop: float) -> tuple[int, int]:
    """Image side and channel count for a new collection whose first valid image is ``image``."""
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f"wrong dimensions: expected a 2-D image or (H, W, C), got shape {image.shape}")
    channels = image.shape[2] if image.ndim == 3 else 1
    if not 1 <= channels <= MAX_BANDS:
        raise ValueError(
            f"has {channels} bands; a collection holds 1 to {MAX_BANDS} (pick some: bands=[...] / --bands)"
        )
    return size or _cropped_side(image, crop), channels


def _band_list(names: list[str] | None, channels: int) -> str:
    """``5 bands (g,r,i,z,y)``, or ``3 unnamed bands``."""
    plural = "s" if channels != 1 else ""
    return f"{channels} band{plural} ({','.join(names)})" if names else f"{channels} unnamed band{plural}"


def _cropped_side(image: np.ndarray, crop: float) -> int:
    """Side of the central square of ``image`` that a ``crop`` keeps."""
    return round(min(image.shape[:2]) * crop)
