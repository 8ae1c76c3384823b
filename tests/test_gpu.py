"""The CUDA paths give what the CPU gives: embedding, training, fine-tuning and search on a GPU.

Skipped where torch sees no CUDA GPU (CI has none). On a GPU machine: `pytest tests/test_gpu.py`;
the FAISS-GPU test also needs the faiss-gpu wheel (docs/getting-started.md, GPU users).
"""

from __future__ import annotations

import faiss
import numpy as np
import pytest
import torch
from conftest import TINY_ENCODER, write_blob_npz
from test_index_scale import embedding_like
from test_index_store import brute_force, clustered, recall

from galsearch.embedder import embed, ingest, load_encoder, open_collection
from galsearch.embedder.training.finetune import FinetuneConfig, finetune
from galsearch.embedder.training.heads import load_head
from galsearch.embedder.training.labels import read_labels
from galsearch.embedder.training.pretrain import pretrain
from galsearch.index import build_index, search
from galsearch.index.compressed import RERANK_FACTOR
from galsearch.index.store import index_vectors

DEVICE = "cuda"
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to torch")
BF16_COSINE = 0.99  # least cosine between a CPU (float32) and a CUDA (bf16 autocast) embedding


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("tta", [False, True])
def test_embeddings_match_the_cpu(blob_collection, tta):
    report = embed(blob_collection, TINY_ENCODER, tta=tta, device=DEVICE, progress=False)
    assert report.embedded == 64
    coll = open_collection(blob_collection.path)
    on_cpu = load_encoder(TINY_ENCODER, "cpu").embed(coll.images, tta=tta)
    assert row_cosines(coll.embeddings, on_cpu).min() > BF16_COSINE


def test_pretraining_loss_falls_and_the_checkpoint_runs_on_the_cpu(tmp_path):
    ingest(write_blob_npz(tmp_path / "b.npz", 128), tmp_path / "c", progress=False)
    out = tmp_path / "enc.safetensors"
    tiny = {"architecture": "test_convnext", "input_size": 32, "batch_size": 32, "epochs": 6}
    report = pretrain([tmp_path / "c"], out, **tiny, device=DEVICE, progress=False)
    assert report.log[-1]["loss"] < 0.8 * report.log[0]["loss"]
    images = open_collection(tmp_path / "c").images[:16]
    on_cpu = load_encoder(str(out), "cpu").embed(images)
    assert row_cosines(report.encoder.embed(images), on_cpu).min() > BF16_COSINE


def test_unfrozen_head_learns_and_reloads_on_the_cpu(blob_collection):
    embed(blob_collection, TINY_ENCODER, device=DEVICE, progress=False)
    coll = open_collection(blob_collection.path)
    table = coll.catalog[["id"]].assign(label=coll.catalog["class_name"])
    config = FinetuneConfig(unfreeze=2, epochs=15, lr=3e-3, device=DEVICE)
    result = finetune(coll, read_labels(table, coll, "classify"), config, name="shape")
    assert result.metrics["balanced_accuracy"] >= 0.85  # chance: 0.5
    on_cpu = load_head(result.folder, "cpu").predict_scores(coll)
    assert np.abs(on_cpu - result.head.predict_scores(coll)).max() < 0.05


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_exact_search_on_the_gpu_is_exact(metric):
    vectors = clustered(5000)
    queries = vectors[:40] + 0.1
    rows = index_vectors(vectors, "Flat", metric, device=DEVICE, progress=False).search(queries, 10)[1]
    assert recall(rows, brute_force(vectors, queries, 10, metric)) >= 0.99  # float ties may swap


@pytest.mark.skipif(not hasattr(faiss, "StandardGpuResources"), reason="faiss-gpu is not installed")
@pytest.mark.parametrize("factory", ["IVF64,Flat", "IVF64,PQ16"])
def test_faiss_gpu_indexes_recall_what_the_cpu_recalls(factory):
    vectors, queries = np.split(clustered(10_200, dim=48), [10_000])
    truth = brute_force(vectors, queries, 10, "cosine")
    recalls = {}
    for device in ("cpu", DEVICE):
        found = index_vectors(vectors, factory, device=device, progress=False).search(queries, 10)[1]
        recalls[device] = recall(found, truth)
    assert recalls[DEVICE] >= recalls["cpu"] - 0.02, recalls


@pytest.mark.skipif(not hasattr(faiss, "StandardGpuResources"), reason="faiss-gpu is not installed")
@pytest.mark.parametrize("factory", ["IVF64,PQ12", "IVF64,SQ8"])
def test_compressed_indexes_built_on_the_gpu_rerank_to_exact_neighbours(factory):
    """Fast-scan PQ has no FAISS-GPU version: on a GPU the compressed structures are 8-bit IVF-PQ or SQ."""
    vectors, queries = np.split(embedding_like(10_200, dim=48), [10_000])
    index = index_vectors(vectors, factory, device=DEVICE, progress=False)
    assert index.rerank == RERANK_FACTOR and index._fast is not index.index  # searched on the GPU
    assert recall(index.search(queries, 10)[1], brute_force(vectors, queries, 10, "cosine")) >= 0.95


def test_search_by_id_agrees_with_the_cpu(blob_collection):
    embed(blob_collection, TINY_ENCODER, device="cpu", progress=False)
    coll = open_collection(blob_collection.path)
    build_index(coll, device=DEVICE, progress=False)
    found = search(coll, ids=["blob-0-0005"], k=10)
    expected = brute_force(coll.embeddings, coll.embeddings[[5]], 11, "cosine")[0]
    assert found["id"].tolist() == coll.catalog["id"].iloc[expected[1:]].tolist()
