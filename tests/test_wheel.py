"""The wheel a user installs: one ``galsearch`` package with the default encoder, and a command that works."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built offline with this environment's setuptools."""
    out = tmp_path_factory.mktemp("dist")
    build = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        str(ROOT),
        "--no-deps",
        "--no-build-isolation",
        "-w",
        str(out),
    ]
    subprocess.run(build, check=True, capture_output=True, timeout=300)
    (built,) = out.glob("galsearch-*.whl")
    return built


def test_the_wheel_holds_only_the_galsearch_namespace_and_the_default_encoder(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"galsearch", next(t for t in top if t.endswith(".dist-info"))}
    for module in ("__init__.py", "embedder/embed.py", "index/query.py", "anomaly/learner.py", "ui/cli.py"):
        assert f"galsearch/{module}" in names
    assert "galsearch/embedder/weights/default.safetensors" in names
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt")))
    assert b"galsearch = galsearch.ui.cli:main" in entry_points


def test_the_installed_wheel_builds_the_demo_from_a_clean_environment(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # Offline: the dependencies come from this test environment's site-packages, added after the venv's own
    # (a path in a .pth file is appended to sys.path, and the .pth files inside it are not run, so this
    # environment's editable galsearch stays out).
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(site, "test-environment.pth").write_text("\n".join(sorted(ours)) + "\n")
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index"]
    subprocess.run([*install, str(wheel)], check=True, capture_output=True, timeout=300)

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GALSEARCH_HOME": str(tmp_path / "home")}
    where = subprocess.run(
        [python, "-c", "import galsearch.ui.cli as c; print(c.__file__)"],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert Path(where).resolve().is_relative_to(venv.resolve()), where
    demo = [venv / "bin" / "galsearch", "demo", "--no-serve", "--galaxies", "60", "--size", "32"]
    done = subprocess.run(demo, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    info = subprocess.run(
        [venv / "bin" / "galsearch", "info", tmp_path / "home" / "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert info.returncode == 0 and "with default (" in info.stdout, info.stdout + info.stderr  # embedded
