"""Similarity queries: galaxies like given ones, like an image file or like the one at a sky position.

Positives (ids, an image, a position) combine into one query vector that negatives push away from
(Rocchio relevance feedback); a metadata filter restricts which galaxies may be returned. Results are
catalog rows that export to text, CSV, JSON, FITS and VOTable.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from galsearch.embedder.collection import Collection, open_collection
from galsearch.embedder.errors import CollectionError, GalsearchError

from .filters import filter_rows
from .store import INDEX_DIR, INFO_FILE, SearchIndex, build_index, has_index, load_index, normalized

if TYPE_CHECKING:
    from astropy.table import Table

NEGATIVE_WEIGHT = 0.75
FORMATS = ("text", "csv", "json", "fits", "votable")
SUFFIX_FORMATS = {
    ".txt": "text",
    ".csv": "csv",
    ".json": "json",
    ".fits": "fits",
    ".fit": "fits",
    ".xml": "votable",
    ".vot": "votable",
}


class QueryError(GalsearchError):
    """A search cannot be run as asked: no query, no galaxy at a position, a bad format."""


@dataclass(frozen=True)
class Match:
    """The catalogued galaxy nearest a sky position."""

    row: int
    id: str
    separation_arcsec: float


def search(
    collection: str | Path | Collection,
    *,
    ids: str | Iterable[str] = (),
    negative_ids: str | Iterable[str] = (),
    image: str | Path | None = None,
    ra: float | None = None,
    dec: float | None = None,
    radius_arcsec: float = 5.0,
    where: str | None = None,
    k: int = 10,
    negative_weight: float = NEGATIVE_WEIGHT,
    device: str | None = None,
    fetch: str | None = None,
    dask: str | None = None,
) -> pd.DataFrame:
    """The ``k`` galaxies most like the query, best first: catalog rows with ``rank`` and a score column.

    The query is the mean of the positives — the galaxies ``ids``, an ``image`` file (embedded with the
    collection's encoder) and the galaxy nearest (``ra``, ``dec``) within ``radius_arcsec`` — moved away
    from the mean of ``negative_ids``. Positive and negative galaxies are left out of the results; an
    image is not (a galaxy's own file finds that galaxy first). ``where`` is a condition on catalog
    columns (``"mag < 20 and class_name != 'hdf'"``, see :mod:`galsearch.index.filters`) that every result
    satisfies. The score is ``similarity`` (cosine) or ``distance`` (l2 index); a matched position is in
    ``result.attrs["matched"]``. With ``fetch`` (a survey: legacy, sdss, panstarrs), a position with no
    galaxy within the radius is searched by its cutout, downloaded from that survey (network!) and
    embedded like an image; its cache file is in ``result.attrs["fetched"]``. A sharded index is searched
    on the workers of the Dask cluster whose scheduler is at ``dask`` when given.
    """
    coll = collection if isinstance(collection, Collection) else open_collection(collection)
    positive_ids, negative_ids = _id_list(ids), _id_list(negative_ids)
    if not positive_ids and image is None and ra is None and dec is None:
        raise QueryError("nothing to search for: give galaxy ids, an image file or ra/dec")
    if k < 1:
        raise QueryError(f"k must be at least 1, got {k}")
    k = min(k, len(coll))  # a larger k asks for nothing more, and would only size FAISS's result arrays
    _require_embedded(coll)
    allowed = None if where is None else filter_rows(coll, where)
    matched, fetched = _position(coll, ra, dec, radius_arcsec, fetch)
    positives = _rows(coll, positive_ids + ([matched.id] if matched else []))
    negatives = _rows(coll, negative_ids)
    if len(both := np.intersect1d(positives, negatives)):
        ids = sorted(coll.catalog_rows(both, ["id"])["id"])
        raise QueryError(f"galaxies asked for both as like and unlike: {ids[:10]}")
    vectors = coll.embeddings[positives]
    if image is not None:
        vectors = np.vstack([vectors, embed_image_file(coll, image, device)])
    if fetched is not None:
        vectors = np.vstack([vectors, embed_image(coll, fetched[0], device, f"the {fetch} cutout")])
    vector_index = _index_of(coll, device, dask)
    query = query_vector(vectors, coll.embeddings[negatives], vector_index.metric, negative_weight)
    scores, rows = _search_excluding(vector_index, query, k, np.union1d(positives, negatives), allowed)
    result = _results(coll, rows, scores, vector_index.metric)
    if matched is not None:
        result.attrs["matched"] = {"id": matched.id, "separation_arcsec": matched.separation_arcsec}
    if fetched is not None:
        result.attrs["fetched"] = {"survey": fetch, "cutout": str(fetched[1])}
    return result


def _position(
    coll: Collection, ra: float | None, dec: float | None, radius_arcsec: float, fetch: str | None
) -> tuple[Match | None, tuple[np.ndarray, Path] | None]:
    """The galaxy matched at a position, or else (with ``fetch``) the pixels and file of its cutout."""
    if ra is None and dec is None:
        return None, None
    try:
        return match_position(coll, ra, dec, radius_arcsec), None
    except QueryError:
        if fetch is None or ra is None or dec is None:
            raise
    from galsearch.embedder.fetch import fetch_position

    return None, fetch_position(coll, fetch, ra, dec)


def similar(collection: str | Path | Collection, ids: str | Iterable[str], k: int = 10) -> pd.DataFrame:
    """The ``k`` galaxies most like the given one(s), themselves excluded (see :func:`search`)."""
    return search(collection, ids=ids, k=k)


def _id_list(ids: str | Iterable[str]) -> list[str]:
    """Ids as a list of strings (one id may be given as a plain string)."""
    return [ids] if isinstance(ids, str) else [str(i) for i in ids]


def _rows(coll: Collection, ids: list[str]) -> np.ndarray:
    """Sorted unique catalog rows of ``ids`` (an empty int array for none)."""
    return np.unique(coll.rows_of(ids)) if ids else np.empty(0, dtype=np.int64)


def _require_embedded(coll: Collection) -> None:
    """Raise unless every galaxy of ``coll`` has an embedding."""
    embedded, total = coll.counts["embedded"], len(coll)
    if embedded < total:
        raise CollectionError(
            f"{coll.path} has {embedded} of {total} galaxies embedded; "
            f"run `galsearch embed {coll.path}` first"
        )


_LOADED: dict[tuple[Path, str | None, str | None], tuple[tuple, SearchIndex]] = {}


def _index_of(coll: Collection, device: str | None, dask: str | None = None) -> SearchIndex:
    """The collection's vector index, built first when it has none yet (a stale one is an error).

    A loaded index is kept for the next query (an HNSW index of a million galaxies is over a gigabyte to
    read) until its description file, the embedding count or the encoder fingerprint changes.
    """
    if not has_index(coll):
        build_index(coll, device=device, progress=False)
    info = (coll.path / INDEX_DIR / INFO_FILE).stat()
    state = (info.st_mtime_ns, info.st_size, coll.counts["embedded"], coll.encoder)
    key = (coll.path.resolve(), device, dask)
    cached = _LOADED.get(key)
    if cached is None or cached[0] != state:
        _LOADED[key] = state, load_index(coll, device, dask)
    return _LOADED[key][1]


def query_vector(
    positives: np.ndarray, negatives: np.ndarray, metric: str, negative_weight: float = NEGATIVE_WEIGHT
) -> np.ndarray:
    """One query vector: the mean of ``positives`` moved away from the mean of ``negatives`` (Rocchio).

    For cosine the vectors are unit-normalised first and the query renormalised: p - w n; for l2 the
    raw mean moves away from the negatives' mean: p + w (p - n).
    """
    if metric == "cosine":
        query = normalized(normalized(positives).mean(axis=0, keepdims=True))
        if len(negatives):
            query = normalized(
                query - negative_weight * normalized(normalized(negatives).mean(axis=0, keepdims=True))
            )
        return query[0]
    query = positives.mean(axis=0)
    if len(negatives):
        query = query + negative_weight * (query - negatives.mean(axis=0))
    return np.asarray(query, dtype=np.float32)


def embed_image_file(collection: Collection, path: str | Path, device: str | None = None) -> np.ndarray:
    """The embedding of a FITS/PNG/JPEG file, preprocessed and encoded as the collection's images were.

    A file that names its bands (a FITS cube's BAND0.., FILTER) gives the collection's named bands, in the
    collection's order; one without some of them is refused, naming both lists.
    """
    from galsearch.embedder.embed import band_names
    from galsearch.embedder.sources import read_image_file, select_bands

    item = read_image_file(path)
    image, wanted = item.image, band_names(collection)
    if item.bands is not None and wanted:
        missing = [band for band in wanted if band not in item.bands]
        if missing:
            raise QueryError(
                f"cannot use {path} as a query image: it has bands {item.bands}, the collection "
                f"{', '.join(wanted)} (missing {', '.join(missing)})"
            )
        image, _ = select_bands(image, item.bands, wanted)
    return embed_image(collection, image, device, str(path))


def embed_image(
    collection: Collection, image: np.ndarray, device: str | None = None, name: str = "the image"
) -> np.ndarray:
    """The embedding of raw pixels (H, W[, C]), preprocessed and encoded as the collection's images were."""
    from galsearch.embedder.embed import encoder_of
    from galsearch.embedder.ingest import prepare_image

    side, _, channels = collection.image_shape
    try:
        stored = prepare_image(image, side, channels, collection.stretch, collection.crop)
    except ValueError as exc:
        raise QueryError(f"cannot use {name} as a query image: {exc}") from exc
    encoder = encoder_of(collection, device)
    return encoder.embed(stored[None], tta=bool(collection.encoder.get("tta")))[0]


def match_position(
    collection: Collection, ra: float | None, dec: float | None, radius_arcsec: float = 5.0
) -> Match:
    """The catalogued galaxy nearest (``ra``, ``dec``) in degrees; QueryError if none is within the radius."""
    from astropy.coordinates import SkyCoord

    if ra is None or dec is None:
        raise QueryError("give both ra and dec (degrees) to search around a position")
    if not {"ra", "dec"} <= set(collection.columns):
        raise QueryError(
            f"{collection.path} has no ra/dec columns, so positions cannot be looked up; "
            f"its catalog columns are: {', '.join(collection.columns)}"
        )
    catalog = collection.catalog_columns(["ra", "dec"])
    ra_all, dec_all = (pd.to_numeric(catalog[c], errors="coerce").to_numpy(float) for c in ("ra", "dec"))
    known = np.flatnonzero(np.isfinite(ra_all) & np.isfinite(dec_all))
    if not len(known):
        raise QueryError(f"no galaxy of {collection.path} has a known ra/dec")
    try:
        target = SkyCoord([ra], [dec], unit="deg")
    except ValueError as exc:
        raise QueryError(f"invalid position ra={ra}, dec={dec}: {exc}") from exc
    nearest, separation, _ = target.match_to_catalog_sky(SkyCoord(ra_all[known], dec_all[known], unit="deg"))
    row, arcsec = int(known[nearest[0]]), float(separation.arcsec[0])
    galaxy = str(collection.catalog_rows([row], ["id"])["id"].iloc[0])
    if arcsec > radius_arcsec:
        raise QueryError(
            f"no galaxy within {radius_arcsec:g} arcsec of ra={ra}, dec={dec}; the nearest is {galaxy} "
            f"at {arcsec:.1f} arcsec (widen the radius to use it)"
        )
    return Match(row, galaxy, arcsec)


def _search_excluding(
    vector_index: SearchIndex, query: np.ndarray, k: int, excluded: np.ndarray, allowed: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Scores and rows of the ``k`` best matches to one query among ``allowed``, leaving out ``excluded``."""
    scores, rows = vector_index.search(query[None], k + len(excluded), allowed)
    keep = (rows[0] >= 0) & ~np.isin(rows[0], excluded)
    return scores[0][keep][:k], rows[0][keep][:k]


def _results(coll: Collection, rows: np.ndarray, scores: np.ndarray, metric: str) -> pd.DataFrame:
    """Catalog rows as a result table: rank, id, similarity (cosine) or L2 distance, ra, dec, the rest."""
    result = coll.catalog_rows(rows)
    front = ["id", *(c for c in ("ra", "dec") if c in result.columns)]
    result = result[front + [c for c in result.columns if c not in front]]
    if metric == "cosine":
        result.insert(1, "similarity", scores)
    else:
        result.insert(1, "distance", np.sqrt(np.maximum(scores, 0)))
    result.insert(0, "rank", np.arange(1, len(result) + 1))
    return result


def write_results(table: pd.DataFrame, path: str | Path | None = None, format: str | None = None) -> None:
    """Write a result table as text, CSV, JSON records, FITS or VOTable to ``path`` (stdout when None).

    Without ``format`` it follows the suffix of ``path`` (.txt, .csv, .json, .fits/.fit, .xml/.vot).
    """
    format = format or _format_of(path)
    if format in ("fits", "votable"):
        if path is None:
            raise QueryError(f"{format} results need an output file (--output FILE)")
        to_astropy(table, utf8_bytes=format == "fits").write(path, format=format, overwrite=True)
        return
    if format == "text":
        text = table.to_string(index=False) + "\n"
    elif format == "csv":
        text = table.to_csv(index=False)
    elif format == "json":
        text = table.to_json(orient="records") + "\n"
    else:
        raise QueryError(f"unknown output format {format!r}; choose one of {', '.join(FORMATS)}")
    if path is None:
        sys.stdout.write(text)
    else:
        Path(path).write_text(text)


def _format_of(path: str | Path | None) -> str:
    """The output format that the suffix of ``path`` names (text for stdout)."""
    if path is None:
        return "text"
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIX_FORMATS:
        raise QueryError(
            f"cannot tell the output format of {path} from its suffix; name it .csv, .json, .fits, .xml "
            f"or .vot, or give the format (--format {'|'.join(FORMATS)})"
        )
    return SUFFIX_FORMATS[suffix]


def to_astropy(table: pd.DataFrame, utf8_bytes: bool = False) -> Table:
    """The table as an astropy Table; text columns become strings with missing values masked.

    ``utf8_bytes`` stores text as UTF-8 bytes, which FITS needs for anything beyond ASCII.
    """
    from astropy.table import MaskedColumn, Table

    text = [c for c in table.columns if not pd.api.types.is_numeric_dtype(table[c])]
    strings = table.astype({c: "string" for c in text})
    out = Table.from_pandas(strings.fillna({c: "" for c in text}))
    for c in text:
        values = np.char.encode(out[c].data, "utf-8") if utf8_bytes else out[c].data
        out[c] = MaskedColumn(values, mask=strings[c].isna().to_numpy())
    return out
