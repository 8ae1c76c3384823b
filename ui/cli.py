# PYTHON_ARGCOMPLETE_OK  (argcomplete looks for this marker to complete `galsearch` in the shell)
"""The ``galsearch`` command line: a thin layer over the Python API.

Exit codes: 0 success; 1 a galsearch error (message on stderr, no traceback); 2 bad usage;
130 interrupted (work done so far is kept: re-run the command to continue).

It starts fast: only the standard library is imported before a command runs, and each command imports
what it needs (``tests/test_cli.py`` checks that no model framework loads for ``--help``, ``info``,
``search --id`` or ``discover``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import galsearch
from galsearch.embedder.errors import GalsearchError

if TYPE_CHECKING:
    import pandas as pd

    from galsearch.anomaly import Discovery
    from galsearch.embedder import Stretch

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
SURVEYS = ("legacy", "sdss", "panstarrs")  # embedder.fetch.SURVEYS, named here so that --help stays fast
FORMATS = ("text", "csv", "json", "fits", "votable")  # index.query.FORMATS, named here for the same reason


def _bands(text: str) -> list[int | str]:
    """Comma-separated band names or channel numbers from 0 (``z,r,g`` or ``2,1,0``)."""
    parts = [part.strip() for part in text.split(",")]
    if not all(parts):
        raise argparse.ArgumentTypeError(
            f"bands are comma-separated band names or channel numbers, e.g. z,r,g or 2,1,0; got {text!r}"
        )
    return [int(part) if part.isdigit() else part for part in parts]


def _zero_points(text: str) -> dict[str, float]:
    """Comma-separated BAND=FACTOR pairs (``g=1,r=1.2``), each factor a positive number."""
    points: dict[str, float] = {}
    for pair in text.split(","):
        band, _, factor = (part.strip() for part in pair.partition("="))
        try:
            value = float(factor)
        except ValueError:
            value = float("nan")
        if not band or band in points or not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError(
                f"zero points are BAND=FACTOR pairs, each band once and each factor a positive number, "
                f"e.g. g=1,r=1.2; got {text!r}"
            )
        points[band] = value
    return points


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _stretch(args: argparse.Namespace) -> Stretch | None:
    """The stretch the ingest options (--stretch, --percentiles, --softening, --per-channel) describe, the
    defaults filling in; None without any, which means the collection's own (or the default)."""
    from dataclasses import replace

    from galsearch.embedder import Stretch

    given = {"kind": args.stretch, "a": args.softening, "joint": False if args.per_channel else None}
    if args.percentiles:
        given |= dict(zip(("lower_percentile", "upper_percentile"), args.percentiles, strict=True))
    given = {name: value for name, value in given.items() if value is not None}
    try:
        return replace(Stretch(), **given) if given else None
    except ValueError as exc:
        args.usage_error(str(exc))


def cmd_ingest(args: argparse.Namespace) -> None:
    from galsearch.embedder import ingest

    report = ingest(
        args.source,
        args.collection,
        catalog=args.catalog,
        size=args.size,
        stretch=_stretch(args),
        crop=args.crop,
        bands=args.bands,
        zero_points=args.zero_points,
        cutout_size=args.cutout_size,
        progress=not args.quiet,
        dask=args.dask,
        workers=args.workers,
        partition_rows=args.partition_rows,
    )
    print(report.summary())


def cmd_fetch(args: argparse.Namespace) -> None:
    from galsearch.embedder import fetch

    report = fetch(
        args.catalog,
        args.collection,
        args.survey,
        format=args.format,
        size=args.size,
        pixscale=args.pixscale,
        bands=args.bands,
        layer=args.layer,
        concurrency=args.concurrency,
        retries=args.retries,
        timeout=args.timeout,
        retry_failed=args.retry_failed,
        stretch=_stretch(args),
        zero_points=args.zero_points,
        progress=not args.quiet,
    )
    print(report.summary())


def cmd_embed(args: argparse.Namespace) -> None:
    from galsearch.embedder import DEFAULT_ENCODER, embed

    report = embed(
        args.collection,
        args.encoder or DEFAULT_ENCODER,
        tta=args.tta,
        replace=args.replace,
        batch_size=args.batch_size,
        device=args.device,
        progress=not args.quiet,
        dask=args.dask,
        workers=args.workers,
        partition_rows=args.partition_rows,
    )
    print(report.summary())


def cmd_calibrate_bands(args: argparse.Namespace) -> None:
    from galsearch.embedder import DEFAULT_ENCODER, calibrate_bands
    from galsearch.embedder.embed import CALIBRATION_SAMPLE

    encoder = args.encoder or DEFAULT_ENCODER
    sample = CALIBRATION_SAMPLE if args.sample is None else args.sample
    mixer = calibrate_bands(args.collection, args.out, encoder, sample, args.device)
    print(f"band mixer: {mixer}")
    print(f"saved {args.out}: embed with `galsearch embed {args.collection} --encoder {args.out}`")


def cmd_pretrain(args: argparse.Namespace) -> None:
    from galsearch.embedder.training.pretrain import pretrain

    report = pretrain(
        args.collections,
        args.out,
        init=args.init,
        architecture=args.arch,
        input_size=args.input_size,
        method=args.method,
        label_column=args.labels,
        vote_columns=args.votes,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        layer_decay=args.layer_decay,
        freeze_bn=args.freeze_bn,
        embed_dim=args.embed_dim,
        drop_path=args.drop_path,
        balance=args.balance,
        seed=args.seed,
        device=args.device,
        restart=args.restart,
        progress=not args.quiet,
    )
    print(report.summary())


def cmd_index(args: argparse.Namespace) -> None:
    from galsearch.embedder import GalsearchError, open_collection
    from galsearch.index import add_to_index, build_index, has_index, read_info

    coll = open_collection(args.collection)
    if args.rebuild or not has_index(coll):
        info = build_index(
            coll,
            args.factory,
            args.metric or "cosine",
            args.device,
            progress=not args.quiet,
            shards=args.shards or 1,
            rerank=args.rerank,
        )
        print(f"built the index of {coll.path}: {info.summary()}")
        return
    info = read_info(coll)
    asked = (args.factory, args.metric, args.shards, args.rerank)
    have = (info.factory, info.metric, len(info.shards) or 1, info.rerank)
    if any(a not in (None, h) for a, h in zip(asked, have, strict=True)):
        raise GalsearchError(
            f"{coll.path} has a {info.factory} ({info.metric}) index already; add --rebuild to replace it"
        )
    added = add_to_index(coll, progress=not args.quiet)
    print(f"added {added} galaxies to the index of {coll.path}: {read_info(coll).summary()}")


def cmd_search(args: argparse.Namespace) -> None:
    if not (args.id or args.image or args.ra is not None or args.dec is not None):
        args.usage_error("give what to search for: --id ID, --image PATH or --ra DEG --dec DEG")
    if (args.ra is None) != (args.dec is None):
        args.usage_error("--ra and --dec go together")
    if args.fetch and args.ra is None:
        args.usage_error("--fetch is for a position: give --ra and --dec")
    from galsearch.index import search, write_results

    found = search(
        args.collection,
        ids=args.id or (),
        negative_ids=args.not_ids or (),
        image=args.image,
        ra=args.ra,
        dec=args.dec,
        radius_arcsec=args.radius,
        where=args.where,
        k=args.k,
        device=args.device,
        fetch=args.fetch,
        dask=args.dask,
    )
    if matched := found.attrs.get("matched"):
        print(
            f"position matched {matched['id']} at {matched['separation_arcsec']:.2f} arcsec", file=sys.stderr
        )
    if fetched := found.attrs.get("fetched"):
        print(
            f"no galaxy within {args.radius:g} arcsec: searched with the {fetched['survey']} cutout there "
            f"({fetched['cutout']})",
            file=sys.stderr,
        )
    write_results(found, args.output, args.format)
    if args.output is not None:
        print(f"wrote {len(found)} results to {args.output}")
    if args.samp:
        _send(found, f"galsearch search of {Path(args.collection).name}")


def cmd_info(args: argparse.Namespace) -> None:
    from galsearch.embedder.collection import open_collection
    from galsearch.embedder.embed import describe

    coll = open_collection(args.collection)
    as_json = args.format == "json" or (args.format is None and args.output and args.output.suffix == ".json")
    if as_json:
        text = json.dumps(coll.info(), indent=2) + "\n"
    else:
        h, w, c = coll.image_shape
        cropped = f"central {coll.crop:.3g} of each cutout, " if coll.crop < 1 else ""
        encoder = coll.encoder
        text = (
            f"collection  {coll.path} ({coll.manifest['name']})\n"
            f"galaxies    {len(coll)} images of {h}x{w} px, {c} channel(s); {cropped}{coll.stretch}\n"
            f"bands       {','.join(coll.bands)}; shown as red, green, blue: {','.join(coll.display_rgb)}\n"
            f"embedded    {coll.counts['embedded']} with {describe(encoder) if encoder else '-'}\n"
            f"columns     {', '.join(coll.columns)}\n"
        )
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text)
        print(f"wrote the description of {coll.path} to {args.output}")


def _print_table(frame: pd.DataFrame) -> None:
    """Print result rows without the columns galsearch derived itself (row numbers, stored scores)."""
    derived = [c for c in frame.columns if c == "row" or c.startswith(("anomaly_", "cluster_prob"))]
    print(frame.drop(columns=derived).to_string(index=False, float_format=lambda v: f"{v:.3g}"))


def _as_text(args: argparse.Namespace) -> bool:
    """Whether a command's table is printed as today's text (no --format other than text, no --output)."""
    return args.format in (None, "text") and args.output is None


def _say(args: argparse.Namespace, message: str) -> None:
    """Print a line that is not the table: on stderr while a machine-readable table goes to stdout."""
    machine = args.output is None and args.format not in (None, "text")
    print(message, file=sys.stderr if machine else sys.stdout)


def _write_table(args: argparse.Namespace, table: pd.DataFrame, name: str) -> None:
    """Write ``table`` as --format / --output ask (format from the file's suffix when not given)."""
    from galsearch.index.query import write_results

    write_results(table, args.output, args.format)
    if args.output is not None:
        print(f"wrote {len(table)} {name} to {args.output}")


def cmd_anomalies(args: argparse.Namespace) -> None:
    from galsearch.anomaly.scores import score_collection
    from galsearch.embedder.collection import open_collection

    if args.method != "knn" and args.via == "index":
        args.usage_error("--via index computes k-NN scores: use it with --method knn")
    index_only = [
        option
        for option, given in (
            ("-k", args.k is not None),
            ("--statistic", args.statistic is not None),
            ("--batch-rows", args.batch_rows is not None),
            ("--dask", args.dask is not None),
            ("--workers", args.workers is not None),
        )
        if given
    ]
    if index_only and (args.method != "knn" or args.via == "features"):
        args.usage_error(f"{', '.join(index_only)}: for k-NN scores through the index (--method knn)")
    coll = open_collection(args.collection)
    options = {
        "via": args.via or ("index" if index_only else None),
        "dask": args.dask,
        "workers": args.workers,
        "batch_rows": args.batch_rows,
    }
    if args.k is not None:
        options["neighbours"] = args.k
    if args.statistic is not None:
        options["statistic"] = args.statistic
    scores = score_collection(coll, args.method, args.dim, progress=not args.quiet, **options)
    top = scores.nlargest(args.top).index.to_numpy()
    _say(args, f"stored {scores.name} for {scores.notna().sum()} galaxies; the {len(top)} most anomalous:")
    table = coll.catalog_rows(top)
    table.insert(1, "anomaly", table.pop(scores.name))
    if _as_text(args):
        _print_table(table)
    else:
        _write_table(args, table, "galaxies")
    if args.samp:
        _send(table, f"galsearch anomalies of {coll.path.name}")


def _send(table: pd.DataFrame, name: str) -> None:
    """Broadcast ``table`` to the tools on this machine's SAMP hub (TOPCAT, ...) and say so on stderr."""
    from galsearch.ui.samp import send_table

    print(send_table(table, name), file=sys.stderr)


def _rating(text: str) -> tuple[str, float]:
    galaxy, _, score = text.rpartition("=")
    try:
        return galaxy, float(score)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a rating is ID=SCORE with SCORE from 0 to 5, got {text!r}"
        ) from None


def cmd_discover(args: argparse.Namespace) -> None:
    if args.samp and not (args.next or args.ranking):
        args.usage_error("--samp sends the --next or --ranking table: give one of them")
    if not _as_text(args) and not (args.next or args.ranking):
        args.usage_error("--format and --output are for the --next or --ranking table: give one of them")
    if not _as_text(args) and args.next and args.ranking:
        args.usage_error("--format and --output write one table: give --next or --ranking, not both")
    from galsearch.anomaly.discover import Discovery

    hunt = Discovery(args.collection, args.session, user=args.user, anomaly_method=args.anomaly)
    scripted = args.rate or args.undo or args.next or args.ranking or args.export
    if args.rate:
        hunt.rate_many(args.rate)
        for galaxy, score in args.rate:
            _say(args, f"rated {galaxy} {score:g} in session {args.session!r}")
    if args.undo:
        undone = hunt.undo()
        _say(args, f"undid {undone.galaxy} = {undone.rating:g}" if undone else "nothing to undo")
    for count, table_of, what in (
        (args.next, hunt.suggest, "next to rate"),
        (args.ranking, hunt.ranking, "ranking"),
    ):
        if not count:
            continue
        table = table_of(count)
        if _as_text(args):
            _print_table(table)
        else:
            _write_table(args, table, "galaxies")
        if args.samp:
            _send(table, f"galsearch {args.session}: {what}")
    if args.export:
        rows = hunt.store.export(args.export, args.session)
        _say(args, f"wrote {rows} ratings of session {args.session!r} to {args.export}")
    if not scripted:
        _discover_interactively(hunt)


def _discover_interactively(hunt: Discovery) -> None:
    print(f"session {hunt.session!r}: {len(hunt.ratings)} galaxies rated so far")
    print("rate each galaxy 0 (boring) to 5 (most interesting); u = undo, s = skip, r = ranking, q = quit")
    skipped: list[str] = []
    while True:
        galaxy = hunt.suggest(1, skip=skipped).iloc[0]
        print(
            f"\n{galaxy['id']}  ({galaxy['source']})  interest {galaxy['interest']:.2f} "
            f"+- {galaxy['uncertainty']:.2f}  anomaly {galaxy['anomaly']:.3g}"
        )
        try:
            answer = input("rating> ").strip().lower()
        except EOFError:
            answer = "q"
        if answer in ("q", "quit"):
            print(f"{len(hunt.ratings)} galaxies rated in session {hunt.session!r}; all ratings are saved")
            return
        if answer == "s":
            skipped.append(galaxy["id"])
        elif answer == "u":
            undone = hunt.undo()
            print(f"undid {undone.galaxy} = {undone.rating:g}" if undone else "nothing to undo")
        elif answer == "r":
            _print_table(hunt.ranking(10))
        else:
            try:
                hunt.rate(galaxy["id"], float(answer))
            except ValueError:
                print("type a number from 0 to 5, u, s, r or q")
            except GalsearchError as exc:
                print(f"error: {exc}")


def _galaxy_ids(text: str) -> list[str]:
    ids = [galaxy.strip() for galaxy in text.split(",")]
    if not all(ids):
        raise argparse.ArgumentTypeError(f"galaxy ids are separated by commas, got {text!r}")
    return ids


def _labelling(text: str) -> tuple[list[str], str]:
    ids, _, label = text.rpartition("=")
    if not ids or not label.strip():
        raise argparse.ArgumentTypeError(f"a labelling is ID[,ID...]=CLASS, e.g. g1,g2=ring, got {text!r}")
    return _galaxy_ids(ids), label.strip()


def cmd_label(args: argparse.Namespace) -> None:
    adds, removals = args.add or [], args.remove or []
    changes = adds or removals or args.undo or args.export
    if changes and args.set is None:
        args.usage_error("--add, --remove, --undo and --export need --set NAME")
    if changes and not _as_text(args):
        args.usage_error(
            "--format and --output write the table shown without --add, --remove, --undo, --export"
        )
    from galsearch.anomaly.labels import check_ids, label_store
    from galsearch.embedder.collection import open_collection

    coll = open_collection(args.collection)
    store = label_store(coll.path)
    check_ids(
        coll, [galaxy for ids, _ in adds for galaxy in ids] + [galaxy for ids in removals for galaxy in ids]
    )
    for ids, label in adds:
        stored = store.label(args.set, ids, label, args.user)
        _say(args, f"labelled {stored} galaxies as {label!r} in set {args.set!r}")
    for ids in removals:
        removed = store.unlabel(args.set, ids, args.user)
        _say(args, f"removed {removed} labels from set {args.set!r} ({len(set(ids)) - removed} had none)")
    if args.undo:
        undone = store.undo(args.set, args.user)
        if undone is None:
            what = "you have none"
        elif undone["label"].isna().iloc[0]:
            what = f"the removal of {len(undone)} labels"
        else:
            what = f"{len(undone)} galaxies labelled {undone['label'].iloc[0]!r}"
        _say(args, f"undid your latest action in set {args.set!r}: {what}")
    if args.export:
        rows = store.export(args.export, args.set)
        _say(args, f"wrote {rows} labels of set {args.set!r} to {args.export}")
    if changes:
        return
    table = store.sets() if args.set is None else store.current(args.set)
    if not _as_text(args):
        _write_table(args, table, "rows")
    elif table.empty:
        print("no labels yet: add some with --set NAME --add ID[,ID...]=CLASS")
    else:
        _print_table(table)


def cmd_clusters(args: argparse.Namespace) -> None:
    from galsearch.anomaly.clusters import cluster_collection
    from galsearch.embedder.collection import open_collection

    report = cluster_collection(open_collection(args.collection), args.dim, args.max_clusters, show=args.show)
    if _as_text(args):
        print(report.summary())
    else:
        _write_table(args, report.table(), "clusters")


def _sizes(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes are comma-separated label counts, got {text!r}") from None


def cmd_finetune(args: argparse.Namespace) -> None:
    if args.from_ratings is not None and args.task not in ("classify", "binary"):
        args.usage_error("--from-ratings trains a binary classifier: leave out --task")
    if args.positive_at is not None and args.from_ratings is None:
        args.usage_error("--positive-at goes with --from-ratings")
    if args.folds is not None and (args.test_labels or args.curve):
        args.usage_error("--folds measures by cross-validation: leave out --test-labels and --curve")
    from galsearch.anomaly.classifier import labels_from_ratings, labels_from_set
    from galsearch.embedder import open_collection
    from galsearch.embedder.storage import safe_name
    from galsearch.embedder.training.finetune import FinetuneConfig, finetune, learning_curve, summarize_curve
    from galsearch.embedder.training.heads import head_folder
    from galsearch.embedder.training.labels import read_labels
    from galsearch.embedder.training.plots import plot_learning_curve

    coll = open_collection(args.collection)
    if args.from_ratings is not None:
        positive_at = 4.0 if args.positive_at is None else args.positive_at
        labels = labels_from_ratings(coll, args.from_ratings, positive_at)
        default_name = safe_name(args.from_ratings, "ratings")
    elif args.from_labels is not None:
        labels = labels_from_set(coll, args.from_labels, args.task, args.positive)
        default_name = safe_name(args.from_labels, "labels")
    else:
        labels = read_labels(args.labels, coll, args.task, args.columns, args.positive)
        default_name = safe_name(Path(args.labels).stem, "labels")
    test = args.test_labels and read_labels(args.test_labels, coll, labels.task, args.columns, args.positive)
    folds = args.folds
    if folds is None and args.labels is None and not (test or args.curve):
        folds = 5  # labels from ratings or a label set: cross-validated by default
    config = FinetuneConfig(
        head=args.head,
        unfreeze=args.unfreeze,
        lr=args.lr,
        weight_decay=args.weight_decay,
        epochs=args.epochs,
        target_recall=args.target_recall,
        seed=args.seed,
        device=args.device,
    )
    name = args.name or default_name
    if args.curve:
        curve = learning_curve(
            coll,
            labels,
            args.curve,
            config,
            draws=args.draws,
            test_labels=test or None,
            progress=not args.quiet,
        )
        folder = head_folder(coll, name)
        folder.mkdir(parents=True, exist_ok=True)
        curve.to_csv(folder / "learning_curve.csv", index=False)
        metric = "rmse" if labels.task == "regress" else "balanced_accuracy"
        summary = summarize_curve(curve, labels.task)
        plot_learning_curve(summary, metric, folder / "learning_curve.png")
        print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(f"wrote learning_curve.csv and learning_curve.png to {folder}")
        return
    result = finetune(
        coll,
        labels,
        config,
        name=name,
        test_labels=test or None,
        folds=folds,
        auto_budget_s=args.time_budget if args.auto else None,
        progress=not args.quiet,
    )
    print(result.summary())
    print(f"apply it to every galaxy with: galsearch predict {coll.path} --head {name}")


def cmd_suspects(args: argparse.Namespace) -> None:
    from galsearch.anomaly.classifier import labels_from_set, suspects
    from galsearch.embedder import open_collection
    from galsearch.embedder.training.finetune import FinetuneConfig
    from galsearch.embedder.training.labels import read_labels

    coll = open_collection(args.collection)
    if args.labels is not None:
        labels = read_labels(args.labels, coll, args.task, args.columns)
    else:
        labels = labels_from_set(coll, args.from_labels, args.task)
    config = FinetuneConfig(seed=args.seed, device=args.device)
    table = suspects(coll, labels, args.n, config, args.folds, progress=not args.quiet)
    for note in table.attrs["notes"]:
        _say(args, note)
    _say(
        args,
        f"the {len(table)} of {len(labels)} labels most in doubt (each predicted by a head that did not "
        f"train on it); confident learning flags {table.attrs['issues']} of all as issues",
    )
    if _as_text(args):
        _print_table(table[["id", "label", "predicted", "probability", "issue"]])
    else:
        _write_table(args, table, "suspects")


def cmd_predict(args: argparse.Namespace) -> None:
    from galsearch.embedder import open_collection
    from galsearch.embedder.training.finetune import predict
    from galsearch.embedder.training.heads import HEAD_FILE

    coll = open_collection(args.collection)
    head = Path(args.head) if Path(args.head, HEAD_FILE).is_file() else args.head  # a folder, or a name
    columns = predict(coll, head, device=args.device, progress=not args.quiet)
    _say(args, f"wrote columns {', '.join(columns)} for {len(coll)} galaxies to the catalog of {coll.path}")
    if args.format is not None or args.output is not None:  # the predictions as a table, as asked
        front = ["id", *(c for c in ("ra", "dec") if c in coll.catalog.columns)]
        _write_table(args, coll.catalog[front + list(columns)], "predictions")


def cmd_map(args: argparse.Namespace) -> None:
    from galsearch.embedder import open_collection
    from galsearch.index import render_map, save_map_png

    picture = render_map(
        open_collection(args.collection), args.color_by, thumbnails=args.thumbnails, size=tuple(args.size)
    )
    save_map_png(picture, args.png)
    print(f"wrote the UMAP map of {len(picture.coords)} galaxies to {args.png}")


def cmd_display(args: argparse.Namespace) -> None:
    from galsearch.embedder.collection import open_collection

    coll = open_collection(args.collection)
    if args.rgb is not None:
        coll.set_display(args.rgb)
    print(f"bands {','.join(coll.bands)}; shown as red, green, blue: {','.join(coll.display_rgb)}")


def _band_names(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",")]
    if len(names) != 3 or not all(names):
        raise argparse.ArgumentTypeError(f"give 3 band names (red, green, blue), e.g. z,r,g; got {text!r}")
    return names


def cmd_demo(args: argparse.Namespace) -> None:
    # On a new install UMAP compiles in another process while the demo is embedded: torch's OpenMP threads
    # then wait for each other by sleeping rather than spinning on the shared cores (the build took 49 s
    # instead of 56-59 s on 2 cores; 2026-12-08). Read when torch loads, so set before it is imported.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    auth = None if args.no_serve else _login(args)  # read before the build, so that a bad one fails at once
    compiling = _compile_umap_in_background(args.path)  # first, so that it runs beside all that follows
    from galsearch.anomaly.discover import DEFAULT_SESSION, Discovery
    from galsearch.embedder import DEFAULT_ENCODER, build_demo, default_demo_path, embed
    from galsearch.index import build_index, umap_coordinates

    path = args.path or default_demo_path()
    coll = build_demo(path, seed=args.seed, n_simulated=args.galaxies, size=args.size)
    # The demo is a cache rebuilt from its seed: another encoder simply replaces its embeddings and index.
    report = embed(coll, args.encoder or DEFAULT_ENCODER, replace=True, device=args.device)
    print(report.summary())
    if report.embedded:
        build_index(coll, progress=False)
    # Every tab opens ready: the map and the discovery loop's anomaly scores and GP features are computed
    # now and kept in the demo (free when unchanged).
    compiling.wait()
    umap_coordinates(coll, progress=True)
    Discovery(coll, DEFAULT_SESSION)
    if not args.no_serve:
        _serve(coll.path, args, auth)


def compile_umap_for_demo(path: str) -> None:
    """Compile UMAP into numba's on-disk cache unless the demo at ``path`` (empty: the default one) has
    its map drawn already (as after an earlier `galsearch demo`)."""
    from galsearch.embedder import default_demo_path, open_collection
    from galsearch.embedder.collection import MANIFEST
    from galsearch.index.projection import compile_umap, has_map

    demo = Path(path) if path else default_demo_path()
    if not ((demo / MANIFEST).exists() and has_map(open_collection(demo))):
        compile_umap()


def _compile_umap_in_background(path: Path | None) -> subprocess.Popen:
    """:func:`compile_umap_for_demo` in another process (about 25 s of CPU on a new install, in parallel
    with the simulation), so that the demo's map does not wait for the compiler."""
    code = "import sys; from galsearch.ui.cli import compile_umap_for_demo as run; run(sys.argv[1])"
    quiet = subprocess.DEVNULL
    return subprocess.Popen([sys.executable, "-c", code, str(path or "")], stdout=quiet, stderr=quiet)


def cmd_serve(args: argparse.Namespace) -> None:
    _serve(args.collection, args, _login(args))


def cmd_passwd(args: argparse.Namespace) -> None:
    from getpass import getpass

    from galsearch.ui.credentials import check_user, hash_password

    check_user(args.user)
    if sys.stdin.isatty():  # typed, not echoed; getpass prompts on the terminal, so stdout stays USER:HASH
        password = getpass(f"password for {args.user}: ")
        if getpass("again: ") != password:
            raise GalsearchError("the two passwords differ: nothing written")
    else:  # piped in (e.g. from a password manager): its first line
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    print(f"{args.user}:{hash_password(password)}")


def _serve(collection: Path, args: argparse.Namespace, auth: object) -> None:
    from galsearch.ui.app import launch

    # A service manager stops a server with SIGTERM: it closes as on Ctrl-C, and its temporary files go.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    launch(collection, host=args.host, port=args.port, auth=auth, root_path=args.root_path or "")


def _login(args: argparse.Namespace) -> object:
    """The login the server options ask for (ui.credentials.Logins, (user, password) or None): --auth-file,
    else --auth (with a warning: `ps` shows it), else $GALSEARCH_AUTH."""
    from galsearch.ui.credentials import Logins, login_from_env, parse_login

    if args.auth_file is not None:
        return Logins.from_file(args.auth_file)
    if args.auth is not None:
        print(
            "warning: --auth puts the password where `ps` shows it to every user of this machine; use "
            "--auth-file FILE (lines from `galsearch passwd USER`) or GALSEARCH_AUTH=USER:PASSWORD instead",
            file=sys.stderr,
        )
        return parse_login(args.auth, "--auth")
    return login_from_env()


def _root_path(text: str) -> str:
    if not text.startswith(("/", "http://", "https://")):
        raise argparse.ArgumentTypeError(f"a root path starts with / (or is a full URL), got {text!r}")
    return text.rstrip("/")


def _add_stretch_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--stretch",
        choices=["lupton", "asinh", "linear", "log", "sqrt"],
        help="stretch for non-8-bit pixels (default lupton: asinh of the mean of the bands, every band "
        "scaled alike, so band ratios and colours survive); fixed when the collection is created",
    )
    parser.add_argument(
        "--percentiles",
        type=float,
        nargs=2,
        metavar=("LO", "HI"),
        help="clip percentiles before the stretch (default 0.5 99.5; lupton: of the mean of the bands)",
    )
    parser.add_argument(
        "--softening", type=float, help="lupton/asinh/log softening parameter a (default 0.1)"
    )
    parser.add_argument(
        "--per-channel",
        action="store_true",
        default=None,
        help="stretch each band on its own, to its full range: erases colour (default: one stretch for all)",
    )
    parser.add_argument(
        "--zero-points",
        type=_zero_points,
        metavar="BAND=FACTOR,...",
        help="multiply each band's flux by FACTOR before the stretch, to put the bands on one flux scale "
        "(e.g. g=1,r=1.2,i=0.9; bands left out: 1); fixed when the collection is created",
    )


def _add_dask_options(parser: argparse.ArgumentParser, what: str) -> None:
    """--dask ADDRESS / --workers N and --partition-rows, for the commands that run on a Dask cluster."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--dask",
        metavar="ADDRESS",
        help="run on the Dask cluster whose scheduler is at ADDRESS (e.g. tcp://host:8786); every worker "
        "needs galsearch and the same files at the same paths (a shared filesystem)",
    )
    where.add_argument(
        "--workers",
        type=_positive,
        metavar="N",
        help="run on a Dask cluster of N worker processes on this machine",
    )
    parser.add_argument(
        "--partition-rows",
        type=_positive,
        default=4096,  # embedder.distributed.PARTITION_ROWS, named here so that --help stays fast
        metavar="N",
        help=f"{what} per Dask task, the work a killed worker or run repeats (default 4096)",
    )


def _add_table_options(
    parser: argparse.ArgumentParser, what: str, formats: tuple[str, ...] = FORMATS
) -> None:
    parser.add_argument("--output", type=Path, metavar="FILE", help=f"write {what} here (default: stdout)")
    files_only = " (fits and votable to a file only)" if "fits" in formats else ""
    parser.add_argument(
        "--format", choices=formats, help=f"default: from --output's suffix, else text{files_only}"
    )


def _add_server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)"
    )
    parser.add_argument("--port", type=int, default=None, help="port (default: the first free one from 7860)")
    login = parser.add_mutually_exclusive_group()
    login.add_argument(
        "--auth-file",
        type=Path,
        metavar="FILE",
        help="require a login of a user in FILE (USER:HASH lines from `galsearch passwd USER`, readable by "
        "you only); or set GALSEARCH_AUTH=USER:PASSWORD (see docs/serving.md)",
    )
    login.add_argument(
        "--auth",
        metavar="USER:PASSWORD",
        help="require this login (deprecated: `ps` shows it to all; use --auth-file or GALSEARCH_AUTH)",
    )
    parser.add_argument(
        "--root-path",
        type=_root_path,
        metavar="PATH",
        help="the path prefix under which a reverse proxy serves the app, e.g. /galsearch (the proxy strips "
        "it; see docs/serving.md)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every galsearch command."""
    parser = argparse.ArgumentParser(
        prog="galsearch",
        description="Similarity search, anomaly ranking and fine-tuning for galaxy images.",
        epilog="Run `galsearch COMMAND --help` for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"galsearch {galsearch.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Callable, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(func=func, usage_error=sub.error)
        return sub

    p = command(
        "ingest", cmd_ingest, "add galaxy images from a folder, .npz/HDF5 file or FITS image to a collection"
    )
    p.add_argument(
        "source",
        type=Path,
        help="folder of FITS/PNG/JPEG cutouts (or of one sub-folder per band: g/, r/ ... holding files "
        "named alike), table of file names (one column per band), .npz/.h5 file, or large FITS image "
        "(or folder of one per band) with --catalog",
    )
    p.add_argument("collection", type=Path, help="collection directory (created if absent)")
    p.add_argument(
        "--catalog", type=Path, help="source table (FITS or CSV with RA/Dec) to cut out of a FITS image"
    )
    p.add_argument(
        "--cutout-size", type=int, default=64, help="cutout side in pixels with --catalog (default 64)"
    )
    p.add_argument("--size", type=int, help="stored image side in pixels (default: the first image's)")
    p.add_argument(
        "--crop",
        type=float,
        metavar="F",
        help="keep the central fraction of each image, for cutouts much wider than their galaxies "
        "(e.g. 0.67; default 1: all of it)",
    )
    _add_stretch_options(p)
    p.add_argument(
        "--bands",
        type=_bands,
        help="bands to keep, in order: names (e.g. z,r,g, as the source names them) or channel numbers "
        "from 0 (e.g. 2,1,0); default all (1 to 16)",
    )
    _add_dask_options(p, "files of a folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = command(
        "fetch",
        cmd_fetch,
        "download the survey cutouts of a catalogue's galaxies into a collection (network)",
    )
    p.add_argument(
        "catalog", type=Path, help="FITS/CSV/VOTable table with RA/Dec columns; other columns are kept"
    )
    p.add_argument("collection", type=Path, help="collection directory (created if absent)")
    p.add_argument("--survey", choices=SURVEYS, default="legacy", help="cutout service (default legacy)")
    p.add_argument(
        "--format", choices=["fits", "jpeg"], help="default fits (flux); sdss serves colour JPEGs only"
    )
    p.add_argument("--size", type=int, metavar="PX", help="cutout side in pixels (default 128)")
    p.add_argument(
        "--pixscale",
        type=float,
        metavar="ARCSEC",
        help="arcsec per pixel (default: the survey's own, legacy 0.262, sdss 0.396, panstarrs 0.25)",
    )
    p.add_argument(
        "--bands",
        metavar="LETTERS",
        help="bands, any of the survey's (legacy griz, panstarrs grizy; default grz, gri); FITS keeps "
        "each band, stored red to blue",
    )
    p.add_argument("--layer", help="Legacy Surveys viewer layer (default ls-dr10)")
    p.add_argument(
        "--concurrency",
        type=int,
        default=4,
        metavar="N",
        help="requests at once (default 4: the services are shared, keep it polite)",
    )
    p.add_argument(
        "--retries", type=int, default=3, help="retries of a 5xx, timeout or truncated answer (default 3)"
    )
    p.add_argument("--timeout", type=float, default=60, metavar="S", help="per request (default 60 s)")
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="ask again for cutouts an earlier run found blank, outside the footprint or refused (4xx)",
    )
    _add_stretch_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = command("embed", cmd_embed, "embed every galaxy of a collection with an image encoder")
    p.add_argument("collection", type=Path)
    p.add_argument(
        "--encoder",
        help="timm name, checkpoint path, ARCH@PATH, hf-hub:OWNER/NAME, imagenet:NAME or random:ARCH",
    )
    p.add_argument("--tta", action="store_true", help="average over the 8 rotations/flips of each image")
    p.add_argument("--replace", action="store_true", help="discard embeddings made by another encoder")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    _add_dask_options(p, "rows")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = command(
        "calibrate-bands",
        cmd_calibrate_bands,
        "adapt a 3-band encoder to a collection's N bands through a band mixer measured on its images",
    )
    p.add_argument("collection", type=Path)
    p.add_argument("--out", type=Path, required=True, help="the adapted encoder, a .safetensors file")
    p.add_argument("--encoder", help="the 3-band encoder to adapt (default: default)")
    p.add_argument("--sample", type=int, help="measure on the first N galaxies (default: as embed does)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")

    p = command(
        "pretrain", cmd_pretrain, "train an encoder on collections (self-supervised and/or on labels)"
    )
    p.add_argument("collections", type=Path, nargs="+", metavar="COLLECTION")
    p.add_argument("--out", type=Path, required=True, help="output weights, a .safetensors file")
    p.add_argument(
        "--init",
        metavar="SPEC",
        help="start from this encoder's weights (any --encoder spec, e.g. imagenet:efficientnet_lite0)",
    )
    p.add_argument("--arch", help="any timm architecture (default convnext_atto, or the --init encoder's)")
    p.add_argument(
        "--input-size",
        type=int,
        help="input side in pixels (default: an --init checkpoint's own, trained by pretrain; else 64)",
    )
    p.add_argument(
        "--method",
        choices=["ssl", "supervised", "both"],
        default="both",
        help="SimCLR, cross-entropy on labels, or both summed (default)",
    )
    p.add_argument("--labels", default="label", help="catalog column with class labels (default: label)")
    p.add_argument(
        "--votes",
        nargs="+",
        metavar="COLUMN",
        help="catalog columns of Galaxy Zoo vote fractions (0-1) to learn as well, e.g. smooth_fraction",
    )
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, help="peak learning rate (default 2e-3, or 5e-4 with --init)")
    p.add_argument(
        "--layer-decay",
        type=float,
        metavar="FACTOR",
        default=1.0,
        help="learning-rate factor per encoder block, from the top down (e.g. 0.75; default 1: none)",
    )
    p.add_argument(
        "--freeze-bn",
        action=argparse.BooleanOptionalAction,
        help="keep BatchNorm running statistics fixed (default: with --init)",
    )
    p.add_argument(
        "--embed-dim",
        type=int,
        metavar="N",
        help="a trained linear layer maps the features to N values, the stored embedding (default: none)",
    )
    p.add_argument(
        "--drop-path",
        type=float,
        metavar="RATE",
        default=0.0,
        help="stochastic depth, against memorising (e.g. 0.1; default 0)",
    )
    p.add_argument(
        "--balance",
        action="store_true",
        help="draw every collection equally often, whatever its size (a small set of rare objects counts "
        "as much as a big one; default: each image once an epoch)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--restart", action="store_true", help="ignore a saved training state and start again")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = command("index", cmd_index, "build a collection's search index, or add newly embedded galaxies to it")
    p.add_argument("collection", type=Path)
    p.add_argument(
        "--factory",
        help="FAISS index factory string, e.g. Flat, HNSW32, IVF1024,PQ32, IVF4096,PQ80x4fs (default: by "
        "size and available memory: float vectors while they fit, else compressed codes re-ranked from disk)",
    )
    p.add_argument(
        "--rerank",
        type=int,
        metavar="K",
        help="re-score a shortlist of K x k candidates exactly from the stored embeddings (default: 20 for "
        "compressed factories such as PQ/SQ, none for float ones; 0: never)",
    )
    p.add_argument(
        "--shards",
        type=int,
        metavar="N",
        help="split the rows into N contiguous shards, each its own index, searched in parallel or on Dask "
        "workers with `search --dask` (default 1)",
    )
    p.add_argument("--metric", choices=["cosine", "l2"], help="similarity measure (default cosine)")
    p.add_argument("--rebuild", action="store_true", help="build anew even if an index exists")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when FAISS has GPU support)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = command(
        "search", cmd_search, "find the galaxies most like given ones, an image file or a sky position"
    )
    p.add_argument("collection", type=Path)
    p.add_argument("--id", action="append", metavar="ID", help="a galaxy to find more of (repeatable)")
    p.add_argument("--image", type=Path, metavar="PATH", help="a FITS/PNG/JPEG image to find galaxies like")
    p.add_argument("--ra", type=float, metavar="DEG", help="search around the galaxy at this RA (degrees)")
    p.add_argument("--dec", type=float, metavar="DEG", help="... and this Dec (degrees)")
    p.add_argument(
        "--radius", type=float, default=5.0, metavar="ARCSEC", help="match radius for --ra/--dec (default 5)"
    )
    p.add_argument(
        "--not", dest="not_ids", action="append", metavar="ID", help="a galaxy to find less of (repeatable)"
    )
    p.add_argument(
        "--where", metavar="EXPR", help="catalog condition, e.g. \"mag < 20 and class_name != 'hdf'\""
    )
    p.add_argument(
        "--fetch",
        choices=SURVEYS,
        metavar="SURVEY",
        help="with --ra/--dec: if no galaxy is within the radius, download the cutout there from this "
        "survey (legacy, sdss, panstarrs), embed it and search with it (network)",
    )
    p.add_argument("-k", type=int, default=10, help="number of results (default 10)")
    _add_table_options(p, "the results")
    p.add_argument("--device", help="cpu, cuda or cuda:N")
    p.add_argument(
        "--dask",
        metavar="ADDRESS",
        help="search a sharded index's shards on this Dask cluster's workers (scheduler address, e.g. "
        "tcp://10.0.0.1:8786; they must see the collection at the same path)",
    )
    p.add_argument(
        "--samp",
        action="store_true",
        help="also send the results to TOPCAT (or any SAMP tool) via this machine's SAMP hub",
    )

    p = command("anomalies", cmd_anomalies, "score how unusual each galaxy is and list the most anomalous")
    p.add_argument("collection", type=Path)
    p.add_argument("--method", choices=["knn", "iforest", "lof"], default="knn", help="scorer (default knn)")
    p.add_argument("--dim", type=int, default=16, help="PCA dimensions scored (default 16)")
    p.add_argument("--top", type=int, default=20, help="how many to list (default 20)")
    p.add_argument(
        "--via",
        choices=["features", "index"],
        help="k-NN scores from the PCA features in memory (exact; the default up to 100,000 galaxies) or "
        "from each galaxy's neighbours in the embedding space through the collection's index (the default "
        "beyond: batched, resumable, on Dask with --workers/--dask)",
    )
    p.add_argument("-k", type=_positive, help="with --via index: neighbours counted (default 10)")
    # -k, --statistic, --batch-rows, --dask and --workers imply --via index
    p.add_argument(
        "--statistic",
        choices=["kth", "mean"],
        help="with --via index: distance to the k-th nearest (default) or the mean over the k nearest",
    )
    p.add_argument(
        "--batch-rows",
        type=_positive,
        metavar="N",
        help="with --via index: galaxies per batch (and Dask task), the work a kill repeats (default 16384)",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--dask",
        metavar="ADDRESS",
        help="with --via index: run on the Dask cluster whose scheduler is at ADDRESS (tcp://host:8786); "
        "its workers need galsearch and the collection at the same path (a shared filesystem)",
    )
    where.add_argument(
        "--workers", type=_positive, metavar="N", help="with --via index: run on N local worker processes"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_table_options(p, "the list")
    p.add_argument(
        "--samp",
        action="store_true",
        help="also send the list to TOPCAT (or any SAMP tool) via this machine's SAMP hub",
    )

    p = command(
        "discover", cmd_discover, "rate galaxies while a Gaussian process learns what you find interesting"
    )
    p.add_argument("collection", type=Path)
    p.add_argument("--session", required=True, help="name of the hunt, e.g. mergers (created if new)")
    p.add_argument("--user", help="who is rating (default: the login name)")
    p.add_argument(
        "--rate", type=_rating, action="append", metavar="ID=SCORE", help="store a rating (repeatable)"
    )
    p.add_argument("--undo", action="store_true", help="remove your latest rating in the session")
    p.add_argument("--next", type=int, metavar="N", help="print the next N galaxies to rate and exit")
    p.add_argument("--ranking", type=int, metavar="N", help="print the N most interesting galaxies and exit")
    p.add_argument(
        "--export", type=Path, metavar="FILE", help="write the session's ratings (.csv/.fits/.xml)"
    )
    p.add_argument(
        "--anomaly", choices=["knn", "iforest", "lof"], default="knn", help="anomaly score used as the prior"
    )
    _add_table_options(p, "the --next or --ranking table")
    p.add_argument(
        "--samp",
        action="store_true",
        help="also send the --next/--ranking table to TOPCAT (or any SAMP tool) via this machine's SAMP hub",
    )

    p = command("label", cmd_label, "label galaxies as classes in named label sets; list sets and labels")
    p.add_argument("collection", type=Path)
    p.add_argument(
        "--set",
        metavar="NAME",
        help="the label set, e.g. morphology (created by its first --add); "
        "without --add/--remove/--undo/--export: show its labels (default: list the sets)",
    )
    p.add_argument("--user", help="who is labelling (default: the login name)")
    p.add_argument(
        "--add",
        type=_labelling,
        action="append",
        metavar="ID[,ID...]=CLASS",
        help="label these galaxies as CLASS, one action (repeatable; the class follows the last '=')",
    )
    p.add_argument(
        "--remove",
        type=_galaxy_ids,
        action="append",
        metavar="ID[,ID...]",
        help="remove these galaxies' labels, one action (repeatable; the history keeps them)",
    )
    p.add_argument("--undo", action="store_true", help="delete your latest action in the set (all its rows)")
    p.add_argument(
        "--export",
        type=Path,
        metavar="FILE",
        help="write the set's labels (id, label, user, time) as .csv/.fits/.xml for finetune --labels",
    )
    _add_table_options(p, "the table of label sets or of the set's labels")

    p = command("clusters", cmd_clusters, "group galaxies into morphology clusters without labels")
    p.add_argument("collection", type=Path)
    p.add_argument("--max-clusters", type=int, default=20, help="upper bound; unneeded clusters stay empty")
    p.add_argument("--dim", type=int, default=10, help="PCA dimensions clustered (default 10)")
    p.add_argument("--show", type=int, default=5, help="typical members listed per cluster (default 5)")
    _add_table_options(p, "the table of clusters")

    p = command("finetune", cmd_finetune, "train a classifier or regressor on labelled galaxies")
    p.add_argument("collection", type=Path)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--labels", type=Path, help="CSV/FITS/VOTable with an id column and labels")
    source.add_argument(
        "--from-ratings",
        metavar="SESSION",
        help="train on a discover session's ratings: latest rating >= --positive-at is 'interesting'",
    )
    source.add_argument("--from-labels", metavar="SET", help="train on a label set (see galsearch label)")
    p.add_argument(
        "--positive-at", type=float, metavar="R", help="--from-ratings: lowest positive rating (default 4)"
    )
    p.add_argument(
        "--folds",
        type=int,
        metavar="K",
        help="cross-validated metrics, the head trained on all labels (default: 5 for --from-ratings and "
        "--from-labels; a held-out quarter for --labels)",
    )
    p.add_argument("--task", choices=["classify", "binary", "regress"], default="classify")
    p.add_argument("--columns", type=lambda t: t.split(","), help="label column(s), comma-separated")
    p.add_argument("--positive", help="binary: the positive class (default: the later in sorted order)")
    p.add_argument("--test-labels", type=Path, help="labels to measure on (default: a held-out quarter)")
    p.add_argument("--head", choices=["linear", "mlp"], default="linear")
    p.add_argument(
        "--unfreeze", type=int, default=0, metavar="N", help="also train the encoder's last N blocks"
    )
    p.add_argument("--lr", type=float, help="learning rate (default 3e-3 frozen, 3e-4 unfrozen)")
    p.add_argument("--weight-decay", type=float, default=1e-2)
    p.add_argument("--epochs", type=int, help="at most this many (default 300 frozen, 30 unfrozen)")
    p.add_argument("--target-recall", type=float, default=0.99, help="binary: recall the threshold reaches")
    p.add_argument(
        "--name", help="head name (default: the file, session or set name); saved in COLLECTION/heads/"
    )
    p.add_argument("--auto", action="store_true", help="search head, unfreezing, lr and weight decay by CV")
    p.add_argument(
        "--time-budget", type=float, default=300, metavar="S", help="--auto time box (default 300 s)"
    )
    p.add_argument("--curve", type=_sizes, metavar="N,N,...", help="learning curve at these labels per class")
    p.add_argument("--draws", type=int, default=5, help="random draws per --curve point (default 5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="cpu, cuda or cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = command(
        "suspects",
        cmd_suspects,
        "list the labels a classifier doubts most (confident learning on out-of-fold predictions)",
    )
    p.add_argument("collection", type=Path)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--labels", type=Path, help="CSV/FITS/VOTable with an id column and labels")
    source.add_argument("--from-labels", metavar="SET", help="a label set (see galsearch label)")
    p.add_argument("-n", type=int, default=20, help="how many to list (default 20)")
    p.add_argument("--task", choices=["classify", "binary"], default="classify")
    p.add_argument("--columns", type=lambda t: t.split(","), help="--labels: the label column")
    p.add_argument("--folds", type=int, default=5, metavar="K", help="cross-validation folds (default 5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="cpu, cuda or cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_table_options(p, "the list (with quality, issue flag and catalog columns)")
    p.epilog = (
        "An encoder echoes the labels it was trained with (the default one: the GZ1, GZ2 and rings train "
        "splits), so to doubt such labels embed with one that never saw them, e.g. "
        "--encoder imagenet:efficientnet_lite0."
    )

    p = command("predict", cmd_predict, "apply a trained head to every galaxy (adds catalog columns)")
    p.add_argument("collection", type=Path)
    p.add_argument("--head", required=True, help="a head name in COLLECTION/heads/ or a head folder")
    p.add_argument("--device", help="cpu, cuda or cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_table_options(p, "the predictions (id, ra, dec and the new columns; default: none, only stored)")

    p = command("map", cmd_map, "draw the UMAP map of the embeddings, with galaxy thumbnails, as a PNG")
    p.add_argument("collection", type=Path)
    p.add_argument("--png", type=Path, required=True, metavar="FILE", help="the picture to write")
    p.add_argument("--color-by", metavar="COLUMN", help="catalog column to colour by, e.g. class_name")
    p.add_argument("--thumbnails", type=int, default=49, help="galaxy stamps drawn on the map (default 49)")
    p.add_argument("--size", type=int, nargs=2, default=(1200, 900), metavar=("W", "H"), help="pixels")

    p = command(
        "display", cmd_display, "show or choose the bands a collection's pictures show as red, green, blue"
    )
    p.add_argument("collection", type=Path)
    p.add_argument(
        "--rgb",
        type=_band_names,
        metavar="R,G,B",
        help="three of the collection's band names, e.g. z,r,g (used by the page, maps and galleries)",
    )

    p = command("info", cmd_info, "describe a collection (and check that it is consistent)")
    p.add_argument("collection", type=Path)
    _add_table_options(p, "the description", formats=("text", "json"))

    p = command(
        "demo", cmd_demo, "build the demo collection (HDF + simulated galaxies), embed it and serve it"
    )
    p.add_argument("--path", type=Path, help="where to build it (default: $GALSEARCH_HOME/demo)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--galaxies", type=int, default=3000, help="number of simulated galaxies (default 3000)")
    p.add_argument("--size", type=int, default=64, help="stamp size in pixels (default 64)")
    p.add_argument("--encoder", help="encoder spec (default: galsearch's default encoder)")
    p.add_argument("--device", help="cpu, cuda or cuda:N")
    p.add_argument("--no-serve", action="store_true", help="build and embed only")
    _add_server_options(p)

    p = command("serve", cmd_serve, "serve a collection's web app (search, discover, classify, map)")
    p.add_argument("collection", type=Path)
    _add_server_options(p)

    p = command(
        "passwd",
        cmd_passwd,
        "print USER:HASH, a line for serve's --auth-file, asking for the password (or reading it from stdin)",
    )
    p.add_argument("user", help="the login name (1-100 characters, no blanks or ':')")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one galsearch command and return its exit code."""
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # the shell asks for completions (see README): answer and exit
        import argcomplete

        argcomplete.autocomplete(parser)
    args = parser.parse_args(argv)
    try:
        args.func(args)
        sys.stdout.flush()  # a reader that stopped early shows here, not at exit
    except BrokenPipeError:  # e.g. `galsearch search ... | head -1`: quietly, as other Unix tools stop
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that the exit's flush is quiet
        return EXIT_ERROR
    except GalsearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(
            "interrupted: work done so far is saved; run the same command again to continue", file=sys.stderr
        )
        return EXIT_INTERRUPTED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
