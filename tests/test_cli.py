"""The galsearch command line, run as a user runs it (a separate process)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.table import Table
from conftest import TINY_ENCODER, write_blob_npz
from PIL import Image

from galsearch.embedder import open_collection
from galsearch.index import load_index
from galsearch.ui.cli import main

COMMANDS = [
    "ingest",
    "fetch",
    "embed",
    "calibrate-bands",
    "pretrain",
    "index",
    "search",
    "anomalies",
    "discover",
    "clusters",
    "label",
    "finetune",
    "predict",
    "suspects",
    "map",
    "info",
    "demo",
    "serve",
]


def galsearch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "galsearch.ui.cli", *args], capture_output=True, text=True, timeout=300
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
    # with its map drawn, another `galsearch demo` does not compile UMAP again in the background
    assert compiles_umap_for_demo(demo.path) is False
    assert compiles_umap_for_demo(tmp_path / "no-demo-yet") is True


def compiles_umap_for_demo(path: Path) -> bool:
    """Whether the background process of `galsearch demo --path PATH` imported UMAP (to compile it)."""
    code = "import sys; from galsearch.ui.cli import compile_umap_for_demo as compile; compile(sys.argv[1]); "
    code += "print('umap' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    return done.stdout.split() == ["True"]


def test_errors_exit_1_with_a_message_and_no_traceback(tmp_path):
    done = galsearch("embed", str(tmp_path / "nowhere"))
    assert done.returncode == 1
    assert done.stderr.startswith("error: no collection at") and "Traceback" not in done.stderr
    (tmp_path / "notes.txt").write_text("not images")
    done = galsearch("ingest", str(tmp_path / "notes.txt"), str(tmp_path / "c"))
    assert done.returncode == 1 and "don't know how to ingest" in done.stderr


def test_usage_errors_exit_2(tmp_path):
    assert galsearch("ingest").returncode == 2
    assert galsearch("ingest", "a", "b", "--bands", "1,,2").returncode == 2
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
        [sys.executable, "-m", "galsearch.ui.cli", "discover", coll, "--session", "s", "--user", "ann"],
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


# ---- start-up: what each command imports ------------------------------------------------------------

HEAVY = {"torch", "torchvision", "timm", "gradio", "umap", "sklearn", "matplotlib", "astropy", "skimage"}
LOADED = (
    "import sys\n"
    "from galsearch.ui.cli import main\n"
    "try:\n"
    "    code = main(sys.argv[1:])\n"
    "except SystemExit as exit:\n"
    "    code = exit.code\n"
    "print('LOADED', ' '.join(sorted({name.split('.')[0] for name in sys.modules})), file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def loaded_by(*args: str) -> set[str]:
    """Top-level packages imported by one galsearch command, run in a fresh interpreter."""
    done = subprocess.run([sys.executable, "-c", LOADED, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return set(done.stderr.rsplit("LOADED ", 1)[1].split())


def test_importing_the_cli_and_the_packages_loads_no_heavy_library():
    code = "import sys, galsearch.ui.cli, galsearch.index, galsearch.anomaly; print(' '.join(sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    loaded = {name.split(".")[0] for name in done.stdout.split()}
    assert done.returncode == 0 and not loaded & (HEAVY | {"numpy", "pandas", "faiss", "scipy"})


def test_commands_load_only_what_they_need(embedded):
    coll = str(embedded.path)
    assert not loaded_by("--help") & (HEAVY | {"numpy", "pandas"})
    assert not loaded_by("info", coll) & (HEAVY | {"pandas", "faiss", "scipy"})
    assert not loaded_by("search", coll, "--id", "blob-0-0001") & HEAVY
    hunt = ["discover", coll, "--session", "imports"]
    loaded_by(*hunt, "--next", "1")  # the first loop of a collection computes and caches its features
    assert not loaded_by(*hunt, "--rate", "blob-0-0002=4", "--next", "2") & (HEAVY | {"faiss"})


def test_public_names_load_on_first_use_and_stay_what_they_were():
    code = (
        "import galsearch.embedder.embed, galsearch.embedder.ingest\n"
        "from galsearch import embedder, index, anomaly\n"
        "from galsearch.embedder import embed, ingest, Collection\n"
        "assert galsearch.embedder.embed is embed and embed.__module__ == 'galsearch.embedder.embed', embed\n"
        "assert callable(ingest) and embedder.ingest.__name__ == 'ingest'\n"
        "for package in (embedder, index, anomaly):\n"
        "    assert set(package.__all__) <= set(dir(package))\n"
        "    assert all(getattr(package, name) is not None for name in package.__all__)\n"
        "try:\n"
        "    embedder.no_such_name\n"
        "except AttributeError as error:\n"
        "    print(error)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "module 'galsearch.embedder' has no attribute 'no_such_name'" in done.stdout


def test_format_names_match_the_writer():
    from galsearch.index.query import FORMATS
    from galsearch.ui.cli import FORMATS as CLI_FORMATS

    assert CLI_FORMATS == FORMATS


# ---- tables as CSV, JSON, VOTable and FITS ----------------------------------------------------------


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """40 embedded blob galaxies with a trained head named "shape"."""
    from galsearch.embedder import embed, ingest
    from galsearch.embedder.training.finetune import FinetuneConfig, finetune
    from galsearch.embedder.training.labels import read_labels

    folder = tmp_path_factory.mktemp("tables")
    ingest(write_blob_npz(folder / "blobs.npz", 40), folder / "c", progress=False)
    embed(folder / "c", TINY_ENCODER, device="cpu", progress=False)
    coll = open_collection(folder / "c")
    labels = pd.DataFrame({"id": coll.catalog["id"], "label": coll.catalog["class_name"]})
    finetune(coll, read_labels(labels, coll, "classify"), FinetuneConfig(device="cpu"), name="shape")
    return open_collection(folder / "c")


def test_a_reader_that_stops_early_ends_the_command_without_a_traceback(embedded):
    read, write = os.pipe()
    os.close(read)  # like `| head -1` after its line: every write to the pipe fails
    with os.fdopen(write, "w") as closed:
        done = subprocess.run(
            [sys.executable, "-m", "galsearch.ui.cli", "info", str(embedded.path)],
            stdout=closed,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
        )
    assert done.returncode == 1 and done.stderr == ""


def read_table(path) -> pd.DataFrame:
    """A table written by galsearch, read back as TOPCAT or a script would."""
    if path.suffix == ".csv":
        return pd.read_csv(path)
    if path.suffix == ".json":
        return pd.DataFrame(json.loads(path.read_text()))
    table = Table.read(path)
    table.convert_bytestring_to_unicode()  # FITS keeps text as (UTF-8) bytes
    return table.to_pandas()


TABLE_COMMANDS = {
    "anomalies": ["--top", "5"],
    "discover-next": ["--session", "formats", "--next", "3"],
    "discover-ranking": ["--session", "formats", "--ranking", "4"],
    "clusters": ["--max-clusters", "4"],
    "predict": ["--head", "shape", "--quiet", "--device", "cpu"],
}


@pytest.mark.parametrize("suffix", [".csv", ".json", ".xml", ".fits"])
@pytest.mark.parametrize("command", TABLE_COMMANDS)
def test_every_table_command_writes_each_format(embedded, tmp_path, capsys, command, suffix):
    name = command.split("-")[0]
    out = tmp_path / f"table{suffix}"
    assert main([name, str(embedded.path), *TABLE_COMMANDS[command], "--output", str(out)]) == 0
    assert f"to {out}" in capsys.readouterr().out
    table = read_table(out)
    catalog = open_collection(embedded.path).catalog
    if command == "anomalies":
        assert table["id"].tolist() == catalog.nlargest(5, "anomaly_knn")["id"].tolist()
        assert np.allclose(table["anomaly"], np.sort(catalog["anomaly_knn"])[::-1][:5])
    elif command.startswith("discover"):
        assert len(table) == int(TABLE_COMMANDS[command][-1])
        assert {"id", "interest", "uncertainty", "anomaly"} <= set(table.columns)
        assert set(table["id"]) <= set(catalog["id"])
    elif command == "clusters":
        assert table["galaxies"].sum() == 40
        assert table["cluster"].tolist() == sorted(catalog["cluster"].unique())
    else:
        assert table["id"].tolist() == catalog["id"].tolist()
        assert (table["shape"].astype(str) == catalog["shape"].astype(str)).all()


def test_info_as_json(embedded, tmp_path, capsys):
    assert main(["info", str(embedded.path), "--format", "json"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert described["galaxies"] == described["embedded"] == 40
    assert described["encoder"]["spec"] == TINY_ENCODER and described["stretch"]["kind"] == "lupton"
    assert described["image_shape"] == [32, 32, 3] and "class_name" in described["columns"]
    assert main(["info", str(embedded.path), "--output", str(tmp_path / "info.json")]) == 0
    assert json.loads((tmp_path / "info.json").read_text()) == described


def test_a_machine_readable_table_on_stdout_is_the_table_alone(embedded, capsys):
    hunt = ["discover", str(embedded.path), "--session", "stdout", "--user", "ann"]
    assert main([*hunt, "--rate", "blob-0-0003=5", "--next", "2", "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    assert len(pd.read_csv(io.StringIO(out))) == 2 and "rated blob-0-0003 5" in err
    assert main(["anomalies", str(embedded.path), "--top", "3", "--format", "json"]) == 0
    out, err = capsys.readouterr()
    assert len(json.loads(out)) == 3 and "most anomalous" in err


def test_table_options_are_checked(embedded, capsys):
    coll = str(embedded.path)
    hunt = ["discover", coll, "--session", "checks"]
    assert galsearch(*hunt, "--format", "csv").returncode == 2  # no table asked for
    assert galsearch(*hunt, "--next", "2", "--ranking", "2", "--format", "csv").returncode == 2
    assert galsearch("info", coll, "--format", "csv").returncode == 2
    assert main(["anomalies", coll, "--format", "fits"]) == 1
    assert "need an output file" in capsys.readouterr().err


# ---- shell completion -------------------------------------------------------------------------------


def completions(line: str, tmp_path) -> list[str]:
    """What `galsearch` offers on TAB after ``line``, asked as argcomplete's bash hook asks."""
    answer = tmp_path / "completions"
    env = {
        **os.environ,
        "_ARGCOMPLETE": "1",
        "COMP_LINE": line,
        "COMP_POINT": str(len(line)),
        "_ARGCOMPLETE_IFS": "\n",
        "_ARGCOMPLETE_STDOUT_FILENAME": str(answer),
    }
    done = subprocess.run(
        [sys.executable, "-m", "galsearch.ui.cli"], env=env, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return answer.read_text().split()


def test_tab_completion(tmp_path):
    assert set(completions("galsearch ", tmp_path)) >= set(COMMANDS)
    assert completions("galsearch dis", tmp_path) == ["discover", "display"]
    assert "--format" in completions("galsearch search coll --fo", tmp_path)
    assert completions("galsearch info coll --format ", tmp_path) == ["text", "json"]


def test_version_matches_the_package_and_its_citation():
    import tomllib

    import yaml

    root = Path(__file__).resolve().parents[1]
    version = tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]
    done = galsearch("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"galsearch {version}"
    citation = yaml.safe_load((root / "CITATION.cff").read_text())
    assert citation["version"] == version and citation["license"] == "MIT"
    assert "MIT License" in (root / "LICENSE").read_text()
