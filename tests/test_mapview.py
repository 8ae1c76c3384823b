"""The interactive map (index.mapview): Plotly figures whose points map back to catalog rows, sampled past
a cap with highlighted galaxies kept, and selections computed over every galaxy."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from conftest import TINY_ENCODER, write_blob_npz
from PIL import Image

from galsearch.anomaly import cluster_collection, ratings_store, score_collection
from galsearch.embedder import Collection, CollectionError, embed, ingest, open_collection
from galsearch.index import (
    MapSelectionError,
    map_figure,
    rows_in_box,
    rows_in_polygon,
    rows_in_selection,
    umap_coordinates,
    values_of_ids,
)
from galsearch.index.mapview import shown_rows, stamp_uri

N = 64


@pytest.fixture(scope="module")
def mapped(tmp_path_factory) -> tuple[Collection, np.ndarray]:
    """An embedded 64-galaxy blob collection with a float column holding NaNs, clusters and anomaly
    scores, and its map (made once)."""
    folder = tmp_path_factory.mktemp("mapview")
    ingest(write_blob_npz(folder / "blobs.npz", N), folder / "c", progress=False)
    coll = open_collection(folder / "c")
    with coll.writing():
        coll.set_columns({"flux": np.where(np.arange(N) % 7 == 0, np.nan, np.linspace(1, 2, N))})
    embed(coll, TINY_ENCODER, device="cpu", progress=False)
    coll = open_collection(coll.path)
    cluster_collection(coll, dim=8, max_clusters=4)
    score_collection(coll, "iforest", dim=8)
    coll = open_collection(coll.path)
    return coll, umap_coordinates(coll)


def points(figure) -> dict[str, np.ndarray]:
    """Rows drawn by each scatter trace of the figure that is not a ring of highlighted galaxies."""
    return {
        t.name: np.asarray(t.customdata)
        for t in figure.data
        if t.type == "scattergl" and t.hoverinfo != "skip"
    }


def test_every_galaxy_is_drawn_once_where_it_lies_with_its_row(mapped):
    coll, coords = mapped
    figure = map_figure(coll)
    (trace,) = figure.data
    assert trace.type == "scattergl" and figure.layout.dragmode == "lasso"
    rows = np.asarray(trace.customdata)
    assert np.array_equal(np.sort(rows), np.arange(N))
    assert np.allclose(np.column_stack([trace.x, trace.y]), coords[rows])
    payload = json.loads(figure.to_json())["data"][0]
    assert {"x", "y", "customdata"} <= payload.keys()
    assert all("bdata" in payload[key] for key in ("x", "y", "customdata"))  # base64 arrays, not text


def test_colour_by_a_category_column_one_trace_each(mapped):
    coll, _ = mapped
    classes = coll.catalog["class_name"].to_numpy()
    drawn = points(map_figure(coll, "class_name"))
    assert set(drawn) == {"compact", "extended"}
    for name, rows in drawn.items():
        assert (classes[rows] == name).all()
    clusters = coll.catalog["cluster"].to_numpy()  # from `galsearch clusters`: integers, categories
    drawn = points(map_figure(coll, "cluster"))
    assert set(drawn) == {str(c) for c in np.unique(clusters)}
    assert all((clusters[rows] == int(name)).all() for name, rows in drawn.items())


def test_colour_by_numbers_with_missing_values_in_grey(mapped):
    coll, _ = mapped
    flux = coll.catalog["flux"].to_numpy()
    figure = map_figure(coll, "flux")
    by_name = {t.name: t for t in figure.data}
    numbers = by_name["flux"]
    rows = np.asarray(numbers.customdata)
    assert np.allclose(np.asarray(numbers.marker.color), flux[rows])
    assert numbers.marker.cmin == pytest.approx(np.nanmin(flux))
    assert numbers.marker.cmax == pytest.approx(np.nanmax(flux))
    assert np.array_equal(np.sort(by_name["missing"].customdata), np.flatnonzero(np.isnan(flux)))
    odd = np.linspace(0, 1, N)
    odd[[1, 2]] = [np.inf, np.nan]  # an infinity is missing too, and stays out of the colour range
    by_name = {t.name: t for t in map_figure(coll, "odd", odd).data}
    assert sorted(by_name["missing"].customdata) == [1, 2] and by_name["odd"].marker.cmax == 1
    anomaly = coll.catalog["anomaly_iforest"].to_numpy()  # from `galsearch anomalies`
    scored = next(t for t in map_figure(coll, "anomaly_iforest").data if t.name == "anomaly_iforest")
    assert np.allclose(np.asarray(scored.marker.color), anomaly[np.asarray(scored.customdata)])


def test_colour_by_a_rating_session_or_a_head_prediction(mapped):
    coll, _ = mapped
    store = ratings_store(coll.path)
    ids = coll.catalog["id"].tolist()
    for galaxy, rating in ((ids[3], 5), (ids[8], 1), (ids[3], 2)):  # the latest rating counts
        store.rate("map-test", galaxy, rating)
    latest = store.latest("map-test")
    values = values_of_ids(coll, [*latest["galaxy"], "not-a-galaxy"], [*latest["rating"], 4])
    assert values[3] == 2 and values[8] == 1 and np.isnan(values).sum() == N - 2
    figure = map_figure(coll, "rating: map-test", values)
    rated = next(t for t in figure.data if t.name == "rating: map-test")
    assert dict(zip(rated.customdata, rated.marker.color, strict=True)) == {3: 2.0, 8: 1.0}
    assert len(next(t for t in figure.data if t.name == "missing").customdata) == N - 2
    # a fine-tuned head's predictions are catalog columns: NAME (the class) and NAME_prob...
    probability = np.linspace(0, 1, N)
    copy = open_collection(coll.path)
    with copy.writing():
        copy.set_columns({"shape_prob": probability})
    (predicted,) = map_figure(open_collection(coll.path), "shape_prob").data
    assert np.allclose(np.asarray(predicted.marker.color), probability[np.asarray(predicted.customdata)])
    with pytest.raises(CollectionError, match="no catalog column 'nope'"):
        map_figure(coll, "nope")
    with pytest.raises(ValueError, match="one value per mapped galaxy"):
        map_figure(coll, "short", values=np.zeros(3))


def test_past_the_cap_a_sample_is_drawn_over_the_density_of_all_highlights_kept(mapped):
    coll, _ = mapped
    sample = shown_rows(N, 20)
    assert len(sample) == 20 and np.array_equal(sample, shown_rows(N, 20))  # seeded
    outside = np.setdiff1d(np.arange(N), sample)[:3]
    highlight = {"search results": outside[:2], "being rated": outside[2:]}
    figure = map_figure(coll, "class_name", highlight=highlight, max_points=20)
    density = figure.data[0]  # log10(count) + 1 per cell, NaN where empty
    assert density.type == "heatmap"
    assert np.nansum(10 ** (np.asarray(density.z, float) - 1)) == pytest.approx(N)
    drawn = np.sort(np.concatenate(list(points(figure).values())))
    assert np.array_equal(drawn, np.union1d(sample, outside))  # the highlighted are drawn too
    rings = {t.name: np.asarray(t.customdata) for t in figure.data[1:] if t.hoverinfo == "skip"}
    assert {k: v.tolist() for k, v in rings.items()} == {k: v.tolist() for k, v in highlight.items()}
    assert "(23 drawn over the density of all)" in figure.layout.title.text
    assert len(points(map_figure(coll, highlight=[5], max_points=N))["galaxies"]) == N  # no cap reached
    with pytest.raises(ValueError, match="highlighted rows"):
        map_figure(coll, highlight=[N])


def test_boxes_and_lassos_select_over_every_galaxy(mapped):
    _, coords = mapped
    (x0, y0), (x1, y1) = coords.min(axis=0), coords.max(axis=0)
    assert np.array_equal(rows_in_box(coords, (x0, x1), (y0, y1)), np.arange(N))
    xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
    lower_left = np.flatnonzero((coords[:, 0] <= xm) & (coords[:, 1] <= ym))
    assert np.array_equal(rows_in_box(coords, (xm, x0 - 1), (ym, y0 - 1)), lower_left)  # either order
    triangle = np.array([[x0 - 1, y0 - 1], [x1 + 1, y0 - 1], [x0 - 1, y1 + 1]])
    below_diagonal = np.flatnonzero(
        (coords[:, 0] - x0 + 1) / (x1 - x0 + 2) + (coords[:, 1] - y0 + 1) / (y1 - y0 + 2) < 1
    )
    assert np.array_equal(rows_in_polygon(coords, triangle), below_diagonal)
    lasso = {"lassoPoints": {"x": triangle[:, 0].tolist(), "y": triangle[:, 1].tolist()}}
    assert np.array_equal(rows_in_selection(coords, lasso), below_diagonal)
    box = {"range": {"x": [x0, xm], "y": [y0, ym]}, "at": 1}  # as the page sends it (with a timestamp)
    assert np.array_equal(rows_in_selection(coords, box), lower_left)
    assert len(rows_in_box(coords, (x1 + 1, x1 + 2), (y0, y1))) == 0


def test_a_selection_on_a_sampled_map_includes_galaxies_not_drawn(mapped):
    coll, coords = mapped
    figure = map_figure(coll, max_points=10)
    drawn = np.concatenate(list(points(figure).values()))
    everything = rows_in_box(coords, *zip(coords.min(axis=0), coords.max(axis=0), strict=True))
    assert len(drawn) == 10 and np.array_equal(everything, np.arange(N))


@pytest.mark.parametrize(
    "selection, message",
    [
        ({"range": {"x": [0, "a"], "y": [0, 1]}}, "must be numbers"),
        ({"range": {"x": [0, 1, 2], "y": [0, 1]}}, "2 finite numbers"),
        ({"range": {"x": [0, float("nan")], "y": [0, 1]}}, "2 finite numbers"),
        ({"lassoPoints": {"x": [0, 1], "y": [0, 1]}}, "at least 3"),
        ({"lassoPoints": {"x": [0, 1, 2], "y": [0, 1]}}, "as many x as y"),
        ({"lassoPoints": {"x": list(range(20_000)), "y": list(range(20_000))}}, "at most 10000"),
        ({"points": []}, "'range' \\(box\\) or 'lassoPoints'"),
        ([1, 2], "got list"),
    ],
)
def test_malformed_selections_are_refused_with_what_arrived(mapped, selection, message):
    _, coords = mapped
    with pytest.raises(MapSelectionError, match=message):
        rows_in_selection(coords, selection)


def decoded(uri: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as picture:
        return np.asarray(picture.convert("RGB"))


def test_a_stamp_is_a_data_uri_of_the_stored_pixels(mapped):
    coll, _ = mapped
    stored = np.asarray(coll.images[5])
    png = stamp_uri(stored)
    assert png.startswith("data:image/png;base64,") and np.array_equal(decoded(png), stored)  # lossless
    webp = stamp_uri(stored, "webp")
    assert webp.startswith("data:image/webp;base64,") and len(webp) < len(png)
    assert decoded(webp).shape == stored.shape and np.abs(decoded(webp) - stored.astype(float)).mean() < 8
    with pytest.raises(ValueError, match="png, webp"):
        stamp_uri(stored, "gif")
