"""Exceptions raised by galsearch; each message names the offending value and what to do."""


class GalsearchError(Exception):
    """Base class for errors a user can act on (the CLI prints them without a traceback)."""


class CollectionError(GalsearchError):
    """A collection directory is missing, invalid, inconsistent or busy."""


class IngestError(GalsearchError):
    """A source cannot be ingested as a whole (unknown format, unreadable table, no valid images)."""


class EncoderError(GalsearchError):
    """An encoder spec cannot be resolved or loaded, or does not match the collection."""


class ClusterError(GalsearchError):
    """A Dask cluster cannot be reached, or lost a task more often than it retries."""
