"""The catalog filter language: every documented form selects the rows pandas would, and nothing else
is accepted (the hostile inputs, through the API, CLI and web app, are in test_untrusted_input.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from galsearch.embedder import Collection, open_collection
from galsearch.embedder.collection import CATALOG
from galsearch.index.filters import MAX_DEPTH, FilterError, filter_rows, parse_filter


@pytest.fixture(scope="module")
def catalog() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 400
    return pd.DataFrame(
        {
            "id": [f"g{i}" for i in range(n)],
            "mag": rng.uniform(15, 25, n),
            "z": np.where(rng.random(n) < 0.2, np.nan, rng.random(n)),
            "class_name": rng.choice(np.array(["ring", "merger", "hdf", None], dtype=object), n),
            "label": rng.integers(0, 3, n),
            "flag": rng.random(n) < 0.5,
            "my col": rng.normal(size=n),
            "count": pd.array(np.where(rng.random(n) < 0.1, None, rng.integers(0, 9, n)), dtype="Int64"),
            "note": rng.choice(np.array(["it's", 'say "hi"', "back\\slash", "plain", None], dtype=object), n),
        }
    )


@pytest.fixture(scope="module")
def collection(catalog, tmp_path_factory) -> Collection:
    """The catalog as a collection's, in row groups of 16 rows, "note" stored without a dictionary (as
    parquet stores text of many distinct values) and the other text columns with one."""
    path = tmp_path_factory.mktemp("filters") / "c"
    coll = Collection.create(path, (1, 1, 1), {"size": 1, "channels": 1, "stretch": None})
    with coll.writing():
        coll.append_galaxies(np.zeros((len(catalog), 1, 1, 1), np.uint8), catalog.assign(source="test"))
    table = pq.read_table(path / CATALOG)
    dictionary = [name for name in table.column_names if name != "note"]
    pq.write_table(table, path / CATALOG, row_group_size=16, use_dictionary=dictionary)
    chunks = pq.ParquetFile(path / CATALOG).metadata.row_group(0)
    encodings = {
        chunks.column(i).path_in_schema: chunks.column(i).encodings for i in range(chunks.num_columns)
    }
    assert "RLE_DICTIONARY" in encodings["class_name"] and "RLE_DICTIONARY" not in encodings["note"]
    return open_collection(path)


# Each filter with the same condition written for pandas' DataFrame.eval (the old, unsafe evaluator, used
# here only as a reference on trusted text): the rows must be the same.
FORMS = [
    ("mag < 20 and class_name != 'hdf'", None),
    ("0.1 < z < 0.3", None),
    ("class_name in ['ring', 'merger']", None),
    ("class_name not in ('hdf',)", None),
    ("label in [0, 2] or flag", None),
    ("mag < 20 & z > 0.1", None),
    ("(mag < 20) | ~flag", None),
    ("not flag and label == 1", None),
    ("`my col` > 0.5", None),
    ("mag * 2 - 1 > 35 and mag / 2 < 12", None),
    ("-mag < -20", None),
    ("flag == True", None),
    ("class_name < 'n'", None),
    ("count >= 4", None),
    ("abs(`my col`) > 1", "`my col`.abs() > 1"),
    ("log10(mag) > 1.3", "mag > 10 ** 1.3"),
    ("sqrt(mag) < 4.2", "mag < 4.2 ** 2"),
    ("isnull(z)", "z.isnull()"),
    ("notnull(z) & (mag > 18)", "z.notnull() & (mag > 18)"),
    ("isnull(class_name) or isnull(count)", "class_name.isnull() or count.isnull()"),
    ("mag > 15\n  and label == 0", "mag > 15 and label == 0"),
    ('note == "it\'s"', None),
    ("note in ['say \"hi\"', 'back\\\\slash'] or note == 'plain'", None),
    ("note != 'plain' and mag < 20", None),
    ("note > 'j'", None),
]


@pytest.mark.parametrize(("where", "pandas_form"), FORMS)
def test_each_form_selects_the_rows_pandas_would(catalog, where, pandas_form):
    expected = catalog.eval(pandas_form or where, engine="python").fillna(False).to_numpy(bool)
    assert np.array_equal(filter_rows(catalog, where), np.flatnonzero(expected))


@pytest.mark.parametrize(("where", "pandas_form"), FORMS)
def test_a_collection_is_filtered_in_batches_as_its_catalog_table_is(
    collection, catalog, monkeypatch, where, pandas_form
):
    monkeypatch.setattr(
        "galsearch.index.filters.BATCH_ROWS", 50
    )  # 3 row groups a batch, each with its dictionaries
    np.testing.assert_array_equal(filter_rows(collection, where), filter_rows(catalog, where))


@pytest.mark.parametrize(
    ("where", "message"),
    [("mag", "not true/false"), ("class_name + 1 > 2", "not a number"), ("mag > 99", "no galaxy satisfies")],
)
def test_a_collection_gets_the_messages_a_table_gets(collection, where, message):
    with pytest.raises(FilterError, match=message):
        filter_rows(collection, where)


def test_a_filter_says_which_columns_it_reads(catalog):
    parsed = parse_filter("mag < 20 and `my col` > 0 and class_name in ['ring']", catalog.columns)
    assert parsed.columns == {"mag", "my col", "class_name"}


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("colour > 3", r"'colour' is not a catalog column.*columns are: id, mag"),
        ("`no such` > 3", r"`no such` is not a catalog column"),
        ("mag <", "not a valid expression"),
        ("mag", "gives a number per galaxy, not true/false"),
        ("mag > 'bright'", "cannot compare a number with text"),
        ("class_name + 1 > 2", "class_name is text, not a number"),
        ("flag + 1 > 0", "flag is true/false, not a number"),
        ("mag > 18 and 3", "3 is a number, not a true/false condition"),
        ("label in ['a', 'b']", "another type"),
        ("sqrt(class_name) > 1", r"sqrt\(\) takes a number"),
        ("abs(mag, 2) > 1", r"abs\(\) takes exactly one argument"),
        ("mag ** 2 > 1", r"operator '\*\*' is not allowed"),
        ("mag is None", "'is'"),
        ("mag == None", "isnull"),
        ("b'x' == class_name", "not a number, text or True/False"),
        ("`mag > 1", "not closed"),
        ("mag > 99", "no galaxy satisfies"),
    ],
)
def test_mistakes_get_messages_that_show_the_grammar(catalog, where, message):
    with pytest.raises(FilterError, match=message) as raised:
        filter_rows(catalog, where)
    if "no galaxy" not in message:
        assert "A filter compares catalog columns" in str(raised.value)  # the grammar, in words


def test_nesting_is_bounded_without_hitting_the_recursion_limit(catalog):
    assert len(filter_rows(catalog, "not " * (MAX_DEPTH - 2) + "flag"))
    with pytest.raises(FilterError, match="too large"):
        filter_rows(catalog, "not " * MAX_DEPTH + "flag")
