"""Images to vectors: collections, ingest, stretches, encoders and embedding.

Public names load their submodule on first use, so ``import galsearch.embedder`` loads no model framework.
"""

from typing import TYPE_CHECKING

from .lazy import lazy_package

if TYPE_CHECKING:
    from .collection import Collection, open_collection
    from .demo import build_demo, default_demo_path
    from .embed import DEFAULT_ENCODER, EmbedReport, calibrate_bands, describe, embed, encoder_of
    from .encoders import Encoder, load_encoder, save_encoder
    from .errors import CollectionError, EncoderError, GalsearchError, IngestError
    from .fetch import FetchError, FetchReport, fetch
    from .ingest import IngestReport, ingest, prepare_image
    from .sources import Item
    from .stretch import Stretch

__all__ = [
    "DEFAULT_ENCODER",
    "Collection",
    "CollectionError",
    "EmbedReport",
    "Encoder",
    "EncoderError",
    "FetchError",
    "FetchReport",
    "GalsearchError",
    "IngestError",
    "IngestReport",
    "Item",
    "Stretch",
    "build_demo",
    "calibrate_bands",
    "default_demo_path",
    "describe",
    "embed",
    "encoder_of",
    "fetch",
    "ingest",
    "load_encoder",
    "open_collection",
    "prepare_image",
    "save_encoder",
]

lazy_package(
    __name__,
    {
        "collection": ("Collection", "open_collection"),
        "demo": ("build_demo", "default_demo_path"),
        "embed": ("DEFAULT_ENCODER", "EmbedReport", "calibrate_bands", "describe", "embed", "encoder_of"),
        "encoders": ("Encoder", "load_encoder", "save_encoder"),
        "errors": ("CollectionError", "EncoderError", "GalsearchError", "IngestError"),
        "fetch": ("FetchError", "FetchReport", "fetch"),
        "ingest": ("IngestReport", "ingest", "prepare_image"),
        "sources": ("Item",),
        "stretch": ("Stretch",),
    },
)
