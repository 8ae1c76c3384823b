"""Vector storage and nearest-neighbour search over a collection's embeddings."""

from .exact import nearest, normalized, similar

__all__ = ["nearest", "normalized", "similar"]
