"""Images to vectors: collections, ingest, stretches, encoders and embedding."""

from .collection import Collection, open_collection
from .demo import build_demo, default_demo_path
from .embed import DEFAULT_ENCODER, EmbedReport, describe, embed, encoder_of
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
