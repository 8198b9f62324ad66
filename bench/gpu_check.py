"""The GPU check: on a machine with an NVIDIA GPU and no network, localgpt's three GPU paths, one table.

1. planning with the controller LLM fully offloaded (``n_gpu_layers=-1``): LlamaCppLLM + Planner under the
   production plan schema, on a tiny random GGUF with SmolLM2's tokenizer (bench/tiny_gguf.py; a real model
   does not travel) — every reply must be a valid plan;
2. an ONNX expert session on ``CUDAExecutionProvider`` (localgpt's open_session with device=cuda), on a tiny
   convolutional model exported here, its output checked against PyTorch's;
3. a tiny Stable Diffusion pipeline (random weights, built here) through DiffusersExpert on cuda in fp16.

Run by bench/gpu_check.sh (which installs what the machine lacks); prints one table and writes JSON.

    python3 bench/gpu_check.py --gguf .gpu/tiny.gguf [--out gpu_check.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

Row = dict[str, Any]


def check_gpu() -> Row:
    import torch

    if not torch.cuda.is_available():
        return {"ok": False, "detail": "torch sees no CUDA GPU"}
    props = torch.cuda.get_device_properties(0)
    return {"ok": True, "detail": f"{props.name}, {props.total_memory / 2**30:.0f} GiB, torch {torch.__version__}"}


def check_llm(gguf: Path, n_requests: int) -> Row:
    import jsonschema
    import llama_cpp

    from bench.varied_requests import REQUESTS
    from localgpt.llm.llamacpp import LlamaCppLLM
    from localgpt.planning.planner import Planner

    offload = bool(llama_cpp.llama_supports_gpu_offload())
    llm = LlamaCppLLM(gguf, n_gpu_layers=-1, n_threads=8, prompt_cache_mb=0)
    planner = Planner(llm)
    valid = 0
    tokens = 0
    start = time.perf_counter()
    for request, files in REQUESTS[:n_requests]:
        raw = llm.generate(planner.messages(request, files), schema=planner.schema, max_tokens=planner.max_tokens())
        tokens += llm.count_tokens(raw)
        try:
            jsonschema.validate(json.loads(raw), planner.schema)
            valid += 1
        except (ValueError, jsonschema.ValidationError):
            pass
    seconds = time.perf_counter() - start
    llm.close()
    return {"ok": offload and valid == n_requests, "valid": valid, "requests": n_requests,
            "seconds_per_plan": round(seconds / n_requests, 2), "tokens_per_s": round(tokens / seconds, 1),
            "detail": f"llama.cpp {'with' if offload else 'WITHOUT'} GPU offload, n_gpu_layers=-1; "
                      f"{valid}/{n_requests} valid plans, {tokens} tokens ({gguf.name}: random weights)"}


def check_onnx(tmp: Path) -> Row:
    import numpy as np
    import onnxruntime
    import torch

    from localgpt.config import Settings
    from localgpt.experts.onnx import CUDA, open_session

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(16, 8, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()
    x = torch.randn(2, 3, 64, 64)
    path = tmp / "tiny-cnn.onnx"
    torch.onnx.export(net, (x,), str(path), input_names=["x"], output_names=["y"], opset_version=17,
                      dynamo=False)
    available = onnxruntime.get_available_providers()
    session = open_session(path, Settings(device="cuda", threads=4), "tiny-cnn")  # raises when CUDA is absent
    used = session.get_providers()
    start = time.perf_counter()
    for _ in range(20):
        (y,) = session.run(None, {"x": x.numpy()})
    ms = (time.perf_counter() - start) / 20 * 1000
    with torch.no_grad():
        expected = net(x).numpy()
    close = bool(np.allclose(y, expected, atol=1e-3))
    return {"ok": used[0] == CUDA and close, "ms_per_run": round(ms, 2),
            "detail": f"onnxruntime {onnxruntime.__version__}, session providers {used} (available {available}); "
                      f"output {'matches' if close else 'DIFFERS from'} PyTorch"}


def check_diffusers(tmp: Path) -> Row:
    import torch
    from PIL import Image

    from localgpt.config import Settings
    from localgpt.experts import expert_class
    from localgpt.experts.base import ExpertContext
    from localgpt.runtime.runs import RunDir
    from localgpt.testing import build_sd

    card = build_sd(tmp / "store")
    settings = Settings(store=tmp / "store", runs_dir=tmp / "runs", threads=4, device="cuda")
    expert = expert_class(card.backend)(card, ExpertContext(settings=settings))
    start = time.perf_counter()
    expert.load()
    out = expert.run("text-to-image", {"text": "a red square"}, RunDir(tmp / "run"))
    seconds = time.perf_counter() - start
    dtype = str(next(expert._pipe.unet.parameters()).dtype)  # noqa: SLF001 - the check is about the dtype
    device = str(next(expert._pipe.unet.parameters()).device)  # noqa: SLF001
    with Image.open(out.outputs["image"]) as img:
        size = img.size
    expert.close()
    torch.cuda.empty_cache()
    return {"ok": dtype == "torch.float16" and device.startswith("cuda") and out.data.get("runtime") == "pytorch/cuda",
            "seconds": round(seconds, 2),
            "detail": f"tiny StableDiffusionPipeline on {device} in {dtype}, runtime {out.data.get('runtime')}, "
                      f"{size[0]}x{size[1]} PNG"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gguf", type=Path, default=REPO / ".gpu" / "tiny.gguf")
    parser.add_argument("--requests", type=int, default=10, help="plans made on the GPU")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    checks: list[tuple[str, Callable[[], Row]]] = [
        ("gpu", check_gpu),
        ("llm plans, n_gpu_layers=-1", lambda: check_llm(args.gguf, args.requests)),
        ("onnx expert, CUDAExecutionProvider", lambda: check_onnx(tmp)),
        ("diffusers pipeline, fp16", lambda: check_diffusers(tmp)),
    ]
    rows: list[Row] = []
    for name, check in checks:
        start = time.perf_counter()
        try:
            row = check()
        except Exception as exc:  # each check reports its own failure; the others still run
            traceback.print_exc()
            row = {"ok": False, "detail": f"{type(exc).__name__}: {str(exc)[:300]}"}
        row = {"check": name, "wall_s": round(time.perf_counter() - start, 1), **row}
        rows.append(row)
        print(json.dumps(row), flush=True)
    width = max(len(r["check"]) for r in rows)
    print("\n" + f"{'check':{width}}  result  wall s  detail")
    for r in rows:
        print(f"{r['check']:{width}}  {'PASS' if r['ok'] else 'FAIL':6}  {r['wall_s']:6.1f}  {r['detail']}")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
