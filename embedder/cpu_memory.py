"""glibc's malloc told to keep the memory that torch frees on the CPU, for the next batch to reuse."""

from __future__ import annotations

import ctypes
import functools
import sys

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_MAX = -4
KEEP_BYTES = 2**30  # free memory above this much at the top of the heap still goes back to the kernel


@functools.cache
def keep_freed_memory() -> bool:
    """Have malloc keep the memory a batch frees for the next one; whether it could (Linux, glibc).

    By default glibc serves every large block, such as a batch's activations, with a new memory map and
    unmaps it when freed, so each batch page-faults all its activations in again: the kernel then took
    nearly half the time of embedding on the CPU (the default encoder on 2 cores: 284-290 images/s by
    default, 574-585 with this; docs/benchmarks.md). The price is that the process keeps about its largest
    batch's memory (300 MB more there).
    """
    if not sys.platform.startswith("linux"):
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # CDLL(None): the C library already loaded
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_BYTES))
