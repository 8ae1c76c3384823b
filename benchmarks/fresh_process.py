"""Benchmark steps run in a fresh Python process each, so that the time and memory measured are theirs alone.

A script calls :func:`in_process` for each step; the child (the same script, run with ``--measure WHAT
--path PATH``) measures the step and hands the result back with :func:`report`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited across fork and exec)."""
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


def in_process(script: str, path: Path, what: str) -> dict[str, float]:
    """The result of step ``what`` on the collection at ``path``, measured by ``script`` in a new process."""
    command = [sys.executable, script, "--measure", what, "--path", str(path)]
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)


def report(result: dict[str, float]) -> None:
    """In the child: print ``result`` with the peak resident memory, for :func:`in_process`."""
    print(json.dumps(result | {"peak_rss_mb": peak_rss_mb()}))
