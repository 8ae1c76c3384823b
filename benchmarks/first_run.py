"""From a fresh clone to the demo served: `git clone`, then `make demo`, timed until the page answers.

    python benchmarks/first_run.py [--runs 1] [--cache-dir DIR]

Each run clones this repository into a temporary folder and runs `make demo` there, with GALSEARCH_HOME in
that folder, the web app on a free port and no PYTHONDONTWRITEBYTECODE. The package caches (uv's and pip's)
are empty for every run, unless --cache-dir names a folder kept between runs (and between calls: a warm
cache). Prints, with the machine and its load, the seconds until `make setup` finished (.venv/.installed
written) and until the page answered. Needs only the standard library, git, make and network access to the
package index.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIMIT_S = 900  # a run that has not served by then is reported as failed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as reply:
            return reply.status == 200
    except OSError:
        return False


def one_run(cache: Path | None) -> tuple[float | None, float | None]:
    """Seconds until the set-up finished and until the page answered (None: not within LIMIT_S)."""
    with tempfile.TemporaryDirectory(prefix="galsearch-first-run-") as tmp:
        clone, caches = Path(tmp) / "clone", cache or Path(tmp) / "caches"
        subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
        port = free_port()
        # As in a user's shell: Python writes the bytecode of what it imports, so that the demo's second
        # process (UMAP's compile) and later runs reuse it. Some sandboxes turn that off.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"} | {
            "UV_CACHE_DIR": str(caches / "uv"),
            "PIP_CACHE_DIR": str(caches / "pip"),
            "GALSEARCH_HOME": str(Path(tmp) / "home"),
            "GRADIO_SERVER_PORT": str(port),
        }
        started = time.perf_counter()
        make = subprocess.Popen(
            ["make", "demo"], cwd=clone, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        setup = served = None
        try:
            while time.perf_counter() - started < LIMIT_S and make.poll() is None:
                if setup is None and (clone / ".venv" / ".installed").exists():
                    setup = time.perf_counter() - started
                if answers(port):
                    served = time.perf_counter() - started
                    break
                time.sleep(0.25)
        finally:
            os.killpg(make.pid, signal.SIGTERM)
            make.wait()
        return setup, served


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")]
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    cpu = models[0] if models else platform.machine()
    return f"{datetime.now():%Y-%m-%d %H:%M}; CPU {cpu} ({os.cpu_count()} cores); load (1, 5, 15 min) {load}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--cache-dir", type=Path, help="uv and pip caches kept between runs (default: empty)")
    args = parser.parse_args()
    print(machine())
    print("\n| run | caches | make setup (s) | page answers (s) | load at the end |\n|---|---|---|---|---|")
    for run in range(1, args.runs + 1):
        warm = args.cache_dir is not None and args.cache_dir.exists()
        setup, served = one_run(args.cache_dir)
        shown = [f"{v:.1f}" if v is not None else f"not within {LIMIT_S} s" for v in (setup, served)]
        caches = "warm" if warm else "empty"
        print(f"| {run} | {caches} | {shown[0]} | {shown[1]} | {os.getloadavg()[0]:.2f} |", flush=True)
    print(f"\nFinished: {machine()}")


if __name__ == "__main__":
    main()
