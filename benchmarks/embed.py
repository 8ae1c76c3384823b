"""Ingest and embedding throughput on the demo collection, against the encoder's bare forward pass.

    python benchmarks/embed.py [--collection DIR] [--encoder SPEC] [--batch-size N] [--devices cpu,cuda]

Prints one table: ingest images/s (8-bit and float inputs), end-to-end ``embed`` images/s, the bare
batched forward pass of the same encoder at the same batch size on the same device, and their ratio
(target: embed >= 80% of bare forward).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from galsearch.embedder import DEFAULT_ENCODER, Stretch, embed, ingest, load_encoder, open_collection
from galsearch.embedder.demo import build_demo, default_demo_path


def ingest_rate(images: np.ndarray, workdir: Path, name: str) -> float:
    """Images per second for ingesting ``images`` from an .npz file into a new collection."""
    source = workdir / f"{name}.npz"
    np.savez(source, images=images, ids=np.array([f"{name}-{i}" for i in range(len(images))]))
    start = time.perf_counter()
    ingest(source, workdir / name, stretch=Stretch("asinh"), progress=False)
    return len(images) / (time.perf_counter() - start)


def embed_rate(collection: Path, spec: str, batch_size: int, device: str, workdir: Path) -> float:
    """Images per second for ``embed`` end to end (read, preprocess, forward, write) on a fresh copy."""
    coll = open_collection(collection)
    copy = workdir / f"embed-{device}"
    ingest(_as_npz(coll, workdir), copy, progress=False)
    encoder = load_encoder(spec, device)
    encoder.embed(coll.images[:batch_size])  # warm-up (cuDNN autotune, allocator)
    start = time.perf_counter()
    embed(copy, encoder, batch_size=batch_size, progress=False)
    _synchronize(device)
    return len(coll) / (time.perf_counter() - start)


def forward_rate(collection: Path, spec: str, batch_size: int, device: str, batches: int) -> float:
    """Images per second of the encoder's bare forward pass on a ready input batch already on ``device``."""
    coll = open_collection(collection)
    encoder = load_encoder(spec, device)
    x = encoder.preprocess(torch.from_numpy(np.array(coll.images[:batch_size])).to(device))
    if x.device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    with (
        torch.inference_mode(),
        torch.autocast(x.device.type, torch.bfloat16, enabled=x.device.type == "cuda"),
    ):
        encoder.model(x)
        _synchronize(device)
        start = time.perf_counter()
        for _ in range(batches):
            encoder.model(x).float().cpu()
        _synchronize(device)
    return batches * batch_size / (time.perf_counter() - start)


def _as_npz(coll, workdir: Path) -> Path:
    path = workdir / "stored.npz"
    if not path.exists():
        np.savez(path, images=np.array(coll.images), ids=coll.catalog["id"].to_numpy(str))
    return path


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--collection", type=Path, help="default: the demo collection (built if needed)")
    parser.add_argument("--encoder", default=DEFAULT_ENCODER)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    collection = args.collection or build_demo(default_demo_path(), progress=False).path
    coll = open_collection(collection)
    n, (side, _, channels) = len(coll), coll.image_shape
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        stored = np.array(coll.images)
        rows.append(("ingest, 8-bit images", "cpu", ingest_rate(stored, workdir, "u8"), None))
        floats = stored.astype(np.float32) ** 2  # float pixels take the asinh-stretch path
        rows.append(("ingest, float images (asinh)", "cpu", ingest_rate(floats, workdir, "f32"), None))
        for device in args.devices.split(","):
            end_to_end = embed_rate(collection, args.encoder, args.batch_size, device, workdir)
            bare = forward_rate(
                collection, args.encoder, args.batch_size, device, max(1, n // args.batch_size)
            )
            rows.append((f"embed (batch {args.batch_size})", device, end_to_end, end_to_end / bare))
            rows.append((f"bare forward (batch {args.batch_size})", device, bare, None))
    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    print(f"collection {collection}: {n} images {side}x{side}x{channels}; encoder {args.encoder}")
    print(f"machine: {torch.get_num_threads()} CPU threads ({cpu}), {gpu}; torch {torch.__version__}\n")
    print(f"| {'step':<32} | {'device':<6} | {'images/s':>9} | {'embed / bare':>12} |")
    print(f"|{'-' * 34}|{'-' * 8}|{'-' * 11}|{'-' * 14}|")
    for step, device, rate, ratio in rows:
        shown = f"{ratio:.0%}" if ratio is not None else ""
        print(f"| {step:<32} | {device:<6} | {rate:>9.0f} | {shown:>12} |")


if __name__ == "__main__":
    main()
