"""galsearch: representation learning, similarity search and discovery for galaxy images.

The subpackages are :mod:`galsearch.embedder` (images to vectors), :mod:`galsearch.index` (search),
:mod:`galsearch.anomaly` (scores, active learning, labels, classifiers) and :mod:`galsearch.ui` (the web app
and the ``galsearch`` command). The names below are the main job of each, one import away::

    import galsearch

    galsearch.ingest("cutouts/", "rings")
    galsearch.embed("rings")
    galsearch.search("rings", ids=["J001655.18-002739.1"], k=10)

They load their submodule on first use, so ``import galsearch`` loads no model framework.
"""

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from galsearch.embedder.lazy import lazy_package

if TYPE_CHECKING:
    from galsearch.anomaly.classifier import labels_from_ratings, labels_from_set, suspects, train_classifier
    from galsearch.anomaly.discover import Discovery
    from galsearch.anomaly.labels import label_store
    from galsearch.anomaly.ratings import ratings_store
    from galsearch.anomaly.scores import score_collection
    from galsearch.embedder.collection import Collection, open_collection
    from galsearch.embedder.demo import build_demo
    from galsearch.embedder.embed import embed
    from galsearch.embedder.fetch import fetch
    from galsearch.embedder.ingest import ingest
    from galsearch.embedder.training.finetune import finetune, predict
    from galsearch.embedder.training.pretrain import pretrain
    from galsearch.index.mapview import map_figure
    from galsearch.index.query import search, similar
    from galsearch.index.store import build_index

try:
    __version__ = version("galsearch")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "Collection",
    "Discovery",
    "__version__",
    "build_demo",
    "build_index",
    "embed",
    "fetch",
    "finetune",
    "ingest",
    "label_store",
    "labels_from_ratings",
    "labels_from_set",
    "map_figure",
    "open_collection",
    "predict",
    "pretrain",
    "ratings_store",
    "score_collection",
    "search",
    "similar",
    "suspects",
    "train_classifier",
]

lazy_package(
    __name__,
    {
        "anomaly.classifier": ("labels_from_ratings", "labels_from_set", "suspects", "train_classifier"),
        "anomaly.discover": ("Discovery",),
        "anomaly.labels": ("label_store",),
        "anomaly.ratings": ("ratings_store",),
        "anomaly.scores": ("score_collection",),
        "embedder.collection": ("Collection", "open_collection"),
        "embedder.demo": ("build_demo",),
        "embedder.embed": ("embed",),
        "embedder.fetch": ("fetch",),
        "embedder.ingest": ("ingest",),
        "embedder.training.finetune": ("finetune", "predict"),
        "embedder.training.pretrain": ("pretrain",),
        "index.mapview": ("map_figure",),
        "index.query": ("search", "similar"),
        "index.store": ("build_index",),
    },
)
