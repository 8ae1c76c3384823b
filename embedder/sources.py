"""Readers that turn a source (array file, folder of cutouts, folders or a table of one file per band,
large FITS image + table) into :class:`Item`s, with the names of their bands where the source gives them.

Readers never raise for one bad item: they yield an :class:`Item` whose ``error`` says what is wrong, so
that ingest reports it and goes on. A source that cannot be read at all raises :class:`IngestError`.

Bands are picked with ``bands``: a list of band names (as the source names them, or the fallback names
of :func:`fallback_bands` where it names none) or channel numbers from 0, in the order to keep.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata.utils import overlap_slices
from astropy.table import Table
from astropy.utils.exceptions import AstropyUserWarning
from astropy.wcs import WCS, FITSFixedWarning
from PIL import Image, UnidentifiedImageError

from .display import WAVELENGTHS, fallback_bands
from .errors import IngestError

ARRAY_SUFFIXES = {".npz", ".h5", ".hdf5", ".hdf"}
TABLE_SUFFIXES = {".csv", ".ecsv", ".vot", ".votable", ".xml"}
MAX_BANDS = 16  # channels a collection may hold
Bands = Sequence[int | str] | None
# Pixels (all bands) one cutout file may declare, checked before any pixel is decoded: 16 bands of
# 1,768 x 1,768 px, far beyond a galaxy cutout, and 200 MB as float32. Larger images are mosaics (cut
# them with a source table) or decompression bombs (a few kB of PNG or FITS declaring gigabytes).
MAX_CUTOUT_PIXELS = 50_000_000


@dataclass
class Item:
    """One galaxy from a source: raw pixels (H, W[, C]) plus catalog columns, or the reason it is unusable;
    ``bands`` names its channels in order when the source names them (None: unnamed)."""

    id: str
    source: str
    image: np.ndarray | None = None
    columns: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    bands: list[str] | None = None


def read_source(
    source: Path, *, catalog: str | Path | None = None, bands: Bands = None, cutout_size: int = 64
) -> Iterator[Item]:
    """Yield the items of ``source``, choosing the reader by what the path is."""
    if not source.exists():
        raise IngestError(f"source {source} does not exist")
    if catalog is not None:
        return read_image_with_table(source, Path(catalog), size=cutout_size, bands=bands)
    if source.is_dir():
        per_band = band_folders(source, bands)
        return read_folder(source, bands=bands) if per_band is None else read_band_folders(source, per_band)
    suffix = source.suffix.lower()
    if suffix in ARRAY_SUFFIXES:
        return read_arrays(source, bands=bands)
    if suffix in TABLE_SUFFIXES or (_image_suffix(source.name) in FITS_SUFFIXES and _holds_table(source)):
        return read_path_table(source, bands=bands)
    raise IngestError(
        f"don't know how to ingest {source}: give a folder of FITS/PNG/JPEG cutouts (or of one sub-folder "
        "per band), an .npz or HDF5 file with an 'images' array, a table of FITS file names (one column "
        "per band), or a large FITS image together with a source table (catalog=... / --catalog)"
    )


def _holds_table(path: Path) -> bool:
    """Whether a FITS file holds a table (as a table of file names does), from its headers."""
    try:
        with _fits_read_errors(), fits.open(path) as hdul:
            return any(isinstance(hdu, fits.BinTableHDU | fits.TableHDU) for hdu in hdul)
    except ValueError:
        return False


def band_indices(names: list[str] | None, channels: int, bands: Bands) -> list[int]:
    """The channel numbers that ``bands`` (names or numbers from 0) pick among ``channels`` channels
    named ``names`` (unnamed ones by :func:`fallback_bands`); all of them, in order, when ``bands`` is None.
    ValueError says which band is not there."""
    if bands is None:
        return list(range(channels))
    known = names or fallback_bands(channels)
    picked = []
    for band in bands:
        if isinstance(band, str) and band in known:
            picked.append(known.index(band))
        elif isinstance(band, str):
            raise ValueError(f"no band {band!r}: the bands are {','.join(known)}")
        elif not 0 <= band < channels:
            raise ValueError(f"bands {list(bands)} asked for, but the image has {channels} channel(s)")
        else:
            picked.append(band)
    return picked


def select_bands(
    image: np.ndarray, names: list[str] | None, bands: Bands
) -> tuple[np.ndarray, list[str] | None]:
    """The listed bands of an (H, W[, C]) image, in that order, and their names (None: unnamed)."""
    if bands is None or image.ndim not in (2, 3):
        return image, names
    planes = image[..., None] if image.ndim == 2 else image
    picked = band_indices(names, planes.shape[2], bands)
    return planes[..., picked], None if names is None else [names[i] for i in picked]


def _unique(names: list[str] | None) -> list[str] | None:
    """``names`` if no two are the same (so that each names one band), else None."""
    return names if names is not None and len(set(names)) == len(names) else None


def wavelength_order(names: list[str]) -> list[str]:
    """Band names blue to red when all are known filters (:data:`embedder.display.WAVELENGTHS`), else as
    given."""
    return sorted(names, key=WAVELENGTHS.__getitem__) if all(n in WAVELENGTHS for n in names) else names


def _open_arrays(path: Path) -> tuple[dict[str, Any], Any]:
    """The arrays of an .npz or HDF5 file as a name -> lazily sliceable array mapping, and its closer."""
    try:
        if path.suffix.lower() == ".npz":
            data = np.load(path, allow_pickle=False)
            return {k: data[k] for k in data.files}, data
        import h5py

        handle = h5py.File(path, "r")
        return {k: v for k, v in handle.items() if isinstance(v, h5py.Dataset)}, handle
    except Exception as exc:  # numpy and h5py raise many types for damaged files
        raise IngestError(f"cannot read {path}: {exc}") from exc


def _text(values: Any) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype.kind == "S" or values.dtype == object:
        return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in values])
    return values.astype(str)


def read_arrays(path: Path, bands: Bands = None) -> Iterator[Item]:
    """Items from an .npz/HDF5 file: ``images`` (N, H, W), (N, H, W, C) or (N, C, H, W) plus optional
    per-galaxy arrays.

    The bands of 4-D images are on the axis (1 or 3) whose length is that of a ``band_names`` array, which
    names them (axis 3 when both fit); without one, on the shorter of axes 1 and 3, which holds at most
    16 bands. ``ids``, ``ra``, ``dec`` and ``labels`` are recognised (``class_names`` adds a ``class_name``
    column; a negative label marks an unlabelled galaxy, whose ``class_name`` is missing);
    any other array with N rows becomes a column, (N, K) arrays one column per K (named by
    ``<name>_names`` when present).
    """
    arrays, closer = _open_arrays(path)
    try:
        if "images" not in arrays:
            raise IngestError(f"{path} has no 'images' array (it has: {sorted(arrays)})")
        images = arrays["images"]
        if images.ndim not in (3, 4):
            raise IngestError(
                f"{path}: 'images' must be (N, H, W), (N, H, W, C) or (N, C, H, W), got shape {images.shape}"
            )
        names = _array_band_names(arrays, path)
        axis = _band_axis(images.shape, names, path)
        channels = 1 if axis is None else images.shape[axis]
        try:
            picked = band_indices(names, channels, bands)
        except ValueError as exc:
            raise IngestError(f"{path}: {exc}") from None
        names = None if names is None else [names[i] for i in picked]
        n = images.shape[0]
        columns = _columns(arrays, n, path)
        ids = (
            _text(arrays["ids"][()]) if "ids" in arrays else np.array([f"{path.stem}-{i}" for i in range(n)])
        )
        if len(ids) != n:
            raise IngestError(f"{path}: {len(ids)} ids for {n} images")
        chunk = 1024
        for start in range(0, n, chunk):
            block = np.asarray(images[start : start + chunk])
            if axis is None:
                block = block[..., None] if bands is not None else block
            else:
                block = np.moveaxis(block, axis, -1)
            if bands is not None:
                block = block[..., picked]
            for offset, image in enumerate(block):
                i = start + offset
                row = {
                    name: values[i].item() if hasattr(values[i], "item") else values[i]
                    for name, values in columns.items()
                }
                yield Item(ids[i], f"{path.name}[{i}]", image, row, bands=names)
    finally:
        closer.close()


def _array_band_names(arrays: dict[str, Any], path: Path) -> list[str] | None:
    """The names in an array file's ``band_names`` array (None without one); IngestError if any repeats."""
    if "band_names" not in arrays:
        return None
    names = [str(n).strip() for n in _text(np.atleast_1d(arrays["band_names"][()]))]
    if len(set(names)) != len(names) or "" in names:
        raise IngestError(f"{path}: band_names must name each band once, got {names}")
    return names


def _band_axis(shape: tuple[int, ...], names: list[str] | None, path: Path) -> int | None:
    """The axis of an (N, ...) images array that holds the bands: None for (N, H, W), else 1 or 3."""
    if len(shape) == 3:
        if names is not None and len(names) != 1:
            raise IngestError(f"{path}: {len(names)} band_names for images of one band, shape {shape}")
        return None
    if names is not None:
        fitting = [axis for axis in (3, 1) if shape[axis] == len(names)]
        if not fitting:
            raise IngestError(
                f"{path}: {len(names)} band_names, but 'images' of shape {shape} has no axis 1 or 3 of "
                f"{len(names)} bands"
            )
        return fitting[0]
    if shape[1] == shape[3] or min(shape[1], shape[3]) > MAX_BANDS:
        raise IngestError(
            f"{path}: cannot tell which axis of 'images' {shape} holds the bands (the shorter of axes 1 "
            f"and 3, at most {MAX_BANDS}); add a 'band_names' array naming them"
        )
    return 3 if shape[3] < shape[1] else 1


def _columns(arrays: dict[str, Any], n: int, path: Path) -> dict[str, np.ndarray]:
    """Per-galaxy columns from the arrays of an array file (everything with N rows but images and ids)."""
    columns: dict[str, np.ndarray] = {}
    for name, values in arrays.items():
        if name in ("images", "ids") or name.endswith("_names") or name == "class_names":
            continue
        values = np.asarray(values[()])
        if values.ndim == 0 or values.shape[0] != n:
            continue
        if values.ndim == 1:
            key = "label" if name == "labels" else f"array_{name}" if name == "source" else name
            columns[key] = _text(values) if values.dtype.kind in "SUO" else values
        elif values.ndim == 2:
            names = arrays.get(f"{name.removesuffix('s')}_names", arrays.get(f"{name}_names"))
            names = _text(names[()]) if names is not None else [f"{name}_{k}" for k in range(values.shape[1])]
            if len(names) != values.shape[1]:
                raise IngestError(f"{path}: {name} has {values.shape[1]} columns but {len(names)} names")
            columns.update({str(col): values[:, k] for k, col in enumerate(names)})
    if "class_names" in arrays and "label" in columns:
        names = _text(arrays["class_names"][()])
        labels = columns["label"]
        if labels.dtype.kind not in "iu" or labels.max(initial=-1) >= len(names):
            raise IngestError(
                f"{path}: labels must be integers in [0, {len(names) - 1}] to match class_names "
                "(negative for unlabelled galaxies)"
            )
        columns["class_name"] = np.where(labels >= 0, np.asarray(names, object)[labels.clip(0)], None)
    return columns


# ---- folders of cutouts --------------------------------------------------------------------------

FITS_SUFFIXES = (".fits.gz", ".fit.gz", ".fits.fz", ".fit.fz", ".fits", ".fit", ".fts", ".fz")
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Extensions that hold per-pixel metadata (HSC, HST, DES ...), not a band of the image.
AUX_EXTNAMES = {"MASK", "VARIANCE", "VAR", "IVAR", "INVVAR", "WEIGHT", "WHT", "ERR", "SIGMA", "RMS", "DQ"}
HEADER_COLUMNS = {
    "OBJECT": "object",
    "TELESCOP": "telescope",
    "INSTRUME": "instrument",
    "DATE-OBS": "date_obs",
}


def read_folder(folder: Path, bands: Bands = None) -> Iterator[Item]:
    """Items from a folder (and its subfolders) of FITS, PNG or JPEG cutouts, one galaxy per file.

    The id is the file's path inside ``folder`` without its image suffixes (``sub/name`` for subfolders);
    hidden files are ignored and any other file is reported as not an image.
    """
    for path, relative in folder_files(folder):
        yield read_file(path, relative, bands)


def folder_files(folder: Path) -> list[tuple[Path, str]]:
    """The files of a folder of cutouts that :func:`read_folder` reads, in its order: (path, relative
    path as a POSIX string); hidden files and folders are left out."""
    files = {p.relative_to(folder): p for p in folder.rglob("*") if p.is_file()}
    return [
        (files[relative], relative.as_posix())
        for relative in sorted(files, key=Path.as_posix)
        if not any(part.startswith(".") for part in relative.parts)
    ]


def file_id(relative: str) -> str:
    """The id of the item read from the file at ``relative`` (a path inside its folder): without suffix."""
    suffix = _image_suffix(relative) or Path(relative).suffix
    return relative[: len(relative) - len(suffix)]


def _image_suffix(name: str) -> str | None:
    """The image suffix that ``name`` ends with (``.fits.gz``, ``.png`` ...), or None."""
    lower = name.lower()
    return next((s for s in FITS_SUFFIXES + PICTURE_SUFFIXES if lower.endswith(s)), None)


def read_image_file(path: str | Path, bands: Bands = None) -> Item:
    """One FITS/PNG/JPEG file as an Item (id: its name without suffix); IngestError says why if unusable."""
    path = Path(path)
    if not path.is_file():
        raise IngestError(f"image file {path} does not exist")
    item = read_file(path, path.name, bands)
    if item.error is not None:
        raise IngestError(f"cannot use {path}: {item.error}")
    return item


def read_file(path: Path, relative: str, bands: Bands = None) -> Item:
    """One cutout file, named ``relative`` inside its folder, as an Item, or an Item with the reason it
    cannot be used. The names of a FITS file's bands (from its headers) are also its ``bands`` column."""
    suffix = _image_suffix(path.name)
    item_id = file_id(relative)
    if suffix is None:
        reason = f"not an image file (suffix {path.suffix or 'none'}); expected FITS, PNG or JPEG"
        return Item(item_id, relative, error=reason)
    try:
        if suffix in FITS_SUFFIXES:
            image, columns, names = _read_fits(path)
        else:
            image, columns, names = _read_picture(path), {}, None
        image, names = select_bands(image, names, bands)
    except ValueError as exc:
        return Item(item_id, relative, error=str(exc))
    if names is not None:
        columns["bands"] = ",".join(names)
    return Item(item_id, relative, image, columns, bands=_unique(names))


def _read_picture(path: Path) -> np.ndarray:
    """Pixels of a PNG/JPEG: greyscale (H, W) or RGB (H, W, 3), alpha dropped, 16-bit kept."""
    kind = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    try:
        with Image.open(path) as picture:  # reads the header only
            _check_cutout_pixels(math.prod(picture.size) * len(picture.getbands()), picture.size)
            picture.load()
            if picture.mode in ("1", "LA", "La"):
                picture = picture.convert("L")
            elif picture.mode not in ("L", "RGB", "I", "F") and not picture.mode.startswith("I;16"):
                picture = picture.convert("RGB")
            return np.asarray(picture)
    except UnidentifiedImageError as exc:
        raise ValueError(f"not a readable {kind} image: unrecognised or corrupt content") from exc
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"not a readable {kind} image: {exc}") from exc


def _read_fits(path: Path) -> tuple[np.ndarray, dict[str, Any], list[str] | None]:
    """Pixels (H, W[, C]) of a FITS cutout, columns from its header and its band names (None when the
    headers do not name them); ValueError says what is wrong.

    The first image HDU gives the pixels: a 2-D image, or a (C, H, W) cube as C channels; further 2-D
    image HDUs of the same shape (one per band) are added as channels in HDU order.
    """
    with _fits_read_errors(), fits.open(path, memmap=False) as hdul:
        planes = [hdu for hdu in hdul if _is_band_hdu(hdu)]  # headers only: no pixel is read yet
        if planes:
            largest = max((hdu.shape for hdu in planes), key=math.prod)
            _check_cutout_pixels(sum(math.prod(hdu.shape) for hdu in planes), largest[::-1])
        hdus = [(hdu.header, np.asarray(hdu.data)) for hdu in planes]
    if not hdus:
        raise ValueError("no image data in any HDU")
    header, data = hdus[0]
    same_shape = [(h, d) for h, d in hdus if d.shape == data.shape]
    headers = [header]
    if data.ndim == 3:
        data = np.moveaxis(data, 0, -1)
    elif data.ndim == 2 and len(same_shape) > 1:
        headers = [h for h, _ in same_shape]
        data = np.stack([d for _, d in same_shape], axis=-1)
    image = data.astype(data.dtype.newbyteorder("="), copy=False)
    columns = {
        name: header[key]
        for key, name in HEADER_COLUMNS.items()
        if isinstance(header.get(key), str | int | float)
    }
    names = _band_names(headers, data.shape[2] if data.ndim == 3 else 1)
    return image, columns | _centre_radec(header, data.shape), names


@contextmanager
def _fits_read_errors() -> Iterator[None]:
    """Turn astropy's ways of failing on a bad FITS file into ValueError, a truncation warning included.

    astropy only warns when a file is shorter than its headers promise, and may then return padded data, so
    the warning is caught and re-raised; other warnings while reading (header nits) are kept quiet.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AstropyUserWarning)
        try:
            yield
        except TooLargeError:
            raise
        except (OSError, EOFError, ValueError, TypeError) as exc:  # astropy's errors for damaged files
            raise ValueError(_truncation(caught) or f"not a readable FITS file: {exc}") from exc
    if truncation := _truncation(caught):
        raise ValueError(truncation)


def _truncation(caught: list[warnings.WarningMessage]) -> str | None:
    """The reason to give if astropy warned that the file is truncated, else None."""
    prefix = "File may have been truncated: "
    message = next((str(w.message) for w in caught if str(w.message).startswith(prefix)), None)
    return None if message is None else f"truncated FITS file: {message.removeprefix(prefix)}"


def _is_band_hdu(hdu: Any) -> bool:
    """Whether an HDU holds image pixels (not a table, an empty primary or a mask/variance plane), from
    its header alone."""
    extname = str(hdu.header.get("EXTNAME", "")).strip().upper()
    return hdu.is_image and extname not in AUX_EXTNAMES and len(hdu.shape) > 0 and math.prod(hdu.shape) > 0


class TooLargeError(ValueError):
    """A cutout file declares more pixels than MAX_CUTOUT_PIXELS."""


def _check_cutout_pixels(pixels: int, size: tuple[int, ...]) -> None:
    """Refuse a cutout that declares more than MAX_CUTOUT_PIXELS before its pixels are decoded."""
    if pixels > MAX_CUTOUT_PIXELS:
        raise TooLargeError(
            f"the image declares {' x '.join(map(str, size))} pixels ({pixels:,} in all bands), more than "
            f"the {MAX_CUTOUT_PIXELS:,} a cutout may have; cut a large image with a source table (--catalog)"
        )


def _band_names(headers: list[Any], channels: int) -> list[str] | None:
    """Band names from FILTER/BAND keywords (one HDU per band) or BAND0, BAND1 ... (a cube), or None."""
    if len(headers) == channels:
        names = [h.get("FILTER", h.get("BAND")) for h in headers]
    else:
        names = [headers[0].get(f"BAND{i}") for i in range(channels)]
    return None if None in names else [str(n).strip() for n in names]


def _centre_radec(header: Any, shape: tuple[int, ...]) -> dict[str, float]:
    """ICRS RA/Dec (degrees) of the image centre from a celestial WCS in ``header``; empty without one."""
    wcs = _celestial_wcs(header)
    if wcs is None or len(shape) < 2:
        return {}
    centre = wcs.pixel_to_world((shape[1] - 1) / 2, (shape[0] - 1) / 2).icrs
    ra, dec = float(centre.ra.deg), float(centre.dec.deg)
    return {"ra": ra, "dec": dec} if np.isfinite([ra, dec]).all() else {}


def _celestial_wcs(header: Any) -> WCS | None:
    """The 2-D celestial part of the WCS in ``header``, or None when it has none (or it is unusable)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header).celestial
        except (ValueError, KeyError, MemoryError):  # astropy.wcs raises these for broken WCS keywords
            return None
    return wcs if wcs.has_celestial else None


# ---- one file per band: a folder per band, or a table of file names -----------------------------------


def band_folders(folder: Path, bands: Bands = None) -> list[tuple[str, Path]] | None:
    """The (band, sub-folder) pairs of a folder laid out one sub-folder per band, in the order to read
    them; None when ``folder`` is a plain folder of cutouts.

    A folder is laid out by band when it holds sub-folders but no image file at its top, and either every
    sub-folder is named as a known filter (u, g, r, i, z, y, Y, J, H, K, VIS, NISP_Y ...: those of
    :data:`embedder.display.WAVELENGTHS`; they are read blue to red) or ``bands`` names sub-folders of
    it (read in that order). Files of the same name (less suffixes) in the band folders are one galaxy.
    """
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    subfolders = {p.name: p for p in entries if p.is_dir()}
    if not subfolders or any(p.is_file() and _image_suffix(p.name) for p in entries):
        return None
    named = bands is not None and all(isinstance(b, str) for b in bands)
    if named and set(bands) <= set(subfolders):
        return [(band, subfolders[band]) for band in bands]
    if not set(subfolders) <= set(WAVELENGTHS):
        return None
    order = wavelength_order(sorted(subfolders))
    try:
        picked = band_indices(order, len(order), bands)
    except ValueError as exc:
        raise IngestError(f"{folder} holds one sub-folder per band: {exc}") from None
    return [(order[i], subfolders[order[i]]) for i in picked]


def read_band_folders(folder: Path, per_band: list[tuple[str, Path]]) -> Iterator[Item]:
    """Items from a folder laid out by band (:func:`band_folders`): each galaxy's files, one per band,
    stacked in band order; a galaxy missing from a band folder is reported, as are other files."""
    names = [band for band, _ in per_band]
    files: dict[str, dict[str, tuple[Path, str]]] = {}
    for band, subfolder in per_band:
        for path, relative in folder_files(subfolder):
            where = f"{subfolder.name}/{relative}"
            if _image_suffix(path.name) is None:
                yield Item(where, where, error=f"not an image file (suffix {path.suffix or 'none'})")
                continue
            same = files.setdefault(file_id(relative), {})
            if band in same:
                yield Item(file_id(relative), where, error=f"duplicate id (band {band} has {same[band][1]})")
                continue
            same[band] = (path, where)
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        yield Item(path.name, path.name, error=f"not in a band folder ({', '.join(names)})")
    for item_id in sorted(files):
        have = files[item_id]
        missing = [band for band in names if band not in have]
        if missing:
            first = next(iter(have.values()))[1]
            yield Item(
                item_id,
                first,
                error=f"missing band {','.join(missing)}: no {item_id} file in "
                + ", ".join(f"{band}/" for band in missing),
            )
            continue
        yield read_band_files(item_id, [(band, *have[band]) for band in names])


def read_path_table(table: Path, bands: Bands = None) -> Iterator[Item]:
    """Items from a table (CSV, ECSV, VOTable, FITS) that names each galaxy's image files, one column per
    band.

    Band columns are those whose every filled cell is the name of a FITS/PNG file (relative to the table's
    folder, or absolute); the column name is the band name, the column order the band order (or pick
    them with ``bands``). An id column (id, objid, object_id, source_id, name) gives ids, else
    ``TABLE-ROW``; the other columns are kept (RA/Dec columns as ``ra``, ``dec``). A row with an empty cell
    or a file that does not exist is reported.
    """
    catalog = _read_table(table)
    columns = [name for name in catalog.colnames if catalog[name].ndim == 1]
    band_columns = [name for name in columns if _is_file_column(catalog[name])]
    if not band_columns:
        raise IngestError(
            f"{table} has no column of image file names (one column per band, e.g. g, r, i holding "
            f"g/NGC1.fits ...); its columns are {catalog.colnames}"
        )
    try:
        band_columns = [band_columns[i] for i in band_indices(band_columns, len(band_columns), bands)]
    except ValueError as exc:
        raise IngestError(f"{table}: {exc}") from None
    id_name = _find_column(catalog, ID_NAMES)
    try:
        radec = _radec_columns(catalog, table)
    except IngestError:
        radec = None
    positions = dict(zip(("ra", "dec"), _degrees(catalog, *radec, table), strict=True)) if radec else {}
    kept = [n for n in columns if n not in band_columns and n != id_name and n not in (radec or ())]
    for i in range(len(catalog)):
        item_id = _scalar(catalog[id_name][i]) if id_name else None
        item_id = (
            f"{table.stem}-{i}" if item_id is None or str(item_id).strip() == "" else str(item_id).strip()
        )
        source = f"{table.name}[{i}]"
        cells = {band: _scalar(catalog[band][i]) for band in band_columns}
        empty = [band for band, cell in cells.items() if cell is None or str(cell).strip() == ""]
        if empty:
            yield Item(item_id, source, error=f"missing band {','.join(empty)}: empty cell")
            continue
        paths = {band: table.parent / str(cell).strip() for band, cell in cells.items()}
        absent = [f"{band} ({paths[band]})" for band in band_columns if not paths[band].is_file()]
        if absent:
            yield Item(item_id, source, error=f"missing band {', '.join(absent)}: no such file")
            continue
        item = read_band_files(
            item_id, [(band, paths[band], str(cells[band]).strip()) for band in band_columns]
        )
        item.source = source
        row = {f"table_{n}" if n.lower() in RESERVED_COLUMNS else n: _scalar(catalog[n][i]) for n in kept}
        item.columns |= {name: float(values[i]) for name, values in positions.items()} | row
        yield item


def _is_file_column(column: Any) -> bool:
    """Whether a table column holds image file names: text, with at least one filled cell, all of them
    ending in a FITS/PNG/JPEG suffix."""
    if column.dtype.kind not in "USO":
        return False
    cells = [str(c).strip() for c in (_scalar(v) for v in column) if c is not None and str(c).strip()]
    return bool(cells) and all(_image_suffix(c) for c in cells)


def read_band_files(item_id: str, files: list[tuple[str, Path, str]]) -> Item:
    """One galaxy from its files of one band each, ``(band, path, name to report)`` in band order: the
    planes stacked as (H, W, C), header columns (and RA/Dec) from the first band's file."""
    planes, columns = [], {}
    for band, path, where in files:
        item = read_file(path, where)
        if item.error is not None:
            return Item(item_id, where, error=f"band {band}: {item.error}")
        image = item.image[..., 0] if item.image.ndim == 3 and item.image.shape[2] == 1 else item.image
        if image.ndim != 2:
            return Item(
                item_id,
                where,
                error=f"band {band}: a file of one band holds an image of shape {item.image.shape}",
            )
        planes.append(image)
        if not columns:
            columns = {k: v for k, v in item.columns.items() if k != "bands"}
    shapes = {band: plane.shape for (band, _, _), plane in zip(files, planes, strict=True)}
    if len(set(shapes.values())) > 1:
        sizes = ", ".join(f"{band} {h}x{w}" for band, (h, w) in shapes.items())
        return Item(item_id, files[0][2], error=f"the bands' images differ in size: {sizes}")
    return Item(item_id, files[0][2], np.stack(planes, axis=-1), columns, bands=[b for b, _, _ in files])


# ---- a large image with a source table -------------------------------------------------------------

RADEC_NAMES = [
    ("ra", "dec"),
    ("ra_deg", "dec_deg"),
    ("raj2000", "dej2000"),
    ("raj2000", "decj2000"),
    ("ra_icrs", "de_icrs"),
    ("alpha_j2000", "delta_j2000"),
    ("radeg", "dedeg"),
]
ID_NAMES = ["id", "objid", "object_id", "source_id", "name"]
RESERVED_COLUMNS = {"id", "source", "ra", "dec"}


def read_image_with_table(image: Path, table: Path, size: int = 64, bands: Bands = None) -> Iterator[Item]:
    """Cutouts of ``size`` pixels around each RA/Dec of ``table`` from a large FITS image with WCS.

    The image is a 2-D image, a (C, H, W) cube, a FITS file of one image HDU per band, or a folder of
    FITS images, one per band, on one pixel grid (:func:`load_wide_image`); every other table column is
    carried. A row whose position is off the image, or whose cutout is mostly off it, is reported.
    """
    positions = read_positions(table)
    ra, dec = positions.ra, positions.dec
    planes, wcs, names = load_wide_image(image)
    try:
        picked = band_indices(names, len(planes), bands)
    except ValueError as exc:
        raise IngestError(f"{image}: {exc}") from None
    planes, names = [planes[i] for i in picked], None if names is None else [names[i] for i in picked]
    x, y = _pixel_positions(wcs, ra, dec)
    for i in range(len(positions)):
        item_id = positions.ids[i] or f"{table.stem}-{i}"
        source = f"{table.name}[{i}]"
        if not valid_radec(ra[i], dec[i]):
            yield Item(item_id, source, error=f"invalid position ra={ra[i]}, dec={dec[i]}")
            continue
        try:
            stamp = _cut(planes, x[i], y[i], size)
        except ValueError as exc:
            yield Item(item_id, source, error=str(exc))
            continue
        yield Item(item_id, source, stamp, positions.row(i), bands=names)


@dataclass
class Positions:
    """The rows of a source table: RA/Dec (degrees, NaN where masked), ids and the other columns."""

    ra: np.ndarray
    dec: np.ndarray
    ids: list[str | None]
    columns: dict[str, list[Any]]

    def __len__(self) -> int:
        return len(self.ra)

    def row(self, i: int) -> dict[str, Any]:
        """Catalog columns of row ``i``: ra, dec, then every other column of the table."""
        position = {"ra": float(self.ra[i]), "dec": float(self.dec[i])}
        return position | {name: values[i] for name, values in self.columns.items()}


def read_positions(table: Path) -> Positions:
    """RA/Dec, ids (None where the table has no id column or the cell is empty) and other columns of a table.

    The table is anything astropy reads (FITS, CSV, ECSV, VOTable ...). Columns named like catalog
    columns galsearch keeps itself (id, source, ra, dec) are carried as ``table_<name>``.
    """
    catalog = _read_table(table)
    ra_name, dec_name = _radec_columns(catalog, table)
    ra, dec = _degrees(catalog, ra_name, dec_name, table)
    id_name = _find_column(catalog, ID_NAMES)
    raw_ids = [_scalar(v) for v in catalog[id_name]] if id_name else [None] * len(catalog)
    columns = {
        f"table_{name}" if name.lower() in RESERVED_COLUMNS else name: [_scalar(v) for v in catalog[name]]
        for name in catalog.colnames
        if name not in (ra_name, dec_name, id_name) and catalog[name].ndim == 1
    }
    ids = [None if v is None or str(v).strip() == "" else str(v).strip() for v in raw_ids]
    return Positions(ra, dec, ids, columns)


def _read_table(table: Path) -> Table:
    """A source table (FITS, CSV, ECSV, VOTable ...) read by astropy; IngestError if it cannot be read."""
    if not table.is_file():
        raise IngestError(f"source table {table} does not exist")
    try:
        return Table.read(table)
    except Exception as exc:  # astropy's table readers raise many types for unreadable files
        raise IngestError(f"cannot read source table {table}: {exc}") from exc


def _find_column(catalog: Table, names: list[str]) -> str | None:
    """The first column of ``catalog`` whose name matches one of ``names`` case-insensitively."""
    by_lower = {name.lower(): name for name in catalog.colnames}
    return next((by_lower[n] for n in names if n in by_lower), None)


def _radec_columns(catalog: Table, table: Path) -> tuple[str, str]:
    """Names of the RA and Dec columns of ``catalog``; IngestError listing the columns if there are none."""
    for ra, dec in RADEC_NAMES:
        ra_name, dec_name = _find_column(catalog, [ra]), _find_column(catalog, [dec])
        if ra_name and dec_name:
            return ra_name, dec_name
    raise IngestError(
        f"source table {table} has no RA/Dec columns (looked for ra/dec, ra_deg/dec_deg, RAJ2000/DEJ2000, "
        f"ALPHA_J2000/DELTA_J2000 in any case); its columns are {catalog.colnames}"
    )


def _degrees(catalog: Table, ra_name: str, dec_name: str, table: Path) -> tuple[np.ndarray, np.ndarray]:
    """RA and Dec in degrees as float arrays (NaN where masked), honouring column units when given."""
    try:
        ra, dec = (_column_degrees(catalog[name]) for name in (ra_name, dec_name))
    except (ValueError, TypeError, u.UnitsError) as exc:
        raise IngestError(
            f"source table {table}: columns {ra_name!r}/{dec_name!r} must hold RA/Dec in degrees ({exc})"
        ) from exc
    return ra, dec


def _column_degrees(column: Any) -> np.ndarray:
    """A numeric table column as degrees (its unit if it has one, else degrees), NaN where masked."""
    values = np.ma.filled(np.ma.asarray(column, dtype=float), np.nan)
    return u.Quantity(values, column.unit or u.deg).to_value(u.deg)


def load_wide_image(image: Path) -> tuple[list[np.ndarray], WCS, list[str] | None]:
    """The band planes (each H x W, memory-mapped when possible), celestial WCS and band names (None when
    unnamed) of a large image: a FITS file (a 2-D image, a (bands, H, W) cube, or one image HDU per band)
    or a folder of FITS files of one band each, on one pixel grid (blue to red when all are known filters).
    """
    if not image.is_dir():
        headers, planes = _wide_hdus(image)
        names = _band_names(headers, len(planes))
    else:
        files = [path for path, _ in folder_files(image) if _image_suffix(path.name) in FITS_SUFFIXES]
        if not files:
            raise IngestError(f"{image} holds no FITS image (one per band expected)")
        named = {}
        for path in files:
            hdu_headers, hdu_planes = _wide_hdus(path)
            if len(hdu_planes) != 1:
                raise IngestError(f"{path}: {len(hdu_planes)} bands in one of a folder of one-band images")
            band = (_band_names(hdu_headers, 1) or [file_id(path.name)])[0]
            if band in named:
                raise IngestError(f"{path} and {named[band][0]} are both band {band}")
            named[band] = (path, hdu_headers[0], hdu_planes[0])
        names = wavelength_order(list(named))
        _check_aligned([(named[n][0], named[n][1], named[n][2].shape) for n in names])
        headers, planes = [named[n][1] for n in names], [named[n][2] for n in names]
    wcs = _celestial_wcs(headers[0])
    if wcs is None:
        raise IngestError(
            f"{image} has no celestial WCS in its header (CTYPE1/2, CRVAL, CRPIX, CD or CDELT), so the "
            "table's RA/Dec cannot be placed on it"
        )
    return planes, wcs, _unique(names)


def _wide_hdus(image: Path) -> tuple[list[Any], list[np.ndarray]]:
    """Headers (one, or one per band HDU) and band planes of a large FITS image, memory-mapped."""
    try:
        with _fits_read_errors(), fits.open(image, memmap=True) as hdul:
            hdus = [(h.header, h.data) for h in hdul if _is_band_hdu(h)]
    except ValueError as exc:
        raise IngestError(f"{image}: {exc}") from exc
    data = hdus[0][1] if hdus else None
    if data is None or data.ndim not in (2, 3):
        found = "no image data in any HDU" if data is None else f"image data of shape {data.shape}"
        raise IngestError(f"{image}: expected a 2-D image or a (bands, H, W) cube, found {found}")
    if data.ndim == 3:
        return [hdus[0][0]], list(data)
    same = [(header, plane) for header, plane in hdus if plane.shape == data.shape]
    return [h for h, _ in same], [p for _, p in same]


def _check_aligned(images: list[tuple[Path, Any, tuple[int, ...]]]) -> None:
    """IngestError unless one-band images (path, header, shape) have one shape and put the sky on the same
    pixels (within half a pixel at the corners and centre)."""
    first, header, shape = images[0]
    reference = _celestial_wcs(header)
    corners = np.array([[0, 0], [shape[1] - 1, 0], [0, shape[0] - 1], [shape[1] - 1, shape[0] - 1]])
    corners = np.vstack([corners, [[(shape[1] - 1) / 2, (shape[0] - 1) / 2]]]).T
    for path, other_header, other_shape in images[1:]:
        if other_shape != shape:
            raise IngestError(f"{path} is {other_shape} pixels but {first} is {shape}: not one pixel grid")
        other = _celestial_wcs(other_header)
        if reference is None or other is None:
            continue
        x, y = reference.world_to_pixel_values(*other.pixel_to_world_values(*corners))
        offset = float(np.nanmax(np.hypot(x - corners[0], y - corners[1])))
        if not offset <= 0.5:
            raise IngestError(
                f"{path} is not aligned with {first}: the same pixel is {offset:.2f} pixels apart on the sky "
                "(the bands of a large image must share one pixel grid)"
            )


def valid_radec(ra: Any, dec: Any) -> Any:
    """Whether RA/Dec (scalars or arrays, degrees) are finite with |Dec| <= 90."""
    return np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90)


def _pixel_positions(wcs: WCS, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """0-based pixel x, y of each RA/Dec (NaN for invalid coordinates or ones the projection cannot place)."""
    valid = valid_radec(ra, dec)
    x, y = np.full(len(ra), np.nan), np.full(len(ra), np.nan)
    if valid.any():
        x[valid], y[valid] = wcs.world_to_pixel(SkyCoord(ra[valid], dec[valid], unit="deg"))
    return x, y


def _cut(planes: list[np.ndarray], x: float, y: float, size: int) -> np.ndarray:
    """A (size, size, C) float stamp centred on pixel (x, y), NaN where it runs off the image edge.

    The same slicing as ``astropy.nddata.Cutout2D(mode="partial")``, done once for all bands.
    """
    height, width = planes[0].shape
    if not (-0.5 <= x < width - 0.5 and -0.5 <= y < height - 0.5):  # False for NaN too
        raise ValueError(f"position outside the image (pixel x={x:.1f}, y={y:.1f} of {width}x{height})")
    large, small = overlap_slices((height, width), (size, size), (y, x), mode="partial")
    inside = (small[0].stop - small[0].start) * (small[1].stop - small[1].start)
    if inside < size * size / 2:
        raise ValueError("more than half the cutout falls outside the image")
    dtype = np.result_type(planes[0].dtype, np.float32).newbyteorder("=")
    stamp = np.full((size, size, len(planes)), np.nan, dtype=dtype)
    for c, plane in enumerate(planes):
        stamp[(*small, c)] = plane[large]
    return stamp


def _scalar(value: Any) -> Any:
    """A table cell as a plain Python value (None when masked)."""
    if value is np.ma.masked:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    return value.decode(errors="replace").strip() if isinstance(value, bytes) else value
