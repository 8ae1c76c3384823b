"""Vector indexes over a collection's embeddings and similarity queries on them.

Public names load their submodule on first use (the map's matplotlib and Plotly only when a map is drawn).
"""

from typing import TYPE_CHECKING

from galsearch.embedder.lazy import lazy_package

if TYPE_CHECKING:
    from .filters import FilterError, filter_rows, parse_filter
    from .mapview import (
        MapSelectionError,
        map_figure,
        rows_in_box,
        rows_in_polygon,
        rows_in_selection,
        values_of_ids,
    )
    from .projection import MapPicture, render_map, save_map_png, umap_coordinates
    from .query import (
        FORMATS,
        Match,
        QueryError,
        embed_image,
        embed_image_file,
        match_position,
        query_vector,
        search,
        similar,
        to_astropy,
        write_results,
    )
    from .store import (
        IndexInfo,
        IndexSettingError,
        SearchIndex,
        StaleIndexError,
        VectorIndex,
        add_to_index,
        build_index,
        has_index,
        load_index,
        normalized,
        read_info,
    )

__all__ = [
    "FORMATS",
    "FilterError",
    "IndexInfo",
    "IndexSettingError",
    "MapPicture",
    "MapSelectionError",
    "Match",
    "QueryError",
    "SearchIndex",
    "StaleIndexError",
    "VectorIndex",
    "add_to_index",
    "build_index",
    "embed_image",
    "embed_image_file",
    "filter_rows",
    "has_index",
    "load_index",
    "map_figure",
    "match_position",
    "normalized",
    "parse_filter",
    "query_vector",
    "read_info",
    "render_map",
    "rows_in_box",
    "rows_in_polygon",
    "rows_in_selection",
    "save_map_png",
    "search",
    "similar",
    "to_astropy",
    "umap_coordinates",
    "values_of_ids",
    "write_results",
]

lazy_package(
    __name__,
    {
        "filters": ("FilterError", "filter_rows", "parse_filter"),
        "mapview": (
            "MapSelectionError",
            "map_figure",
            "rows_in_box",
            "rows_in_polygon",
            "rows_in_selection",
            "values_of_ids",
        ),
        "projection": ("MapPicture", "render_map", "save_map_png", "umap_coordinates"),
        "query": (
            "FORMATS",
            "Match",
            "QueryError",
            "embed_image",
            "embed_image_file",
            "match_position",
            "query_vector",
            "search",
            "similar",
            "to_astropy",
            "write_results",
        ),
        "store": (
            "IndexInfo",
            "IndexSettingError",
            "SearchIndex",
            "StaleIndexError",
            "VectorIndex",
            "add_to_index",
            "build_index",
            "has_index",
            "load_index",
            "normalized",
            "read_info",
        ),
    },
)
