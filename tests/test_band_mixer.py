"""The calibrated band mixer: bands brought to their input's level and weighted by inverse noise variance,
folded exactly into the first convolution of 3-band weights."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_ENCODER
from test_bands_encoders import band_collection

from galsearch.embedder import EncoderError, load_encoder, open_collection
from galsearch.embedder.band_mixer import calibrated_mixer
from galsearch.embedder.encoders import match_bands
from galsearch.ui.cli import main

GRIZY = ["g", "r", "i", "z", "y"]
LEVELS = np.array([100.0, 120.0, 150.0, 75.0, 150.0])  # peak counts: z half as bright as i, y as bright
NOISE = np.array([2.0, 2.0, 2.0, 2.0, 4.0])  # per pixel: y twice as noisy as the others


def galaxies(n: int = 200, size: int = 48) -> np.ndarray:
    """uint8 g, r, i, z, y stamps of round blobs of one colour on a sky-subtracted background (noise
    clipped at 0, as the stretch's black point does) with per-band noise."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    sigma = rng.uniform(2, 3.5, n)[:, None, None, None]
    blobs = np.exp(-0.5 * (xx**2 + yy**2)[None, ..., None] / sigma**2) * LEVELS
    noisy = blobs + rng.normal(0, 1, (n, size, size, 5)) * NOISE
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def test_bands_are_scaled_to_their_input_and_weighted_by_inverse_variance():
    mixer = calibrated_mixer(galaxies(), GRIZY)
    # Scaled to i's level, z has noise 4 and y noise 4 against i's 2: weights 4 : 1 : 1 (2/3, 1/6, 1/6),
    # and z is multiplied by its scale, 2.
    assert mixer[0, :2].tolist() == [0, 0] and mixer[1].tolist() == [0, 1, 0, 0, 0]
    assert mixer[2].tolist() == [1, 0, 0, 0, 0]
    np.testing.assert_allclose(mixer[0, 2:], [2 / 3, 2 / 6, 1 / 6], rtol=0.05)


def test_the_mixer_is_folded_into_the_first_convolution_exactly():
    """The adapted default encoder on 5 bands equals the 3-band one fed the mixed image (same-padding
    convolution included)."""
    images = galaxies(8)
    mixer = np.array([[0.1, 0, 0.6, 0.5, 0.2], [0, 0.9, 0.1, 0, 0], [1.2, 0, 0, 0, -0.1]])
    three = load_encoder("default", "cpu")
    five = load_encoder("default", "cpu", channels=5, bands=GRIZY, mixer=mixer)
    assert five.bands == GRIZY and five.provenance["band_mixer"] == mixer.tolist()
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    mixed = torch.einsum("cn,bnhw->bchw", torch.tensor(mixer, dtype=torch.float32), x)
    with torch.inference_mode():
        expected = three.model(three.prepare(mixed)).numpy()
    np.testing.assert_allclose(five.embed(images), expected, rtol=1e-4, atol=1e-4)
    assert five.weights_sha256 != load_encoder("default", "cpu", channels=5, bands=GRIZY).weights_sha256


def test_a_mixer_weights_only_bands_that_share_an_input_of_adapted_weights():
    mixer = calibrated_mixer(galaxies(20), GRIZY)
    five = load_encoder(TINY_ENCODER, "cpu", channels=5, bands=GRIZY)  # built for 5 bands: nothing to mix
    assert match_bands(five, 5, GRIZY, mixer=mixer) is five
    gri = load_encoder("default", "cpu", channels=3, bands=["g", "r", "i"], mixer=np.eye(3))
    assert (
        gri.weights_sha256 == load_encoder("default", "cpu", channels=3, bands=["g", "r", "i"]).weights_sha256
    )
    assert "band_mixer" not in (gri.provenance or {})  # one band per input: reordered, as without a mixer


def test_a_mixer_is_a_finite_array_that_feeds_every_input():
    mixer = calibrated_mixer(galaxies(20), GRIZY)
    with pytest.raises(EncoderError, match=r"finite \(3, 5\) array"):
        load_encoder("default", "cpu", channels=5, bands=GRIZY, mixer=mixer[:, :4])
    with pytest.raises(EncoderError, match="leaves an input"):
        load_encoder("default", "cpu", channels=5, bands=GRIZY, mixer=np.eye(3, 5) * [[1], [1], [0]])
    with pytest.raises(EncoderError, match="known filters"):
        calibrated_mixer(galaxies(20), ["g", "r", "i", "z", "band4"])


def test_calibrate_bands_saves_the_adapted_encoder_that_embed_then_uses(tmp_path, capsys):
    coll = band_collection(tmp_path / "grizy", n=16)
    out = tmp_path / "grizy_default.safetensors"
    main(["calibrate-bands", str(coll.path), "--out", str(out), "--sample", "12", "--device", "cpu"])
    mixer = calibrated_mixer(coll.images[:12], GRIZY)
    printed = capsys.readouterr().out
    assert (
        f"red = {mixer[0, 2]:.2f} i + {mixer[0, 3]:.2f} z" in printed
        and "green = 1.00 r, blue = 1.00 g" in printed
    )
    main(["embed", str(coll.path), "--encoder", str(out), "--device", "cpu", "--quiet"])
    adapted = load_encoder("default", "cpu", channels=5, bands=GRIZY, mixer=mixer)
    embedded = open_collection(coll.path)
    assert embedded.encoder["weights_sha256"] == adapted.weights_sha256
    np.testing.assert_allclose(embedded.embeddings, adapted.embed(coll.images[:]), rtol=1e-4, atol=1e-4)


def test_calibrate_bands_needs_named_filters(tmp_path, capsys):
    coll = band_collection(tmp_path / "unnamed", n=4, bands=None)
    assert main(["calibrate-bands", str(coll.path), "--out", str(tmp_path / "x.safetensors")]) != 0
    assert "has no band names" in capsys.readouterr().err and not (tmp_path / "x.safetensors").exists()


def test_a_head_refuses_a_collection_whose_band_mixer_differs(tmp_path):
    """embed calibrates a mixer per collection: a head read on one names the mixers on the other."""
    from galsearch.embedder import GalsearchError, embed
    from galsearch.embedder.band_mixer import recorded_mixer
    from galsearch.embedder.training.finetune import FinetuneConfig, finetune
    from galsearch.embedder.training.labels import read_labels

    first, second = band_collection(tmp_path / "a", n=24), band_collection(tmp_path / "b", n=40)
    for coll in (first, second):
        embed(coll, "default", device="cpu", progress=False)
    first, second = open_collection(first.path), open_collection(second.path)
    assert not np.array_equal(recorded_mixer(first.encoder), recorded_mixer(second.encoder))
    labels = pd.DataFrame({"id": first.catalog["id"], "label": first.catalog["class_name"]})
    head = finetune(first, read_labels(labels, first), FinetuneConfig(device="cpu"), name="shape").head
    with pytest.raises(GalsearchError, match=r"another band mixer.*calibrate-bands"):
        head.predict_scores(second)
