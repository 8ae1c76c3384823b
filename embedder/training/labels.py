"""Label files for fine-tuning: an ``id`` column plus class labels or vote fractions, checked row by row."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.table import Table

from ..collection import Collection
from ..errors import GalsearchError

TASKS = ("classify", "binary", "regress")
SHOWN = 10  # offending rows listed in an error message
MAX_FILE_BYTES = 256 * 2**20  # about ten million "id,label" lines; a larger file is refused unread
MAX_CLASSES = 100  # more distinct labels than this is a wrong column (ids, magnitudes), not classes


class LabelError(GalsearchError):
    """A label file that cannot be used; the message lists the offending rows."""


@dataclass
class Labels:
    """Validated labels: catalog rows and their targets (class indices, or fractions of shape (n, q))."""

    task: str
    rows: np.ndarray
    targets: np.ndarray
    columns: list[str]
    classes: list[str]

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, which: np.ndarray) -> Labels:
        """The labels at positions ``which``."""
        return Labels(self.task, self.rows[which], self.targets[which], self.columns, self.classes)

    @property
    def stratum(self) -> np.ndarray | None:
        """What to stratify splits on (the class), or None for regression."""
        return None if self.task == "regress" else self.targets


def _table(source: str | Path | pd.DataFrame) -> pd.DataFrame:
    if isinstance(source, pd.DataFrame):
        return source.reset_index(drop=True)
    path = Path(source)
    if not path.is_file():
        raise LabelError(f"label file {path} does not exist")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise LabelError(
            f"the label file {path} holds {path.stat().st_size / 2**20:,.0f} MiB; a label file may hold "
            f"{MAX_FILE_BYTES // 2**20} MiB (keep the id and label columns only)"
        )
    try:
        if path.suffix.lower() in (".csv", ".txt"):
            table = Table.read(path, format="ascii.csv")
        elif path.suffix.lower() in (".fits", ".fit", ".fts"):
            table = Table.read(path, memmap=True)  # a header declaring more rows than the file holds fails
        else:
            table = Table.read(path)
        table.convert_bytestring_to_unicode()  # FITS text columns are bytes
        return table.to_pandas()
    except Exception as exc:  # astropy raises many types for unreadable files and odd columns
        raise LabelError(f"cannot read the label file {path}: {exc}") from exc


def _offending(frame: pd.DataFrame, mask: np.ndarray, what: str) -> str:
    bad = np.flatnonzero(mask)
    listed = ", ".join(f"row {i + 1} (id {frame['id'].iloc[i]!s})" for i in bad[:SHOWN])
    more = f" and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
    return f"{len(bad)} row(s) {what}: {listed}{more}"


def read_labels(
    source: str | Path | pd.DataFrame,
    collection: Collection,
    task: str = "classify",
    columns: list[str] | None = None,
    positive: str | None = None,
) -> Labels:
    """Read and check labels for ``collection``: CSV/FITS/VOTable (or a DataFrame) with an ``id`` column.

    ``classify`` and ``binary`` take one label column (``columns`` or the ``label`` column or the only
    other column); ``binary`` needs exactly two classes, the positive one being ``positive`` or else the
    later in sorted order (1 over 0, True over False, ring over not_ring). ``regress`` takes vote
    fractions in [0, 1] from ``columns`` or every other numeric column. Rows are numbered from 1 (data
    rows, after any header) in error messages.
    """
    if task not in TASKS:
        raise LabelError(f"unknown task {task!r}: choose one of {', '.join(TASKS)}")
    frame = _table(source)
    if "id" not in frame.columns:
        raise LabelError(f"the label file needs an 'id' column; it has {list(frame.columns)}")
    frame["id"] = frame["id"].astype(str).str.strip()
    others = [c for c in frame.columns if c != "id"]
    if columns:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise LabelError(f"column(s) {missing} are not in the label file (it has {others})")
    elif task == "regress":
        columns = [c for c in others if pd.api.types.is_numeric_dtype(frame[c])]
    else:
        columns = ["label"] if "label" in others else others if len(others) == 1 else []
    if not columns or (task != "regress" and len(columns) != 1):
        raise LabelError(f"cannot tell which column holds the labels among {others}: name it with --columns")
    problems = []
    rows = pd.Index(collection.catalog["id"]).get_indexer(frame["id"])
    if (rows < 0).any():
        problems.append(_offending(frame, rows < 0, f"with ids not in collection {collection.path.name}"))
    duplicated = frame["id"].duplicated(keep=False).to_numpy()
    if duplicated.any():
        problems.append(_offending(frame, duplicated, "with an id given more than once"))
    values = frame[columns]
    shaped = values.map(lambda v: np.ndim(v) > 0).to_numpy().any(axis=1)  # FITS vector columns
    if shaped.any():
        problems.append(_offending(frame, shaped, "with an array, not one value, as the target"))
    if task == "regress":
        numbers = values.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
        missing = np.isnan(numbers).any(axis=1)
        outside = ~missing & ((numbers < 0) | (numbers > 1)).any(axis=1)
        if outside.any():
            problems.append(_offending(frame, outside, "with fractions outside [0, 1]"))
    else:
        text = values.iloc[:, 0].astype(str).str.strip()
        missing = (values.iloc[:, 0].isna() | text.isin(["", "nan", "NaN", "None", "--"])).to_numpy()
    if missing.any():
        problems.append(_offending(frame, missing, "with a missing (NaN or empty) target"))
    if problems:
        raise LabelError("the label file has problems:\n  - " + "\n  - ".join(problems))
    if task == "regress":
        return Labels(task, rows, numbers.astype(np.float32), list(columns), [])
    return _classes(task, rows, values.iloc[:, 0], columns[0], positive)


def _classes(task: str, rows: np.ndarray, values: pd.Series, column: str, positive: str | None) -> Labels:
    names = values.map(_label_text)
    classes = sorted(names.unique(), key=_sort_key)
    if len(classes) > MAX_CLASSES:
        raise LabelError(
            f"column {column!r} has {len(classes)} different labels; a classifier takes at most "
            f"{MAX_CLASSES} classes (is it an id or a measurement? fractions go with --task regress)"
        )
    if len(classes) < 2:
        raise LabelError(
            f"column {column!r} has only one class ({classes[0]}): a classifier needs two or more"
        )
    if task == "binary":
        if len(classes) != 2:
            raise LabelError(
                f"task binary needs exactly two classes in {column!r}, found {len(classes)}: {classes}"
            )
        if positive is not None:
            if positive not in classes:
                raise LabelError(f"positive class {positive!r} is not one of {classes}")
            classes = [c for c in classes if c != positive] + [positive]
    index = {name: i for i, name in enumerate(classes)}
    return Labels(task, rows, names.map(index).to_numpy(dtype=np.int64), [column], classes)


def _label_text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _sort_key(name: str) -> tuple:
    try:
        return (0, float(name), name)
    except ValueError:
        lowered = name.lower()
        return (1 if lowered in ("false", "no") else 2 if lowered in ("true", "yes") else 3, 0.0, name)
