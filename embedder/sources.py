"""Readers that turn a source (array file, folder of cutouts, large FITS image + table) into :class:`Item`s.

Readers never raise for one bad item: they yield an :class:`Item` whose ``error`` says what is wrong, so
that ingest reports it and goes on. A source that cannot be read at all raises :class:`IngestError`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
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

from .errors import IngestError

ARRAY_SUFFIXES = {".npz", ".h5", ".hdf5", ".hdf"}
# Pixels (all bands) one cutout file may declare, checked before any pixel is decoded: 16 bands of
# 1,768 x 1,768 px, far beyond a galaxy cutout, and 200 MB as float32. Larger images are mosaics (cut
# them with a source table) or decompression bombs (a few kB of PNG or FITS declaring gigabytes).
MAX_CUTOUT_PIXELS = 50_000_000


@dataclass
class Item:
    """One galaxy from a source: raw pixels (H, W[, C]) plus catalog columns, or the reason it is unusable."""

    id: str
    source: str
    image: np.ndarray | None = None
    columns: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def read_source(
    source: Path, *, catalog: str | Path | None = None, bands: list[int] | None = None, cutout_size: int = 64
) -> Iterator[Item]:
    """Yield the items of ``source``, choosing the reader by what the path is."""
    if not source.exists():
        raise IngestError(f"source {source} does not exist")
    if catalog is not None:
        return read_image_with_table(source, Path(catalog), size=cutout_size, bands=bands)
    if source.is_dir():
        return read_folder(source, bands=bands)
    if source.suffix.lower() in ARRAY_SUFFIXES:
        return read_arrays(source, bands=bands)
    raise IngestError(
        f"don't know how to ingest {source}: give a folder of FITS/PNG/JPEG cutouts, an .npz or HDF5 file "
        "with an 'images' array, or a large FITS image together with a source table (catalog=... / --catalog)"
    )


def select_bands(image: np.ndarray, bands: list[int] | None) -> np.ndarray:
    """Keep the listed channels of an (H, W, C) image, in that order."""
    if bands is None or image.ndim != 3:
        return image
    if max(bands) >= image.shape[2] or min(bands) < 0:
        raise ValueError(f"bands {bands} asked for, but the image has {image.shape[2]} channel(s)")
    return image[..., bands]


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


def read_arrays(path: Path, bands: list[int] | None = None) -> Iterator[Item]:
    """Items from an .npz/HDF5 file: ``images`` (N, H, W[, C]) plus optional per-galaxy arrays.

    ``ids``, ``ra``, ``dec`` and ``labels`` are recognised (``class_names`` adds a ``class_name`` column;
    a negative label marks an unlabelled galaxy, whose ``class_name`` is missing);
    any other array with N rows becomes a column, (N, K) arrays one column per K (named by
    ``<name>_names`` when present).
    """
    arrays, closer = _open_arrays(path)
    try:
        if "images" not in arrays:
            raise IngestError(f"{path} has no 'images' array (it has: {sorted(arrays)})")
        images = arrays["images"]
        if images.ndim not in (3, 4):
            raise IngestError(f"{path}: 'images' must be (N, H, W) or (N, H, W, C), got shape {images.shape}")
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
            for offset, image in enumerate(block):
                i = start + offset
                row = {
                    name: values[i].item() if hasattr(values[i], "item") else values[i]
                    for name, values in columns.items()
                }
                source = f"{path.name}[{i}]"
                try:
                    image = select_bands(image, bands)
                except ValueError as exc:
                    yield Item(ids[i], source, error=str(exc))
                    continue
                yield Item(ids[i], source, image, row)
    finally:
        closer.close()


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


def read_folder(folder: Path, bands: list[int] | None = None) -> Iterator[Item]:
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


def read_image_file(path: str | Path, bands: list[int] | None = None) -> Item:
    """One FITS/PNG/JPEG file as an Item (id: its name without suffix); IngestError says why if unusable."""
    path = Path(path)
    if not path.is_file():
        raise IngestError(f"image file {path} does not exist")
    item = read_file(path, path.name, bands)
    if item.error is not None:
        raise IngestError(f"cannot use {path}: {item.error}")
    return item


def read_file(path: Path, relative: str, bands: list[int] | None = None) -> Item:
    """One cutout file, named ``relative`` inside its folder, as an Item, or an Item with the reason it
    cannot be used."""
    suffix = _image_suffix(path.name)
    item_id = file_id(relative)
    if suffix is None:
        reason = f"not an image file (suffix {path.suffix or 'none'}); expected FITS, PNG or JPEG"
        return Item(item_id, relative, error=reason)
    try:
        if suffix in FITS_SUFFIXES:
            image, columns = _read_fits(path, bands)
        else:
            image, columns = select_bands(_read_picture(path), bands), {}
    except ValueError as exc:
        return Item(item_id, relative, error=str(exc))
    return Item(item_id, relative, image, columns)


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


def _read_fits(path: Path, bands: list[int] | None) -> tuple[np.ndarray, dict[str, Any]]:
    """Pixels (H, W[, C]) of a FITS cutout plus columns from its header; ValueError says what is wrong.

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
    image = select_bands(data.astype(data.dtype.newbyteorder("="), copy=False), bands)
    columns = {
        name: header[key]
        for key, name in HEADER_COLUMNS.items()
        if isinstance(header.get(key), str | int | float)
    }
    names = _band_names(headers, data.shape[2] if data.ndim == 3 else 1)
    if names is not None:
        columns["bands"] = ",".join(names if bands is None or data.ndim != 3 else [names[b] for b in bands])
    return image, columns | _centre_radec(header, data.shape)


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


def read_image_with_table(
    image: Path, table: Path, size: int = 64, bands: list[int] | None = None
) -> Iterator[Item]:
    """Cutouts of ``size`` pixels around each RA/Dec of ``table`` from a large FITS image with WCS.

    The image is a 2-D image or a (C, H, W) cube with a celestial WCS; every other table column is carried.
    A row whose position is off the image, or whose cutout is mostly off it, is reported.
    """
    positions = read_positions(table)
    ra, dec = positions.ra, positions.dec
    planes, wcs = _load_wide_image(image)
    planes = _select_planes(planes, bands, image)
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
        yield Item(item_id, source, stamp, positions.row(i))


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


def _load_wide_image(image: Path) -> tuple[list[np.ndarray], WCS]:
    """The band planes (each H x W, memory-mapped when possible) and celestial WCS of a large FITS image."""
    try:
        with _fits_read_errors(), fits.open(image, memmap=True) as hdul:
            hdu = next((h for h in hdul if _is_band_hdu(h)), None)
            header, data = (None, None) if hdu is None else (hdu.header, hdu.data)
    except ValueError as exc:
        raise IngestError(f"{image}: {exc}") from exc
    if data is None or data.ndim not in (2, 3):
        found = "no image data in any HDU" if data is None else f"image data of shape {data.shape}"
        raise IngestError(f"{image}: expected a 2-D image or a (bands, H, W) cube, found {found}")
    wcs = _celestial_wcs(header)
    if wcs is None:
        raise IngestError(
            f"{image} has no celestial WCS in its header (CTYPE1/2, CRVAL, CRPIX, CD or CDELT), so the "
            "table's RA/Dec cannot be placed on it"
        )
    return ([data] if data.ndim == 2 else list(data)), wcs


def _select_planes(planes: list[np.ndarray], bands: list[int] | None, image: Path) -> list[np.ndarray]:
    """The band planes listed in ``bands``, in that order (all when None)."""
    if bands is None:
        return planes
    if max(bands) >= len(planes) or min(bands) < 0:
        raise IngestError(f"bands {bands} asked for, but {image} has {len(planes)} band(s)")
    return [planes[b] for b in bands]


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
