"""The galsearch command line, run as a user runs it (a separate process)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import TINY_ENCODER, write_blob_npz
from PIL import Image

from embedder import open_collection
from index import load_index
from ui.cli import main

COMMANDS = [
    "ingest",
    "fetch",
    "embed",
    "pretrain",
    "index",
    "search",
    "anomalies",
    "discover",
    "clusters",
    "finetune",
    "predict",
    "map",
    "info",
    "demo",
    "serve",
]


def galsearch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ui.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_help_lists_every_command():
    done = galsearch("--help")
    assert done.returncode == 0
    for command in COMMANDS:
        assert command in done.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0 and "usage: galsearch " + command in capsys.readouterr().out


def test_ingest_embed_info(tmp_path):
    source = write_blob_npz(tmp_path / "blobs.npz", 20)
    done = galsearch("ingest", str(source), str(tmp_path / "c"), "--quiet", "--stretch", "linear")
    assert done.returncode == 0, done.stderr
    assert "stored 20 galaxies" in done.stdout
    done = galsearch("embed", str(tmp_path / "c"), "--encoder", TINY_ENCODER, "--quiet", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert "embedded 20 galaxies" in done.stdout
    done = galsearch("info", str(tmp_path / "c"))
    assert done.returncode == 0 and "embedded    20 with random:test_convnext" in done.stdout
    assert open_collection(tmp_path / "c").preprocessing["stretch"]["kind"] == "linear"
    done = galsearch("index", str(tmp_path / "c"), "--factory", "NoSuchIndex")
    assert done.returncode == 1 and "factory string 'NoSuchIndex'" in done.stderr


def test_demo_follows_a_change_of_encoder(tmp_path):
    options = ["demo", "--path", str(tmp_path / "demo"), "--galaxies", "40", "--no-serve", "--device", "cpu"]
    assert main([*options, "--encoder", TINY_ENCODER]) == 0
    assert main([*options, "--encoder", "random:test_vit"]) == 0  # an older demo is re-embedded, not refused
    demo = open_collection(tmp_path / "demo")
    assert demo.encoder["architecture"] == "test_vit"
    assert load_index(demo).index.ntotal == len(demo)  # and its index rebuilt from the new embeddings


def test_errors_exit_1_with_a_message_and_no_traceback(tmp_path):
    done = galsearch("embed", str(tmp_path / "nowhere"))
    assert done.returncode == 1
    assert done.stderr.startswith("error: no collection at") and "Traceback" not in done.stderr
    (tmp_path / "notes.txt").write_text("not images")
    done = galsearch("ingest", str(tmp_path / "notes.txt"), str(tmp_path / "c"))
    assert done.returncode == 1 and "don't know how to ingest" in done.stderr


def test_usage_errors_exit_2(tmp_path):
    assert galsearch("ingest").returncode == 2
    assert galsearch("ingest", "a", "b", "--bands", "r,g").returncode == 2
    assert galsearch("frobnicate").returncode == 2


def test_anomalies_clusters_and_discover(tmp_path, capsys):
    source = write_blob_npz(tmp_path / "blobs.npz", 40)
    coll = str(tmp_path / "c")
    assert main(["ingest", str(source), coll, "--quiet"]) == 0
    assert main(["embed", coll, "--encoder", TINY_ENCODER, "--quiet", "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["anomalies", coll, "--method", "lof", "--top", "3"]) == 0
    assert "stored anomaly_lof for 40 galaxies; the 3 most anomalous" in capsys.readouterr().out
    assert main(["clusters", coll, "--max-clusters", "4"]) == 0
    assert "clusters among 40 galaxies" in capsys.readouterr().out
    hunt = ["discover", coll, "--session", "blobs", "--user", "ann"]
    assert main([*hunt, "--rate", "blob-0-0001=5", "--rate", "blob-0-0002=0", "--next", "2"]) == 0
    out = capsys.readouterr().out
    assert "rated blob-0-0001 5" in out and "interest" in out
    assert main([*hunt, "--undo", "--ranking", "3", "--export", str(tmp_path / "r.csv")]) == 0
    out = capsys.readouterr().out
    assert "undid blob-0-0002 = 0" in out and "wrote 1 ratings" in out
    assert main([*hunt, "--rate", "no-such=3"]) == 1
    assert galsearch(*hunt, "--rate", "blob-0-0003=high").returncode == 2


def test_discover_interactively(tmp_path):
    source = write_blob_npz(tmp_path / "blobs.npz", 30)
    coll = str(tmp_path / "c")
    assert main(["ingest", str(source), coll, "--quiet"]) == 0
    assert main(["embed", coll, "--encoder", TINY_ENCODER, "--quiet", "--device", "cpu"]) == 0
    done = subprocess.run(
        [sys.executable, "-m", "ui.cli", "discover", coll, "--session", "s", "--user", "ann"],
        input="4\n2\nu\nx\ns\nr\n9\nq\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "undid" in done.stdout and "type a number from 0 to 5" in done.stdout
    assert "error: a rating is a number from 0 to 5, got 9" in done.stdout
    assert "1 galaxies rated in session 's'" in done.stdout


def test_map_writes_a_png(tmp_path):
    coll = str(tmp_path / "c")
    assert main(["ingest", str(write_blob_npz(tmp_path / "blobs.npz", 30)), coll, "--quiet"]) == 0
    assert main(["embed", coll, "--encoder", TINY_ENCODER, "--quiet", "--device", "cpu"]) == 0
    assert (
        main(
            [
                "map",
                coll,
                "--png",
                str(tmp_path / "map.png"),
                "--color-by",
                "class_name",
                "--size",
                "600",
                "400",
            ]
        )
        == 0
    )
    assert Image.open(tmp_path / "map.png").size == (600, 400)
