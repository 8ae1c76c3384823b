"""Many people at once: latency of the web app under N concurrent raters (and searchers) over real HTTP.

    python benchmarks/load.py [--work DIR] [--raters 16] [--ratings 8] [--searchers 0] [--searches 8]
                              [--serve] [--shared-session]

Serves the demo collection (built in WORK/demo if missing, embedded with the default encoder and
indexed, as benchmarks/ui.py does) on 127.0.0.1, in this process or, with --serve, as a `galsearch serve`
process. Each rater is a thread with its own httpx client in a closed loop without think time: it asks for
a galaxy (POST /gradio_api/run/next), then rates --ratings times (POST /gradio_api/run/rate, whose
answer names the next galaxy). Searchers search by galaxy id (POST /gradio_api/run/similar, 12 neighbours)
--searches times. Each rater rates in a session of its own unless --shared-session (all in one). Prints a
markdown table per endpoint (n, p50/p95/max ms, errors) and the ratings acknowledged (HTTP 200) against
those in the store afterwards.
Each client sends a Gradio session hash of its own, as a browser page and gradio_client do; with --bare
none (Gradio then builds a fresh page state, about 0.2 s of CPU on the demo app, for every request).
Targets: rating + next p95 < 1000 ms at 50 raters; search p95 < 1000 ms at 16 searchers.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

# This file's folder comes first on sys.path, where benchmarks/ui.py would hide the `ui` package; the
# checkout's root takes its place, so that the code measured is this checkout's (not an installed one's).
sys.path.remove(str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import numpy as np

from galsearch.anomaly import ratings_store
from galsearch.embedder import DEFAULT_ENCODER, build_demo, embed
from galsearch.index import build_index

TARGET_MS = 1000  # p95 of rating + next galaxy, and of a search


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Timings:
    """Latencies (ms) and errors per endpoint, appended to from many threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ms: dict[str, list[float]] = {}
        self.errors: dict[str, int] = {}
        self.acknowledged = 0

    def post(self, http: httpx.Client, url: str, endpoint: str, data: list, page: str | None) -> list | None:
        """POST to the endpoint as the page ``page`` (a Gradio session hash; None: as a bare HTTP client)
        and time it; the answer's data, or None after an error."""
        body = {"data": data} if page is None else {"data": data, "session_hash": page}
        start = time.perf_counter()
        try:
            answer = http.post(f"{url}gradio_api/run/{endpoint}", json=body)
            answer.raise_for_status()
            out = answer.json()["data"]
        except (httpx.HTTPError, KeyError, ValueError):
            out = None
        ms = 1000 * (time.perf_counter() - start)
        with self.lock:
            self.ms.setdefault(endpoint, []).append(ms)
            self.errors[endpoint] = self.errors.get(endpoint, 0) + (out is None)
            self.acknowledged += endpoint == "rate" and out is not None
        return out


def rater(url: str, session: str, ratings: int, seed: int, page: str | None, timings: Timings) -> None:
    """Rate ``ratings`` galaxies one after the other in ``session``, each answer naming the next."""
    scores = np.random.default_rng(seed).integers(0, 6, ratings)
    with httpx.Client(timeout=120) as http:
        first = timings.post(http, url, "next", [session, []], page)
        galaxy = first[0]["next"]["id"] if first else None
        for score in scores:
            if galaxy is None:
                return
            answer = timings.post(http, url, "rate", [session, galaxy, float(score), []], page)
            galaxy = answer[0]["next"]["id"] if answer else None


def searcher(url: str, ids: np.ndarray, page: str | None, timings: Timings) -> None:
    """Search by each of ``ids`` in turn (12 neighbours, answered as JSON)."""
    with httpx.Client(timeout=120) as http:
        for galaxy in ids:
            timings.post(http, url, "similar", [str(galaxy), None, None, 5.0, "", "", "", 12], page)


def wait_until_up(url: str, process: subprocess.Popen | None, seconds: float = 300) -> None:
    """Poll ``url`` until it answers (the served process may take a while to import and start)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            sys.exit(f"galsearch serve exited with {process.returncode}")
        try:
            httpx.get(url, timeout=5).raise_for_status()
            return
        except httpx.HTTPError:
            time.sleep(0.5)
    sys.exit(f"{url} did not answer within {seconds:g} s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("work"))
    parser.add_argument("--raters", type=int, default=16)
    parser.add_argument("--ratings", type=int, default=8, help="ratings per rater")
    parser.add_argument("--searchers", type=int, default=0)
    parser.add_argument("--searches", type=int, default=8, help="searches per searcher")
    parser.add_argument("--serve", action="store_true", help="run `galsearch serve` in its own process")
    parser.add_argument("--shared-session", action="store_true", help="every rater in one session")
    parser.add_argument(
        "--bare",
        action="store_true",
        help="send no Gradio session hash (Gradio then builds a page state for every request)",
    )
    args = parser.parse_args()
    coll = build_demo(args.work / "demo", seed=0, progress=False)
    embed(coll, DEFAULT_ENCODER, progress=False)
    if not (coll.path / "index").exists():
        build_index(coll, progress=False)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    process, app = None, None
    if args.serve:
        command = [sys.executable, "-m", "galsearch.ui.cli", "serve", str(coll.path), "--port", str(port)]
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
        process = subprocess.Popen(command, cwd=Path(__file__).resolve().parents[1], env=env)
    else:
        from galsearch.ui.app import launch

        app = launch(coll.path, port=port, block=False)
    try:
        wait_until_up(url, process)
        run = f"load-{int(time.time())}"
        page = lambda name: None if args.bare else f"{run}-{name}"  # noqa: E731
        sessions = [run if args.shared_session else f"{run}-{i}" for i in range(args.raters)]
        ids = coll.catalog["id"].to_numpy()
        searcher(url, ids[:1], None, Timings())  # warm-up: loads the index
        timings = Timings()
        threads = [
            threading.Thread(target=rater, args=(url, s, args.ratings, i, page(f"rater-{i}"), timings))
            for i, s in enumerate(sessions)
        ]
        rng = np.random.default_rng(0)
        threads += [
            threading.Thread(
                target=searcher, args=(url, rng.choice(ids, args.searches), page(f"searcher-{i}"), timings)
            )
            for i in range(args.searchers)
        ]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - start
        history = ratings_store(coll.path).history()
        stored = int(history["session"].isin(set(sessions)).sum())
        report(args, len(coll), timings, stored, seconds)
    finally:
        if app is not None:
            app.close()
        if process is not None:
            process.terminate()
            process.wait(30)


def report(args: argparse.Namespace, galaxies: int, timings: Timings, stored: int, seconds: float) -> None:
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    where = "`galsearch serve` process" if args.serve else "in-process server"
    sessions = "one shared session" if args.shared_session else "a session each"
    sessions += ", bare HTTP (no Gradio session hash)" if args.bare else ", a Gradio session hash each"
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average after {load} · demo {galaxies} galaxies · {where} · "
        f"{args.raters} raters x {args.ratings} ratings ({sessions}), {args.searchers} searchers x "
        f"{args.searches} · {seconds:.1f} s\n"
    )
    print("| endpoint | n | p50 ms | p95 ms | max ms | errors |\n|---|---|---|---|---|---|")
    for endpoint, ms in timings.ms.items():
        p50, p95 = np.percentile(ms, [50, 95])
        print(
            f"| {endpoint} | {len(ms)} | {p50:.0f} | {p95:.0f} | {max(ms):.0f} | {timings.errors[endpoint]} |"
        )
    for endpoint in ("rate", "similar"):
        if endpoint in timings.ms:
            verdict = "met" if np.percentile(timings.ms[endpoint], 95) < TARGET_MS else "MISSED"
            print(f"\n{endpoint} p95 target < {TARGET_MS} ms: {verdict}")
    print(f"ratings acknowledged (HTTP 200): {timings.acknowledged} · in the store afterwards: {stored}")


if __name__ == "__main__":
    main()
