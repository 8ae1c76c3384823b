"""Encoders on N-band collections: timm's input-conv adaptation, band names, training on N bands, and the
multi-band simulation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from conftest import TINY_ENCODER

from galsearch.embedder import (
    Collection,
    EncoderError,
    embed,
    encoder_of,
    load_encoder,
    open_collection,
    save_encoder,
)
from galsearch.embedder.band_mixer import band_channels, calibrated_mixer, recorded_mixer
from galsearch.embedder.embed import describe
from galsearch.embedder.encoders import match_bands
from galsearch.embedder.simulate_bands import (
    CLASSES,
    ZY_EXCESS,
    band_flux,
    bandpass,
    simulate_band_galaxy,
    simulate_bands,
)
from galsearch.embedder.stretch import Stretch
from galsearch.embedder.training.finetune import FinetuneConfig, finetune
from galsearch.embedder.training.heads import load_head
from galsearch.embedder.training.labels import read_labels
from galsearch.embedder.training.pretrain import pretrain

ARCH = TINY_ENCODER.removeprefix("random:")
GRIZY = ["g", "r", "i", "z", "y"]
# Flux per band of the two classes: the same shapes' colours differ in every band.
COLOURS = np.array([[1.0, 0.8, 0.6, 0.5, 0.4], [0.3, 0.5, 0.8, 0.9, 1.0]])


def band_collection(path, n: int = 64, bands: list[str] | None = GRIZY, size: int = 32) -> Collection:
    """A collection of ``n`` 5-band galaxies: blobs, compact and blue (label 0) or extended and red (1)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    labels = np.arange(n) % 2
    images = np.empty((n, size, size, len(COLOURS[0])), np.uint8)
    for i, label in enumerate(labels):
        sigma = rng.uniform(1.5, 2.5) if label == 0 else rng.uniform(4, 6)
        blob = np.exp(-0.5 * (xx**2 + (yy * rng.uniform(1, 2.5)) ** 2) / sigma**2)
        noisy = blob[..., None] * COLOURS[label] * 230 + rng.normal(0, 6, (size, size, 5))
        images[i] = np.clip(noisy, 0, 255).astype(np.uint8)
    preprocessing = {"size": size, "channels": 5, "stretch": Stretch().to_dict(), "crop": 1.0}
    coll = Collection.create(path, images.shape[1:], preprocessing | ({"bands": bands} if bands else {}))
    names = np.array(["compact", "extended"])[labels]
    rows = pd.DataFrame(
        {"id": [f"g{i}" for i in range(n)], "source": "test", "label": labels, "class_name": names}
    )
    with coll.writing():
        coll.append_galaxies(images, rows)
    return open_collection(path)


@pytest.fixture
def grizy(tmp_path) -> Collection:
    return band_collection(tmp_path / "grizy")


@pytest.fixture
def rgb_checkpoint(tmp_path):
    """A 3-band galsearch checkpoint of the tiny architecture that records no band names."""
    torch.manual_seed(3)
    encoder = load_encoder(TINY_ENCODER, "cpu")
    with torch.no_grad():
        for p in encoder.model.parameters():
            p.normal_(0, 0.1)
    return save_encoder(encoder, tmp_path / "rgb.safetensors")


def test_tiny_encoder_embeds_a_five_band_collection(grizy):
    embed(grizy, TINY_ENCODER, device="cpu", progress=False)
    coll = open_collection(grizy.path)
    fingerprint = coll.encoder
    assert fingerprint["input_size"] == [5, 32, 32] and fingerprint["bands"] == GRIZY
    direct = load_encoder(TINY_ENCODER, "cpu", channels=5, bands=GRIZY)
    assert direct.model.stem[0].in_channels == 5  # built for 5 bands, not adapted
    np.testing.assert_allclose(coll.embeddings[:], direct.embed(coll.images[:]), rtol=1e-5, atol=1e-6)


def test_unnamed_bands_adapt_a_three_band_checkpoint_as_timm_does(tmp_path, rgb_checkpoint):
    coll = band_collection(tmp_path / "unnamed", 16, None)
    embed(coll, str(rgb_checkpoint), device="cpu", progress=False)
    coll = open_collection(coll.path)
    encoder = encoder_of(coll, "cpu")
    assert (encoder.channels, encoder.bands, coll.encoder["input_size"][0]) == (5, None, 5)
    three = load_encoder(str(rgb_checkpoint), "cpu")
    state = {k: v.clone() for k, v in three.model.state_dict().items()}
    reference = timm.create_model(
        ARCH, pretrained=True, in_chans=5, num_classes=0, pretrained_cfg_overlay={"state_dict": state}
    ).eval()
    assert torch.equal(encoder.model.stem[0].weight, reference.stem[0].weight)
    assert encoder.mean == tuple(three.mean[k % 3] for k in range(5))
    images = torch.from_numpy(np.array(coll.images[:8]))
    with torch.inference_mode():
        expected = reference(encoder.preprocess(images)).numpy()
    np.testing.assert_allclose(coll.embeddings[:8], expected, rtol=1e-4, atol=1e-5)
    same = np.repeat(coll.images[:4, ..., :1], 3, axis=3)  # grey: 6 equal bands see what 3 equal bands see
    six = load_encoder(str(rgb_checkpoint), "cpu", channels=6)
    np.testing.assert_allclose(six.embed(np.repeat(same, 2, axis=3)), three.embed(same), rtol=1e-4, atol=1e-5)


def test_known_filters_feed_the_channel_nearest_in_wavelength(tmp_path, grizy, rgb_checkpoint):
    """g, r, i, z, y: a 1x1 mixer (red the mean of i, z, y; green r; blue g) before the 3-band network;
    embed weights i, z and y by the mixer it measures on the collection and records."""
    three = load_encoder(str(rgb_checkpoint), "cpu")
    images = np.array(grizy.images[:8])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    mixed = torch.stack([x[:, 2:].mean(dim=1), x[:, 1], x[:, 0]], dim=1)  # (i + z + y) / 3, r, g
    with torch.inference_mode():
        expected = three.model(three.prepare(mixed)).numpy()
    by_wavelength = load_encoder(str(rgb_checkpoint), "cpu", channels=5, bands=GRIZY)
    np.testing.assert_allclose(by_wavelength.embed(images), expected, rtol=1e-4, atol=1e-5)

    embed(grizy, str(rgb_checkpoint), device="cpu", progress=False)
    coll = open_collection(grizy.path)
    mixer = calibrated_mixer(np.array(coll.images[:]), GRIZY)
    np.testing.assert_array_equal(recorded_mixer(coll.encoder), mixer)
    assert f"bands g r i z y; red = {mixer[0, 2]:.2f} i + {mixer[0, 3]:.2f} z" in describe(coll.encoder)
    encoder = encoder_of(coll, "cpu")
    assert (encoder.channels, encoder.bands, coll.encoder["bands"]) == (5, GRIZY, GRIZY)
    with torch.inference_mode():
        calibrated = three.model(three.prepare(torch.einsum("cn,bnhw->bchw", torch.tensor(mixer).float(), x)))
    np.testing.assert_allclose(coll.embeddings[:8], calibrated.numpy(), rtol=1e-4, atol=1e-4)
    again = embed(coll, str(rgb_checkpoint), device="cpu", progress=False)  # reloaded with the recorded mixer
    assert (again.embedded, again.resumed_from) == (0, len(coll))
    gri = load_encoder(str(rgb_checkpoint), "cpu", channels=3, bands=["g", "r", "i"])  # stored blue to red
    np.testing.assert_allclose(
        gri.embed(images[..., :3]), three.embed(images[..., 2::-1]), rtol=1e-4, atol=1e-5
    )
    irg = load_encoder(str(rgb_checkpoint), "cpu", channels=3, bands=["i", "r", "g"])
    assert irg.weights_sha256 == three.weights_sha256  # already in the order the weights expect
    assert band_channels(["i", "r", "g"]) == [0, 1, 2]
    assert band_channels(["u", "g", "r", "i", "z", "y"]) == [2, 2, 1, 0, 0, 0]
    assert band_channels(["z", "y", "J"]) is None and band_channels(["band0", "r", "g"]) is None


def test_other_bands_are_refused_naming_both(tmp_path, grizy, rgb_checkpoint):
    named = load_encoder(str(rgb_checkpoint), "cpu", channels=5, bands=GRIZY)
    path = save_encoder(named, tmp_path / "grizy.safetensors")
    ugriz = band_collection(tmp_path / "ugriz", 4, ["u", "g", "r", "i", "z"])
    with pytest.raises(
        EncoderError, match=r"expects bands \[g, r, i, z, y\], not the bands \[u, g, r, i, z\]"
    ):
        embed(ugriz, str(path), device="cpu", progress=False)
    unnamed = band_collection(tmp_path / "unnamed", 4, None)
    embed(unnamed, str(path), device="cpu", progress=False)  # no names: the band count decides
    with pytest.raises(EncoderError, match=r"expects bands \[g, r, i, z, y\].*\(4 unnamed\)"):
        match_bands(load_encoder(str(path), "cpu"), 4)
    gri = save_encoder(load_encoder(str(rgb_checkpoint), "cpu", channels=3, bands=["g", "r", "i"]), path)
    with pytest.raises(EncoderError, match=r"expects bands \[g, r, i\], not the bands \[g, r, i, z, y\]"):
        embed(grizy, str(gri), device="cpu", progress=False)
    with pytest.raises(EncoderError, match="only 3-band weights that record no band names are adapted"):
        embed(unnamed, str(gri), device="cpu", progress=False, replace=True)


def test_saved_encoder_keeps_its_bands(tmp_path, grizy, rgb_checkpoint):
    encoder = load_encoder(str(rgb_checkpoint), "cpu", channels=5, bands=GRIZY)
    again = load_encoder(str(save_encoder(encoder, tmp_path / "e.safetensors")), "cpu")
    assert (again.bands, again.channels, again.mean) == (GRIZY, 5, encoder.mean)
    assert again.weights_sha256 == encoder.weights_sha256
    images = grizy.images[:4]
    np.testing.assert_allclose(again.embed(images), encoder.embed(images), rtol=1e-5, atol=1e-6)


def test_pretrain_on_five_bands_from_a_three_band_init(tmp_path, grizy, rgb_checkpoint):
    out = tmp_path / "five.safetensors"
    report = pretrain(
        [grizy.path],
        out,
        init=str(rgb_checkpoint),
        input_size=32,
        batch_size=32,
        epochs=1,
        device="cpu",
        progress=False,
    )
    trained = load_encoder(str(out), "cpu")
    assert (trained.channels, trained.bands) == (5, GRIZY) and report.encoder.bands == GRIZY
    assert trained.embed(grizy.images[:3]).shape == (3, trained.dim)
    scratch = pretrain(
        [grizy.path],
        tmp_path / "s.safetensors",
        architecture=ARCH,
        input_size=32,
        batch_size=32,
        epochs=1,
        device="cpu",
        progress=False,
    )
    assert (scratch.encoder.channels, scratch.encoder.model.stem[0].in_channels) == (5, 5)


def test_finetune_a_partly_unfrozen_encoder_on_five_bands(grizy, rgb_checkpoint):
    embed(grizy, str(rgb_checkpoint), device="cpu", progress=False)
    coll = open_collection(grizy.path)
    labels = read_labels(pd.DataFrame({"id": coll.catalog["id"], "label": coll.catalog["class_name"]}), coll)
    result = finetune(coll, labels, FinetuneConfig(unfreeze=1, epochs=2, device="cpu"), name="shape")
    assert (result.head.encoder.channels, result.head.encoder.bands) == (5, GRIZY)
    again = load_head(result.folder, "cpu")
    assert again.encoder.bands == GRIZY
    np.testing.assert_allclose(again.predict_scores(coll), result.head.predict_scores(coll), atol=1e-5)


def test_band_simulation_is_deterministic():
    first = simulate_band_galaxy(5, seed=1, size=24)
    again = simulate_band_galaxy(5, seed=1, size=24)
    assert first.image.shape == (24, 24, 5) and first.class_name == CLASSES[5].name
    np.testing.assert_array_equal(first.image, again.image)
    assert first.fluxes == again.fluxes
    assert not np.array_equal(first.image, simulate_band_galaxy(5, seed=2, size=24).image)
    images, catalog = simulate_bands(3, seed=1, size=24, workers=1)
    np.testing.assert_array_equal(images[2], simulate_band_galaxy(2, seed=1, size=24).image)
    assert list(catalog["class_name"]) == [c.name for c in CLASSES[:3]]


def test_zy_classes_differ_only_in_z_and_y_flux():
    names = [c.name for c in CLASSES]
    plain, excess = names.index("zy_normal"), names.index("zy_excess")
    for twin in range(2):
        a = simulate_band_galaxy(twin * len(CLASSES) + plain, size=24)
        b = simulate_band_galaxy(twin * len(CLASSES) + excess, size=24)
        assert a.twin == b.twin == twin and a.redshift == b.redshift
        for band in "gri":
            assert b.fluxes[band] == pytest.approx(a.fluxes[band], rel=1e-9)
        for band in "zy":
            assert b.fluxes[band] == pytest.approx((1 + ZY_EXCESS) * a.fluxes[band], rel=1e-4)
    assert bandpass("i").red_limit <= bandpass("z").blue_limit  # the bands do not overlap
    assert band_flux("Sbc", 0.1, "i", ZY_EXCESS) == pytest.approx(band_flux("Sbc", 0.1, "i"), rel=1e-9)
