"""Benchmark steps run in a fresh Python process each, so that the time and memory measured are theirs alone.

A script parses its command line with :func:`arguments` and calls :func:`in_process` for each step; the
child (the same script, run with ``--measure WHAT --path PATH``) measures the step in :func:`arguments`
and hands the result back.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited across fork and exec)."""
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


def in_process(script: str, path: Path, what: str) -> dict[str, float]:
    """The result of step ``what`` on the collection at ``path``, measured by ``script`` in a new process."""
    command = [sys.executable, script, "--measure", what, "--path", str(path)]
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)


def arguments(
    doc: str,
    measure: Callable[[Path, str], dict[str, float]],
    prefix: str,
    options: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace | None:
    """A scale benchmark's options (``--rows N...``, ``--work DIR``, made a temporary folder named
    ``prefix...`` when not given, and any that ``options`` adds), after printing the machine line; None in
    a child started by :func:`in_process`, which has printed ``measure``'s result with its peak resident
    memory."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--work", type=Path, help="folder for the collections (default: a temporary one)")
    if options is not None:
        options(parser)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.path, args.measure) | {"peak_rss_mb": peak_rss_mb()}))
        return None
    args.work = args.work or Path(tempfile.mkdtemp(prefix=prefix))
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{platform.processor() or platform.machine()}, {datetime.now(UTC):%Y-%m-%d}, load {load}\n")
    return args
