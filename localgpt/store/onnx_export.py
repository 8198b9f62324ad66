"""ONNX export of transformers models with optimum, optional dynamic int8 quantization, and its check.

:func:`export_folder` turns a transformers model folder into an ONNX one in place: ``model.onnx``
(fp32) next to the config and tokenizer files, and with ``int8`` also ``model_quantized.onnx``
(dynamic int8 by onnxruntime through optimum's ``ORTQuantizer``, AVX512-VNNI or AVX2 settings
picked from this CPU). Text encoders are then checked on a fixed probe set:

* ONNX fp32 against PyTorch: the largest absolute difference of the outputs;
* int8 against fp32: the lowest cosine of the (mean-pooled) embeddings for ``feature-extraction``,
  the top-1 agreement and the largest absolute difference of the logits for classifiers.

int8 is quantization noise, not free: it becomes the default file (``options.onnx_file``) only when
the probes agree at least as much as :data:`COSINE_MIN` / :data:`TOP1_MIN` say; otherwise fp32 stays
the default and the int8 file is kept beside it, with the figures in ``options.int8_agreement``.
Models whose outputs cannot be probed (images, audio, generation) keep fp32 as the default too.

Example::

    from localgpt.store.onnx_export import export_model
    card = export_model(Path("model_store"), "all-minilm-l6-v2", int8=True)
    print(card.options["onnx_file"], card.options["int8_agreement"])
"""

from __future__ import annotations

import platform
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from localgpt.errors import StoreError
from localgpt.fileio import print_err
from localgpt.schema import ModelCard
from localgpt.store.catalog import MANIFEST, PARTIAL, Catalog, hash_folder, remove_tree, valid_id

Progress = Callable[[str], None]
FP32_FILE = "model.onnx"
INT8_FILE = "model_quantized.onnx"
COSINE_MIN = 0.99  # int8 embeddings must keep cosine >= this to fp32 on every probe
TOP1_MIN = 0.99  # int8 classifiers must pick the same top label on >= 99 % of probe positions
PYTORCH_WEIGHTS = ("*.safetensors", "pytorch_model*.bin", "*.pt")

# transformers pipeline name -> optimum export task (where they differ)
_EXPORT_TASK = {
    "zero-shot-classification": "text-classification",
    "sentiment-analysis": "text-classification",
    "ner": "token-classification",
    "summarization": "text2text-generation",
    "translation": "text2text-generation",
    "conversational": "text-generation",
}
# pipelines whose outputs the probe set can compare, and the transformers class that gives PyTorch's
_PROBED = {
    "feature-extraction": "AutoModel",
    "text-classification": "AutoModelForSequenceClassification",
    "zero-shot-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "question-answering": "AutoModelForQuestionAnswering",
    "fill-mask": "AutoModelForMaskedLM",
}

PROBES = (
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on the stage.",
    "Stock markets fell sharply after the announcement.",
    "I really enjoyed this film, the acting was wonderful.",
    "This is the worst service I have ever had.",
    "Where is the nearest train station?",
    "Water boils at one hundred degrees Celsius at sea level.",
    "She sent the invoice to Acme Corporation in Berlin on Monday.",
    "Two kittens are sleeping on a warm blanket.",
    "Please translate this sentence into French.",
    "The committee postponed its decision until next year.",
    "ok",
)


def export_task(pipeline: str) -> str:
    """The optimum export task for a transformers pipeline name."""
    if pipeline.startswith("translation"):
        return "text2text-generation"
    return _EXPORT_TASK.get(pipeline, pipeline)


def cpu_quantization() -> str:
    """The ``AutoQuantizationConfig`` preset that suits this CPU: avx512_vnni, avx2 or arm64."""
    if platform.machine().lower() in ("arm64", "aarch64"):
        return "arm64"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "avx2"
    return "avx512_vnni" if "avx512_vnni" in flags else "avx2"


def int8_is_default(pipeline: str, agreement: dict[str, Any] | None) -> bool:
    """Whether measured int8 agreement passes the documented thresholds (unmeasured never passes)."""
    if not agreement:
        return False
    if pipeline == "feature-extraction":
        return float(agreement.get("min_cosine", -1.0)) >= COSINE_MIN
    return float(agreement.get("top1_agreement", 0.0)) >= TOP1_MIN


def _export(folder: Path, out: Path, task: str, say: Progress) -> None:
    """Run optimum's exporter on ``folder`` into ``out`` (transformers library, CPU, no extra validation)."""
    from optimum.exporters.onnx import main_export

    say(f"exporting {folder.name} to ONNX ({task}) ...")
    try:
        # library_name="transformers": a sentence-transformers folder would otherwise export pooled outputs
        # that ORTModelForFeatureExtraction cannot load
        main_export(str(folder), output=str(out), task=task, library_name="transformers", device="cpu",
                    do_validation=False)
    except Exception as e:  # optimum and torch.onnx raise many unrelated types
        raise StoreError(f"ONNX export of {folder.name} ({task}) failed: {type(e).__name__}: {e}",
                         hint="check that the folder is a transformers model this task fits") from e


def _quantize(folder: Path, say: Progress) -> str:
    """Write ``model_quantized.onnx`` (dynamic int8) next to ``model.onnx``; returns the preset used."""
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    preset = cpu_quantization()
    say(f"quantizing {folder.name} to dynamic int8 ({preset}) ...")
    config = getattr(AutoQuantizationConfig, preset)(is_static=False, per_channel=True)  # per-tensor: worse agreement
    work = folder / ".int8"
    remove_tree(work)
    try:
        ORTQuantizer.from_pretrained(folder, file_name=FP32_FILE).quantize(config, save_dir=work)
    except Exception as e:
        raise StoreError(f"int8 quantization of {folder.name} failed: {type(e).__name__}: {e}") from e
    produced = work / INT8_FILE
    if not produced.is_file():
        raise StoreError(f"int8 quantization of {folder.name} wrote no {INT8_FILE}")
    shutil.move(str(produced), folder / INT8_FILE)
    remove_tree(work)
    return preset


def _session(path: Path, threads: int) -> Any:
    """A CPU onnxruntime session with a fixed thread count."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def probe_inputs(folder: Path, texts: Sequence[str] = PROBES) -> dict[str, Any]:
    """The probe texts tokenized by the folder's tokenizer (numpy, padded, at most 128 tokens)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    encoded = tokenizer(list(texts), padding=True, truncation=True, max_length=128, return_tensors="np")
    return {k: v.astype("int64") for k, v in encoded.items()}


def run_onnx(path: Path, feed: dict[str, Any], threads: int = 2) -> list[Any]:
    """Every output of an ONNX model for ``feed`` (inputs it does not take are left out)."""
    session = _session(path, threads)
    names = {i.name for i in session.get_inputs()}
    outputs: list[Any] = session.run(None, {k: v for k, v in feed.items() if k in names})
    return outputs


def run_pytorch(folder: Path, pipeline: str, feed: dict[str, Any]) -> list[Any]:
    """The outputs of the folder's PyTorch model for ``feed``, in the ONNX export's order."""
    import torch
    import transformers

    cls = getattr(transformers, _PROBED[pipeline])
    model = cls.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v) for k, v in feed.items()})
    if pipeline == "question-answering":
        return [out.start_logits.numpy(), out.end_logits.numpy()]
    first = out.last_hidden_state if pipeline == "feature-extraction" else out.logits
    return [first.numpy()]


def mean_pool(hidden: Any, mask: Any) -> Any:
    """Mean of the token vectors where ``mask`` is 1."""
    import numpy as np

    weights = mask[:, :, None].astype(np.float32)
    return (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)


def compare(pipeline: str, ref: Sequence[Any], other: Sequence[Any], mask: Any) -> dict[str, float]:
    """Agreement of two output lists: max abs diff, and min cosine (embeddings) or top-1 agreement (logits)."""
    import numpy as np

    diff = max(float(np.max(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))))
               for a, b in zip(ref, other, strict=False))
    if pipeline == "feature-extraction":
        a, b = mean_pool(ref[0], mask), mean_pool(other[0], mask)
        cos = (a * b).sum(axis=1) / np.clip(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12, None)
        return {"max_abs_diff": diff, "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean())}
    same, total = 0, 0
    for a, b in zip(ref, other, strict=False):
        top_a, top_b = np.argmax(a, axis=-1), np.argmax(b, axis=-1)
        if top_a.ndim == 2 and pipeline == "token-classification":  # only real tokens count
            keep = mask.astype(bool)
            top_a, top_b = top_a[keep], top_b[keep]
        same += int((top_a == top_b).sum())
        total += int(top_a.size)
    return {"max_abs_diff": diff, "top1_agreement": same / max(total, 1)}


def export_folder(folder: Path, pipeline: str, *, int8: bool = False, keep_original: bool = False,
                  threads: int = 2, progress: Progress | None = None) -> dict[str, Any]:
    """Export the transformers model in ``folder`` to ONNX in place; returns the card options to record.

    Args:
        folder: a transformers model folder (config, weights, tokenizer); gains ``model.onnx``.
        pipeline: the transformers pipeline name the model serves (``options.pipeline``).
        int8: also write ``model_quantized.onnx`` and measure its agreement with fp32.
        keep_original: keep the PyTorch weights (removed by default once the export has succeeded).
        threads: onnxruntime threads for the probes.
        progress: called with one line per step (default: stderr).

    The options returned: ``onnx_file`` (the default file), ``onnx_export`` (task, fp32-vs-PyTorch figures),
    and with ``int8`` also ``int8_file``, ``int8_agreement`` and ``int8_thresholds``.

    Example::

        opts = export_folder(Path("store/tiny.partial"), "text-classification", int8=True)
    """
    say = progress or print_err
    folder = Path(folder)
    task = export_task(pipeline)
    out = folder / ".onnx-export"
    remove_tree(out)
    _export(folder, out, task, say)
    made = sorted(p for p in out.iterdir() if p.suffix == ".onnx" or p.name.endswith(".onnx_data"))
    if not made:
        raise StoreError(f"ONNX export of {folder.name} wrote no .onnx file")
    for p in made:
        shutil.move(str(p), folder / p.name)
    for extra in out.iterdir():  # configs the exporter completed (e.g. generation_config.json) fill gaps only
        if extra.is_file() and not (folder / extra.name).exists():
            shutil.move(str(extra), folder / extra.name)
    remove_tree(out)
    single = [p.name for p in made if p.suffix == ".onnx"] == [FP32_FILE]

    opts: dict[str, Any] = {"onnx_file": FP32_FILE if single else made[0].name,
                            "onnx_export": {"task": task, "files": [p.name for p in made]}}
    probe = single and pipeline in _PROBED and (folder / "config.json").is_file()
    feed: dict[str, Any] = {}
    fp32_out: list[Any] = []
    if probe:
        feed = probe_inputs(folder)
        fp32_out = run_onnx(folder / FP32_FILE, feed, threads)
        torch_out = run_pytorch(folder, pipeline, feed)
        opts["onnx_export"]["fp32_vs_pytorch"] = compare(pipeline, torch_out, fp32_out, feed["attention_mask"])
        say(f"ONNX fp32 vs PyTorch on {len(PROBES)} probes: {opts['onnx_export']['fp32_vs_pytorch']}")
    if int8:
        if not single:
            raise StoreError(f"int8 quantization here covers single-file ONNX exports; {folder.name} exported "
                             f"{len(made)} files", hint="export without --int8")
        preset = _quantize(folder, say)
        opts["int8_file"] = INT8_FILE
        opts["int8_thresholds"] = {"min_cosine": COSINE_MIN, "top1_agreement": TOP1_MIN}
        agreement: dict[str, Any] | None = None
        if probe:
            agreement = compare(pipeline, fp32_out, run_onnx(folder / INT8_FILE, feed, threads),
                                feed["attention_mask"])
            agreement["probes"] = len(PROBES)
        opts["int8_agreement"] = {"quantization": f"dynamic int8 ({preset})", "measured": agreement is not None,
                                  **(agreement or {})}
        if int8_is_default(pipeline, agreement):
            opts["onnx_file"] = INT8_FILE
            say(f"int8 agrees with fp32 ({agreement}): {INT8_FILE} is the default")
        else:
            say(f"int8 agreement {agreement or 'not measured'} is below the thresholds: {FP32_FILE} stays the "
                "default")
    if not keep_original:
        for pattern in PYTORCH_WEIGHTS:
            for p in folder.rglob(pattern):
                if p.is_file():
                    p.unlink()
    return opts


def export_model(store: Path, model_id: str, *, new_id: str | None = None, int8: bool = False,
                 keep_original: bool = False, threads: int = 2, progress: Progress | None = None) -> ModelCard:
    """Export installed transformers model ``model_id`` to ONNX as a new model (default id ``<id>-onnx``).

    The copy is built in ``<store>/<new id>.partial`` and registered in one rename; the original stays.
    Returns the new card (backend ``transformers``, format ``onnx``).

    Example::

        export_model(Path("model_store"), "all-minilm-l6-v2", int8=True)  # -> all-minilm-l6-v2-onnx
    """
    say = progress or print_err
    catalog = Catalog(Path(store))
    card = catalog.get(model_id)
    if card.backend != "transformers" or card.format != "pytorch":
        raise StoreError(f"model {model_id} is {card.backend}/{card.format}; ONNX export takes a transformers "
                         "model in PyTorch format")
    new_id = new_id or f"{model_id}-onnx"
    if not valid_id(new_id) or new_id == model_id:
        raise StoreError(f"invalid id for the export: {new_id!r}", hint="give another --id")
    assert card.path is not None
    partial = catalog.store / (new_id + PARTIAL)
    remove_tree(partial)
    try:
        shutil.copytree(card.path, partial, ignore=shutil.ignore_patterns(MANIFEST))
        pipeline = str(card.options.get("pipeline") or card.tasks[0])
        opts = export_folder(partial, pipeline, int8=int8, keep_original=keep_original, threads=threads,
                             progress=say)
        new = card.model_copy(update={
            "id": new_id, "format": "onnx", "files": hash_folder(partial), "options": {**card.options, **opts},
            "description": card.description + " (ONNX export" + (", int8 available" if int8 else "") + ")",
            "path": None})
        done = catalog.add(new, partial)
    except BaseException:
        remove_tree(partial)
        raise
    say(f"{new_id}: registered ({opts['onnx_file']} is the default file)")
    return done
