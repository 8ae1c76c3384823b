"""What N bands add over an RGB subset, on simulated g, r, i, z, y galaxies (issue 28).

    python benchmarks/bands.py [--per-class 100] [--size 64] [--sweep 0.25,0.5] [--seed 0] [--device cpu]

The galaxies come from :mod:`galsearch.embedder.simulate_bands` (three kinds of class: shapes; colours of the
same shapes; the z/y pair, whose classes differ only in their z and y fluxes). They are written as an .npz of
float fluxes and ingested by ``embedder.ingest`` (Lupton stretch, the default) three times: all five bands,
the RGB subset i, r, g, and all five bands with per-band normalisation (the colour-erasing stretch, shown
for contrast). Prints, with the machine and its load:

1. kNN precision@10 (leave-one-out, cosine, among the galaxies of one kind) of the ``default`` encoder's
   embeddings: on 5 bands as ``embed`` adapts it to named filters (each band feeds the red, green or blue
   input nearest it in wavelength, here red from i, z and y, green r, blue g: a 1x1 band mixer folded into
   the first convolution, whose shares ``embed`` measures on the collection's own stored images with
   ``band_mixer.calibrated_mixer``: z and y brought to i's level, then weighted by inverse noise variance);
   with that mixer measured on another simulation (seed ``--calibration-seed``, default seed + 1), so
   that nothing is taken from the galaxies scored; with equal shares, red = (i + z + y) / 3 (``embed``'s
   adaptation before 2026-12-07); with timm's input-conv adaptation (``adapt_input_conv``: kernels
   repeated cyclically, what ``embed`` does for unnamed bands); on the i, r, g subset; and on 5 bands
   stretched band by band.
2. Colour through ingest -> stretch -> embedding: p@10 of the colour and z/y classes on the true band
   fluxes, on colours measured in the stored 8-bit pixels, and on the embeddings, for both stretches.
3. (--sweep) z/y p@10 for weaker z/y excesses, as a sensitivity curve.
4. (--red-shares) The trade-off of a frozen 3-band network: p@10 when its red input is
   (1 - w) i + w (z + y) / 2 (green r, blue g: a 1x1 band mixer in front of it), for several shares w
   of z and y (w = 2/3: equal shares).
5. Embedding throughput (images/s and band-pixels/s of stored images) of 5 bands against 3.

Targets: z/y p@10 >= 0.95 with the default encoder on all bands; shape classes no worse with 5 bands than
with 3; throughput per band-pixel of 5 bands within 20% of 3 bands; checked for embed's adaptation, the
mixer calibrated on another simulation and equal shares. None of these galaxies were seen in training (the
default encoder was trained on Galaxy Zoo images), and no network weight is learnt here: every adaptation
gives the same parameters (a 5-band first convolution), which pretraining or fine-tuning with the stem
unfrozen would then learn from any starting point.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from galsearch.embedder import embed, ingest, load_encoder, open_collection
from galsearch.embedder.band_mixer import calibrated_mixer
from galsearch.embedder.encoders import Encoder, default_device
from galsearch.embedder.simulate_bands import BANDS, CLASSES, KINDS, simulate_bands
from galsearch.embedder.stretch import Stretch

K = 10
RGB_SUBSET = ["i", "r", "g"]  # the bands a gri survey's RGB composite shows as red, green, blue
APERTURE = 8  # px: radius of the central aperture whose band sums measure a galaxy's stored colour
TIMING_IMAGES, TIMING_BATCH = 512, 128
TARGET_ZY, TARGET_SPEED = 0.95, 0.8


def knn_precision(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per row, the fraction of its K most cosine-similar other rows that share its label."""
    x = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    similarity = x @ x.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = np.argpartition(-similarity, K, axis=1)[:, :K]
    return (labels[nearest] == labels[:, None]).mean(axis=1)


def per_kind(features: np.ndarray, catalog: pd.DataFrame, kinds: tuple[str, ...] = KINDS) -> dict[str, float]:
    """kNN precision@K within each kind of class (mean over its galaxies)."""
    return {kind: float(per_galaxy(features, catalog, kind).mean()) for kind in kinds}


def per_galaxy(features: np.ndarray, catalog: pd.DataFrame, kind: str) -> np.ndarray:
    """kNN precision@K of each galaxy of one kind, among the galaxies of that kind."""
    rows = np.flatnonzero(catalog["kind"].to_numpy() == kind)
    return knn_precision(features[rows], catalog["label"].to_numpy()[rows])


@torch.inference_mode()
def red_share_embeddings(encoder: Encoder, images: np.ndarray, share: float) -> np.ndarray:
    """Embeddings of uint8 g, r, i, z, y images through a 1x1 mixer before the 3-band ``encoder``: red =
    (1 - share) i + share (z + y) / 2, green = r, blue = g."""
    mix = torch.tensor(
        [[0, 0, 1 - share, share / 2, share / 2], [0, 1, 0, 0, 0], [1, 0, 0, 0, 0]], device=encoder.device
    )
    out = []
    for first in range(0, len(images), TIMING_BATCH):
        batch = torch.from_numpy(np.array(images[first : first + TIMING_BATCH])).to(encoder.device)
        x = torch.einsum("cn,bnhw->bchw", mix, batch.permute(0, 3, 1, 2).float() / 255)
        out.append(encoder.model(encoder.prepare(x).contiguous(memory_format=torch.channels_last)).cpu())
    return torch.cat(out).numpy()


def stored_colours(images: np.ndarray) -> np.ndarray:
    """Log ratios of each band's central-aperture sum to the bands' mean, measured in stored 8-bit pixels."""
    side = images.shape[1]
    yy, xx = np.mgrid[:side, :side] - (side - 1) / 2
    inside = (xx**2 + yy**2) <= APERTURE**2
    sums = images[:, inside, :].astype(np.float64).sum(axis=1) + 1.0
    return np.log(sums / sums.mean(axis=1, keepdims=True))


def true_colours(catalog: pd.DataFrame, bands: list[str]) -> np.ndarray:
    """Log ratios of each band's true flux to the bands' mean."""
    fluxes = catalog[[f"flux_{b}" for b in bands]].to_numpy(np.float64)
    return np.log(fluxes / fluxes.mean(axis=1, keepdims=True))


def write_npz(path: Path, images: np.ndarray, catalog: pd.DataFrame, bands: list[str]) -> Path:
    """The simulated galaxies as an .npz of float fluxes (N, H, W, bands) with band names and labels."""
    columns = {c: catalog[c].to_numpy() for c in catalog if c.startswith("flux_") or c == "twin"}
    np.savez(
        path,
        images=images,
        band_names=np.array(bands),
        ids=catalog["id"].to_numpy(str),
        labels=catalog["label"].to_numpy(),
        class_names=np.array([c.name for c in CLASSES]),
        kind=catalog["kind"].to_numpy(str),
        **columns,
    )
    return path


def ingest_three(npz: Path, work: Path) -> dict[str, Path]:
    """The .npz ingested as all bands (Lupton), the i, r, g subset (Lupton), and all bands per-band."""
    out = {key: work / key for key in ("all", "rgb", "perband")}
    ingest(npz, out["all"], progress=False)
    ingest(npz, out["rgb"], bands=RGB_SUBSET, progress=False)
    ingest(npz, out["perband"], stretch=Stretch(joint=False), progress=False)
    return out


def embeddings(path: Path, device: str) -> np.ndarray:
    """The default encoder's embeddings of a collection (fitted to its bands, as ``embed`` does)."""
    embed(path, "default", device=device, progress=False)
    return np.array(open_collection(path).embeddings[:])


def unnamed_embeddings(images: np.ndarray, device: str) -> np.ndarray:
    """The default encoder's embeddings of images whose bands have no names: timm's adaptation."""
    return embed_images(load_encoder("default", device, channels=images.shape[-1]), images)


def equal_shares_encoder(device: str) -> Encoder:
    """The default encoder adapted to g, r, i, z, y by wavelength with equal shares (red (i + z + y) / 3)."""
    return load_encoder("default", device, channels=len(BANDS), bands=list(BANDS))


def calibrated_encoder(mixer: np.ndarray, device: str) -> Encoder:
    """The default encoder adapted to g, r, i, z, y through ``mixer``."""
    return load_encoder("default", device, channels=len(BANDS), bands=list(BANDS), mixer=mixer)


def embed_images(encoder: Encoder, images: np.ndarray) -> np.ndarray:
    """Embeddings of uint8 images, batch by batch."""
    return np.concatenate(
        [encoder.embed(images[i : i + TIMING_BATCH]) for i in range(0, len(images), TIMING_BATCH)]
    )


def measured_mixer(args: argparse.Namespace, work: Path) -> np.ndarray:
    """The calibrated mixer measured on the stored images of another simulation of as many galaxies."""
    images, catalog = simulate_bands(len(CLASSES) * args.per_class, args.calibration_seed, args.size)
    folder = work / "calibration"
    folder.mkdir()
    ingest(
        write_npz(folder / "calibration.npz", images, catalog, list(BANDS)), folder / "all", progress=False
    )
    return calibrated_mixer(np.array(open_collection(folder / "all").images[:]), list(BANDS))


def throughput(encoder: Encoder, images: np.ndarray) -> float:
    """Images per second of the encoder on uint8 images (best of 3 runs of TIMING_IMAGES images)."""
    images = np.ascontiguousarray(np.resize(images, (TIMING_IMAGES, *images.shape[1:])))
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        for first in range(0, TIMING_IMAGES, TIMING_BATCH):
            encoder.embed(images[first : first + TIMING_BATCH])
        best = max(best, TIMING_IMAGES / (time.perf_counter() - start))
    return best


def table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join(
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in lines
    )


def machine(device: str) -> str:
    """CPU model, threads, torch version, date and load average on one line."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")]
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    cpu = models[0] if models else platform.machine()
    return (
        f"{datetime.now():%Y-%m-%d %H:%M}; device {device}; CPU {cpu} ({torch.get_num_threads()} threads, "
        f"{os.cpu_count()} cores); torch {torch.__version__}; load average (1, 5, 15 min) {load}"
    )


def log(message: str, started: float) -> None:
    print(f"[{time.perf_counter() - started:5.0f} s] {message}", file=sys.stderr)


VARIANTS = {  # embeddings compared, by the collection (or adaptation) that made them
    "all": "5 bands g,r,i,z,y: embed's (mixer calibrated on these images)",
    "calibrated": "5 bands g,r,i,z,y: mixer calibrated on another simulation",
    "equal": "5 bands g,r,i,z,y: by wavelength, equal shares (embed's before)",
    "timm": "5 bands g,r,i,z,y: timm's adapt_input_conv (cyclic)",
    "rgb": "3 bands i,r,g (RGB subset)",
    "perband": "5 bands, per-band normalised stretch (colour erased)",
}
SWEPT = ("all", "equal", "timm", "rgb")


def sweep_row(excess: float, args: argparse.Namespace, work: Path) -> list[str]:
    """z/y p@K of four ways to embed, on a z/y pair simulated with a weaker ``excess``."""
    pair = (CLASSES[-2], replace(CLASSES[-1], zy_excess=excess))
    images, catalog = simulate_bands(2 * args.per_class, args.seed, args.size, classes=pair)
    folder = work / f"zy{excess}"
    folder.mkdir()
    paths = ingest_three(write_npz(folder / "zy.npz", images, catalog, list(BANDS)), folder)
    stored = open_collection(paths["all"]).images[:]
    found = {
        "all": embeddings(paths["all"], args.device),
        "equal": embed_images(equal_shares_encoder(args.device), stored),
        "timm": unnamed_embeddings(stored, args.device),
        "rgb": embeddings(paths["rgb"], args.device),
    }
    precision = [per_kind(found[key], catalog, ("zy",))["zy"] for key in SWEPT]
    return [f"{excess:g} ({2.5 * np.log10(1 + excess):.2f} mag)", *(f"{p:.3f}" for p in precision)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--per-class", type=int, default=100, help="galaxies per class (default 100)")
    parser.add_argument("--size", type=int, default=64, help="stamp side in pixels (default 64)")
    parser.add_argument("--sweep", default="0.25,0.5", help="weaker z/y excesses to measure ('' for none)")
    parser.add_argument(
        "--red-shares", default="0,0.2,0.33", help="shares of z, y in the red input ('' for none)"
    )
    parser.add_argument("--seed", type=int, default=0, help="simulation of the galaxies scored (default 0)")
    parser.add_argument(
        "--calibration-seed",
        type=int,
        help="simulation the calibrated mixer is measured on (default seed + 1)",
    )
    parser.add_argument("--device", default=default_device())
    args = parser.parse_args()
    if args.calibration_seed is None:
        args.calibration_seed = args.seed + 1
    if args.calibration_seed == args.seed:
        parser.error("--calibration-seed must differ from --seed: the mixer is measured on other galaxies")
    started = time.perf_counter()
    print(machine(args.device))
    bands = list(BANDS)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        images, catalog = simulate_bands(len(CLASSES) * args.per_class, args.seed, args.size)
        log(f"simulated {len(images)} galaxies of {args.size} px in {', '.join(bands)}", started)
        paths = ingest_three(write_npz(work / "main.npz", images, catalog, bands), work)
        stored = {key: open_collection(path).images[:] for key, path in paths.items()}
        for path in paths.values():  # ingest keeps the galaxies' order: the catalogs line up
            assert list(open_collection(path).catalog["id"]) == list(catalog["id"])
        log("ingested all bands, the i, r, g subset, and all bands per-band", started)
        found = {key: embeddings(path, args.device) for key, path in paths.items()}
        found["timm"] = unnamed_embeddings(stored["all"], args.device)
        mixer = measured_mixer(args, work)
        log(
            f"measured the calibrated mixer on seed {args.calibration_seed}: {np.round(mixer, 3).tolist()}",
            started,
        )
        calibrated = calibrated_encoder(mixer, args.device)
        found["calibrated"] = embed_images(calibrated, stored["all"])
        found["equal"] = embed_images(equal_shares_encoder(args.device), stored["all"])
        log("embedded", started)
        quality = {key: per_kind(found[key], catalog) for key in VARIANTS}
        swept = [sweep_row(float(v), args, work) for v in args.sweep.split(",") if v.strip()]
        log("swept the z/y excess", started)
        three = load_encoder("default", args.device)
        shares = [float(v) for v in args.red_shares.split(",") if v.strip()]
        traded = {w: per_kind(red_share_embeddings(three, stored["all"], w), catalog) for w in shares}
        log("traded", started)
        speeds = {
            "3 bands i,r,g": (throughput(three, stored["rgb"]), 3),
            "5 bands g,r,i,z,y, equal shares": (
                throughput(equal_shares_encoder(args.device), stored["all"]),
                5,
            ),
            "5 bands g,r,i,z,y, calibrated mixer": (throughput(calibrated, stored["all"]), 5),
        }
        log("timed", started)
    print(
        f"\n{len(catalog)} galaxies ({args.per_class} per class, seed {args.seed}), {args.size} px stamps, "
        "default encoder (tf_efficientnet_lite0, 96 px input), "
        f"kNN precision@{K} within each kind of class:\n"
    )
    names = ", ".join(f"{w:.3f} {b}" for w, b in zip(mixer[0], bands, strict=True) if w)
    print(f"Calibrated mixer (seed {args.calibration_seed}): red = {names}; green = r; blue = g\n")
    classes = catalog.groupby("kind")["class_name"].unique()
    header = ["embeddings", *(f"{kind} ({', '.join(classes[kind])})" for kind in KINDS)]
    print(table(header, [[VARIANTS[key], *(f"{quality[key][k]:.3f}" for k in KINDS)] for key in VARIANTS]))

    colour = ("colour", "zy")
    survival = {
        "true band fluxes (no noise)": per_kind(true_colours(catalog, bands), catalog, colour),
        "stored pixels, Lupton stretch (aperture colours)": per_kind(
            stored_colours(stored["all"]), catalog, colour
        ),
        "embeddings, Lupton stretch (embed's)": quality["all"],
        "embeddings, Lupton stretch, equal shares": quality["equal"],
        "stored pixels, per-band stretch (aperture colours)": per_kind(
            stored_colours(stored["perband"]), catalog, colour
        ),
        "embeddings, per-band stretch": quality["perband"],
    }
    print(f"\nColour through ingest -> stretch -> embedding (5 bands; p@{K}; 0.5 = colour lost):\n")
    print(
        table(
            ["stage", *colour],
            [[stage, *(f"{row[k]:.3f}" for k in colour)] for stage, row in survival.items()],
        )
    )

    if swept:
        excess = CLASSES[-1].zy_excess
        print(f"\nz/y pair p@{K} against the z/y excess (z and y fluxes times 1 + excess):\n")
        main_row = [f"{excess:g} ({2.5 * np.log10(1 + excess):.2f} mag, main run)"]
        main_row += [f"{quality[key]['zy']:.3f}" for key in SWEPT]
        header = ["z/y excess", "5 bands, embed's", "5 bands, equal shares", "5 bands, timm", "3 bands i,r,g"]
        print(table(header, [*swept, main_row]))

    if traded:
        print(f"\nFrozen trade-off: red input (1 - w) i + w (z + y) / 2, green r, blue g; p@{K}:\n")
        rows = [[f"{w:g}", *(f"{row[k]:.3f}" for k in KINDS)] for w, row in traded.items()]
        rows.append(["2/3 (equal shares)", *(f"{quality['equal'][k]:.3f}" for k in KINDS)])
        print(table(["w", *KINDS], rows))

    print(
        f"\nEmbedding throughput ({args.device}, batches of {TIMING_BATCH}, best of 3 x {TIMING_IMAGES} "
        f"images; band-pixels of the stored {args.size} px images):\n"
    )
    base = speeds["3 bands i,r,g"][0] * 3
    rows = [
        [name, f"{rate:.0f}", f"{rate * n * args.size**2 / 1e6:.1f}", f"{rate * n / base:.2f}"]
        for name, (rate, n) in speeds.items()
    ]
    print(table(["path", "images/s", "Mband-px/s", "band-px/s vs 3 bands"], rows))

    calibrated_speed = "5 bands g,r,i,z,y, calibrated mixer"  # embed's too: a mixer costs nothing
    for key, path in (
        ("all", calibrated_speed),
        ("calibrated", calibrated_speed),
        ("equal", "5 bands g,r,i,z,y, equal shares"),
    ):
        print(f"\nTargets, {VARIANTS[key]}:")
        for description, ok, value in targets(found, quality, catalog, key, speeds[path][0] * 5 / base):
            print(f"- {description}: {value} {'✓' if ok else '✗'}")
    print(f"\nFinished: {machine(args.device)}")


def targets(
    found: dict[str, np.ndarray], quality: dict[str, dict], catalog: pd.DataFrame, key: str, speed: float
) -> list[tuple[str, bool, str]]:
    """The issue's three targets for the 5-band embeddings ``key``: description, met, value."""
    change = per_galaxy(found[key], catalog, "shape") - per_galaxy(found["rgb"], catalog, "shape")
    error = change.std(ddof=1) / np.sqrt(len(change))  # of the paired mean difference
    zy, shape = quality[key]["zy"], (quality[key]["shape"], quality["rgb"]["shape"])
    return [
        (f"z/y pair p@{K} >= {TARGET_ZY}, default encoder on all bands", zy >= TARGET_ZY, f"{zy:.3f}"),
        (
            "shape classes no worse with 5 bands than with 3 (within 2 standard errors)",
            change.mean() >= -2 * error,
            f"{shape[0]:.3f} vs {shape[1]:.3f}, difference {change.mean():+.4f} ± {error:.4f}",
        ),
        (
            f"throughput per band-pixel, 5 bands against 3, >= {TARGET_SPEED}",
            speed >= TARGET_SPEED,
            f"{speed:.2f}",
        ),
    ]


if __name__ == "__main__":
    main()
