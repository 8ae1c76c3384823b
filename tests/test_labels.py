"""Label sets: batches as actions, latest label wins, undo of a whole action, exports that fine-tuning
reads, durability across a killed writer, and the `galsearch label` command."""

from __future__ import annotations

import io
import signal
import sqlite3
import subprocess
import sys

import pandas as pd
import pytest

from galsearch.anomaly import LabelError, LabelStore, RatingsStore, check_ids, label_store
from galsearch.embedder.training.labels import read_labels
from galsearch.ui.cli import build_parser, main


def test_label_relabel_and_sets(tmp_path):
    store = LabelStore(tmp_path / "l.sqlite")
    assert store.label("morphology", ["g1", "g2", "g3"], "ring", user="ann") == 3
    assert store.label("morphology", ["g2", "g2"], "merger", user="bob") == 1  # an id given twice: one row
    store.label("lenses", ["g1"], "1", user="ann")
    current = store.current("morphology")
    assert current["id"].tolist() == ["g1", "g2", "g3"]  # first-labelled order
    assert current["label"].tolist() == ["ring", "merger", "ring"]  # the latest label counts
    assert current["user"].tolist() == ["ann", "bob", "ann"] and set(current.columns) == {
        "id",
        "label",
        "user",
        "time",
    }
    sets = store.sets().set_index("set")
    assert sets.loc["morphology", "labelled"] == 3 and sets.loc["morphology", "classes"] == "merger,ring"
    assert sets.loc["lenses", "labelled"] == 1 and sets.loc["lenses", "classes"] == "1"
    history = store.history("morphology")
    assert history["action"].tolist() == [1, 1, 1, 2] and history["seq"].is_monotonic_increasing
    assert len(store.history()) == 5


def test_unlabel_records_removals_and_keeps_history(tmp_path):
    store = LabelStore(tmp_path / "l.sqlite")
    store.label("s", ["g1", "g2", "g3"], "ring", user="ann")
    assert store.unlabel("s", ["g1", "g3", "never-labelled"], user="bob") == 2
    assert store.current("s")["id"].tolist() == ["g2"]
    assert store.unlabel("s", ["g1"], user="bob") == 0  # already removed: nothing stored
    history = store.history("s")
    assert len(history) == 5 and history["label"].isna().tolist() == [False] * 3 + [True] * 2
    assert store.sets()["labelled"].tolist() == [1]
    store.label("s", ["g1"], "merger", user="ann")  # labelled again after its removal
    assert store.current("s")["label"].tolist() == ["merger", "ring"]


def test_undo_removes_the_callers_whole_latest_action_only(tmp_path):
    store = LabelStore(tmp_path / "l.sqlite")
    batch = [f"g{i}" for i in range(48)]
    store.label("s", ["first"], "ring", user="ann")
    store.label("s", batch, "ring", user="ann")  # one action of 48 rows
    store.label("s", ["g0", "other"], "merger", user="bob")  # bob's, later
    undone = store.undo("s", user="ann")
    assert undone["id"].tolist() == batch and set(undone["user"]) == {"ann"}
    current = store.current("s").set_index("id")["label"]
    assert current.to_dict() == {"first": "ring", "g0": "merger", "other": "merger"}  # bob's rows stay
    assert store.undo("s", user="ann")["id"].tolist() == ["first"]
    assert store.undo("s", user="ann") is None  # never bob's
    assert store.undo("s", user="bob")["id"].tolist() == ["g0", "other"]
    assert store.sets().empty and store.history().empty  # the last undo takes the set it made


def test_undo_of_a_removal_restores_the_labels(tmp_path):
    store = LabelStore(tmp_path / "l.sqlite")
    store.label("s", ["g1", "g2"], "ring", user="ann")
    store.unlabel("s", ["g1", "g2"], user="ann")
    assert store.current("s").empty
    assert store.undo("s", user="ann")["label"].isna().all()
    assert store.current("s")["id"].tolist() == ["g1", "g2"]


@pytest.mark.parametrize("suffix", [".csv", ".fits", ".xml"])
def test_export_reads_back_as_fine_tuning_labels(blob_collection, tmp_path, suffix):
    ids = blob_collection.catalog["id"].tolist()
    store = label_store(blob_collection.path)
    store.label("shape", ids[:6], "compact", user="ann")
    store.label("shape", ids[4:10], "extended", user="bob")
    store.unlabel("shape", ids[:2], user="ann")
    assert store.export(tmp_path / f"shape{suffix}", "shape") == 8
    labels = read_labels(tmp_path / f"shape{suffix}", blob_collection)
    assert labels.classes == ["compact", "extended"]
    assert labels.rows.tolist() == blob_collection.rows_of(ids[2:10]).tolist()
    assert labels.targets.tolist() == [0, 0, 1, 1, 1, 1, 1, 1]


def test_export_keeps_text_beyond_ascii_in_fits(blob_collection, tmp_path):
    store = label_store(blob_collection.path)
    ids = blob_collection.catalog["id"].tolist()
    store.label("formen", ids[:2], "ringförmig", user="jörg")
    store.label("formen", ids[2:4], "glatt", user="jörg")
    store.export(tmp_path / "formen.fits", "formen")
    labels = read_labels(tmp_path / "formen.fits", blob_collection)
    assert labels.classes == ["glatt", "ringförmig"]


@pytest.mark.parametrize("bad", ["", "   ", "x" * 101, "line\nbreak"])
def test_bad_set_names_and_labels_are_refused(tmp_path, bad):
    store = LabelStore(tmp_path / "l.sqlite")
    with pytest.raises(LabelError, match="label set"):
        store.label(bad, ["g1"], "ring")
    with pytest.raises(LabelError, match="label"):
        store.label("s", ["g1"], bad)
    assert store.history().empty


def test_bad_ids_sets_and_export_formats_are_refused(blob_collection, tmp_path):
    store = label_store(blob_collection.path)
    with pytest.raises(LabelError, match="no galaxy ids"):
        store.label("s", [], "ring")
    with pytest.raises(LabelError, match="non-empty"):
        store.label("s", ["g1", " "], "ring")
    store.label("s", ["g1"], "ring")
    with pytest.raises(LabelError, match=r"no label set 'nope'.*'s'"):
        store.current("nope")
    with pytest.raises(LabelError, match="no label set"):
        store.unlabel("nope", ["g1"])
    with pytest.raises(LabelError, match="export format"):
        store.export(tmp_path / "labels.txt", "s")
    unknown = [f"nowhere-{i}" for i in range(12)]
    with pytest.raises(LabelError, match=r"nowhere-0.*nowhere-9'\] and 2 more"):
        check_ids(blob_collection, ["blob-0-0001", *unknown])
    check_ids(blob_collection, ["blob-0-0001"])


def test_a_foreign_database_is_refused(tmp_path):
    RatingsStore(tmp_path / "ratings.sqlite")
    with pytest.raises(LabelError, match="not a galsearch label store"):
        LabelStore(tmp_path / "ratings.sqlite")


KILLED_AFTER_THREE_ACTIONS = """
import os, signal, sys
import galsearch.ui.cli
from galsearch.anomaly.labels import LabelStore
label, actions = LabelStore.label, []
def label_then_die(self, *args, **kwargs):
    stored = label(self, *args, **kwargs)
    actions.append(stored)
    if len(actions) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return stored
LabelStore.label = label_then_die
sys.exit(galsearch.ui.cli.main())
"""


def test_a_killed_labeller_loses_nothing_it_committed(blob_collection):
    ids = blob_collection.catalog["id"].tolist()
    adds = [f"{ids[2 * i]},{ids[2 * i + 1]}=class{i}" for i in range(5)]
    command = ["label", str(blob_collection.path), "--set", "s", "--user", "ann"]
    command += [option for add in adds for option in ("--add", add)]
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_THREE_ACTIONS, *command], timeout=120)
    assert killed.returncode == -signal.SIGKILL
    with sqlite3.connect(blob_collection.path / "labels.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store = label_store(blob_collection.path)
    assert store.current("s")["id"].tolist() == ids[:6]  # the three committed actions, and no more
    assert store.history("s")["action"].nunique() == 3
    assert store.undo("s", user="ann")["label"].tolist() == ["class2", "class2"]  # and it still works


def test_the_cli_parses_ids_with_spaces_and_classes_after_the_last_equals():
    args = build_parser().parse_args(["label", "c", "--set", "s", "--add", "NGC 1300, M 51=barred spiral"])
    assert args.add == [(["NGC 1300", "M 51"], "barred spiral")]
    args = build_parser().parse_args(["label", "c", "--set", "s", "--add", "odd=id=ring", "--remove", "a,b"])
    assert args.add == [(["odd=id"], "ring")] and args.remove == [["a", "b"]]


def test_label_command(blob_collection, tmp_path, capsys):
    coll = str(blob_collection.path)
    ids = blob_collection.catalog["id"].tolist()
    assert main(["label", coll]) == 0
    assert "no labels yet" in capsys.readouterr().out
    shape = ["label", coll, "--set", "shape", "--user", "ann"]
    assert main([*shape, "--add", f"{ids[0]},{ids[1]},{ids[2]}=compact", "--add", f"{ids[3]}=extended"]) == 0
    out = capsys.readouterr().out
    assert "labelled 3 galaxies as 'compact'" in out and "labelled 1 galaxies as 'extended'" in out
    assert main([*shape, "--remove", ids[1]]) == 0
    assert "removed 1 labels" in capsys.readouterr().out
    assert main(["label", coll, "--set", "shape", "--format", "csv"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert table["id"].tolist() == [ids[0], ids[2], ids[3]] and list(table.columns) == [
        "id",
        "label",
        "user",
        "time",
    ]
    assert main(["label", coll]) == 0
    assert "compact,extended" in capsys.readouterr().out
    assert main([*shape, "--undo"]) == 0  # the removal
    assert "the removal of 1 labels" in capsys.readouterr().out
    assert main(["label", coll, "--set", "shape", "--user", "bob", "--undo"]) == 0
    assert "you have none" in capsys.readouterr().out
    assert main([*shape, "--export", str(tmp_path / "shape.xml")]) == 0
    assert "wrote 4 labels of set 'shape'" in capsys.readouterr().out
    assert len(read_labels(tmp_path / "shape.xml", blob_collection)) == 4


def test_label_command_refuses_unknown_ids_and_storing_without_a_set(blob_collection, capsys):
    coll = str(blob_collection.path)
    adds = ["--add", "blob-0-0001=ring", "--add", "blob-0-0002,no-such-galaxy=ring"]
    assert main(["label", coll, "--set", "s", *adds]) == 1
    assert "no-such-galaxy" in capsys.readouterr().err
    assert label_store(coll).history().empty  # nothing stored, not even the first --add
    with pytest.raises(SystemExit) as done:
        main(["label", coll, "--add", "blob-0-0001=ring"])
    assert done.value.code == 2 and "need --set" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        main(["label", coll, "--set", "s", "--add", "blob-0-0001="])
    assert done.value.code == 2
    assert main(["label", coll, "--set", "nope"]) == 1
    assert "no label set 'nope'" in capsys.readouterr().err
