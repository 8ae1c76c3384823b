"""The catalog filter language: every documented form selects the rows pandas would, and nothing else
is accepted (the hostile inputs, through the API, CLI and web app, are in test_untrusted_input.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from index.filters import MAX_DEPTH, FilterError, filter_rows, parse_filter


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
        }
    )


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
]


@pytest.mark.parametrize(("where", "pandas_form"), FORMS)
def test_each_form_selects_the_rows_pandas_would(catalog, where, pandas_form):
    expected = catalog.eval(pandas_form or where, engine="python").fillna(False).to_numpy(bool)
    assert np.array_equal(filter_rows(catalog, where), np.flatnonzero(expected))


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
