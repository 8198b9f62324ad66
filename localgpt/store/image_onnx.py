"""EfficientNet-Lite image classifiers as ONNX, built from a PyTorch state dict without PyTorch.

The network is written out with ``onnx.helper`` from the weights read by
:mod:`localgpt.store.torch_pickle`: every convolution has its batch norm folded in (``w * g / sqrt(v + eps)``,
``b - m * g / sqrt(v + eps)``), ReLU6 is ``Clip(0, 6)``, depthwise convolutions are grouped ones, and
TensorFlow's "SAME" padding (the checkpoints come from TensorFlow) is written as the fixed, uneven pads
it gives at the model's input size. Lite models have no squeeze-and-excitation and no swish.

An export is checked before it is kept: the ONNX output on a fixed probe image must match the logits the
PyTorch reference model (``efficientnet-lite-pytorch``) gave on the same input, pinned here as data
(:data:`LITE0_PROBE_LOGITS`), within :data:`PROBE_TOLERANCE`.

Example::

    from localgpt.store.image_onnx import export_efficientnet_lite, preprocess
    export_efficientnet_lite(Path("efficientnet-lite0.pth"), Path("model.onnx"))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from localgpt.errors import StoreError
from localgpt.store.torch_pickle import load_state_dict

if TYPE_CHECKING:
    import onnx
    from PIL import Image

Progress = Callable[[str], None]
OPSET = 17
BN_EPS = 1e-3
INPUT = "pixel_values"
OUTPUT = "logits"
# Preprocessing the TensorFlow Lite checkpoints were trained with: RGB in [0, 255], (x - 127) / 128,
# short side resized to RESIZE then a centre crop of SIZE.
MEAN = 127.0
STD = 128.0
SIZE = 224
RESIZE = 256


@dataclass(frozen=True)
class Stage:
    """``repeats`` MBConv blocks: ``kernel`` x ``kernel`` depthwise, the first with ``stride``, channels
    widened ``expand`` times inside, ``inputs`` -> ``outputs`` channels."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    inputs: int
    outputs: int


# efficientnet_lite_builder.py's block strings for Lite0 (width and depth 1.0, 224 px)
LITE0_STAGES: tuple[Stage, ...] = (
    Stage(1, 3, 1, 1, 32, 16), Stage(2, 3, 2, 6, 16, 24), Stage(2, 5, 2, 6, 24, 40), Stage(3, 3, 2, 6, 40, 80),
    Stage(3, 5, 1, 6, 80, 112), Stage(4, 5, 2, 6, 112, 192), Stage(1, 3, 1, 6, 192, 320),
)

# PyTorch's logits (efficientnet-lite-pytorch 0.1.0 on efficientnet-lite0-57934424.pth, eval mode, torch 2.x CPU)
# for :func:`probe_input`: the five largest as (class, logit) and the logits of classes 0, 500, 999.
LITE0_PROBE_LOGITS: tuple[tuple[int, float], ...] = (
    (741, 8.62903), (906, 6.24847), (911, 5.83363), (772, 5.35298), (556, 4.51983), (0, -0.47727), (500, -2.09201),
    (999, -1.54939),
)
PROBE_TOLERANCE = 2e-3


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TensorFlow "SAME" padding at input ``size``: (before, after, output size)."""
    out = math.ceil(size / stride)
    pad = max((out - 1) * stride + kernel - size, 0)
    return pad // 2, pad - pad // 2, out


class _Graph:
    """Collects nodes and initializers while the network is written out."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        self.weights = weights
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.used: set[str] = set()
        self.count = 0

    def take(self, name: str) -> np.ndarray:
        if name not in self.weights:
            raise StoreError(f"the checkpoint has no tensor {name}", hint="this is not an EfficientNet-Lite checkpoint")
        self.used.add(name)
        return self.weights[name].astype(np.float32)

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: Sequence[str], **attrs: Any) -> str:
        from onnx import helper

        self.count += 1
        out = f"{op.lower()}_{self.count}"
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=f"{op}_{self.count}", **attrs))
        return out

    def conv_bn(self, x: str, conv: str, bn: str, size: int, stride: int, groups: int = 1) -> tuple[str, int]:
        """A bias-free convolution with its batch norm folded in; returns the output and its size."""
        w = self.take(f"{conv}.weight")
        gamma, beta = self.take(f"{bn}.weight"), self.take(f"{bn}.bias")
        mean, var = self.take(f"{bn}.running_mean"), self.take(f"{bn}.running_var")
        self.used.add(f"{bn}.num_batches_tracked")
        scale = gamma / np.sqrt(var + np.float32(BN_EPS))
        kernel = int(w.shape[-1])
        before, after, out = _same_pads(size, kernel, stride)
        wname = self.const(f"{conv}.weight", (w * scale[:, None, None, None]).astype(np.float32))
        bname = self.const(f"{conv}.bias", (beta - mean * scale).astype(np.float32))
        y = self.node("Conv", [x, wname, bname], kernel_shape=[kernel, kernel], strides=[stride, stride],
                      pads=[before, before, after, after], group=groups)
        return y, out

    def relu6(self, x: str) -> str:
        return self.node("Clip", [x, "relu6_min", "relu6_max"])


def build_efficientnet_lite(weights: dict[str, np.ndarray], stages: Sequence[Stage] = LITE0_STAGES,
                            size: int = SIZE) -> onnx.ModelProto:
    """The ONNX model (input ``pixel_values`` [N, 3, size, size], output ``logits`` [N, classes]) of an
    EfficientNet-Lite state dict; StoreError when the weights do not fit ``stages``."""
    from onnx import TensorProto, checker, helper

    g = _Graph(weights)
    g.const("relu6_min", np.array(0.0, dtype=np.float32))
    g.const("relu6_max", np.array(6.0, dtype=np.float32))
    x, hw = g.conv_bn(INPUT, "_conv_stem", "_bn0", size, 2)
    x = g.relu6(x)
    index = 0
    for stage in stages:
        for r in range(stage.repeats):
            stride, cin = (stage.stride, stage.inputs) if r == 0 else (1, stage.outputs)
            prefix = f"_blocks.{index}"
            dw = g.weights.get(f"{prefix}._depthwise_conv.weight")
            if dw is None or dw.shape[-1] != stage.kernel or dw.shape[0] != cin * stage.expand:
                raise StoreError(f"block {index} of the checkpoint does not match EfficientNet-Lite's layout",
                                 hint="the export knows EfficientNet-Lite0 only")
            y, hw_in = x, hw
            if stage.expand != 1:
                y, _ = g.conv_bn(y, f"{prefix}._expand_conv", f"{prefix}._bn0", hw, 1)
                y = g.relu6(y)
            y, hw = g.conv_bn(y, f"{prefix}._depthwise_conv", f"{prefix}._bn1", hw_in, stride,
                              groups=cin * stage.expand)
            y = g.relu6(y)
            y, _ = g.conv_bn(y, f"{prefix}._project_conv", f"{prefix}._bn2", hw, 1)
            if stride == 1 and cin == stage.outputs:
                y = g.node("Add", [y, x])
            x = y
            index += 1
    if any(k.startswith(f"_blocks.{index}.") for k in weights):
        raise StoreError(f"the checkpoint has more than {index} blocks",
                         hint="the export knows EfficientNet-Lite0 only")
    x, _ = g.conv_bn(x, "_conv_head", "_bn1", hw, 1)
    x = g.relu6(x)
    x = g.node("GlobalAveragePool", [x])
    x = g.node("Flatten", [x], axis=1)
    fc_w, fc_b = g.take("_fc.weight"), g.take("_fc.bias")
    g.nodes.append(helper.make_node("Gemm", [x, g.const("_fc.weight", fc_w), g.const("_fc.bias", fc_b)], [OUTPUT],
                                    name="Gemm_fc", transB=1))
    unused = sorted(set(weights) - g.used)
    if unused:
        raise StoreError(f"the checkpoint has tensors the EfficientNet-Lite graph does not use: {unused[:3]}",
                         hint="the export knows EfficientNet-Lite0 only")
    graph = helper.make_graph(
        g.nodes, "efficientnet_lite",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", int(fc_w.shape[0])])],
        initializer=g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="localgpt")
    model.ir_version = 8  # readable by onnxruntime >= 1.14
    checker.check_model(model)
    return model


def probe_input() -> np.ndarray:
    """A fixed, already normalised [1, 3, SIZE, SIZE] input (smooth colour waves), the export's check image."""
    i = np.arange(SIZE, dtype=np.float64)[:, None]
    j = np.arange(SIZE, dtype=np.float64)[None, :]
    planes = [np.sin(i * 0.05 * (c + 1)) * np.cos(j * 0.03 * (c + 2)) for c in range(3)]
    return np.stack(planes)[None].astype(np.float32) * np.float32(0.9)


def run_onnx(path: Path, batch: np.ndarray, threads: int = 1) -> np.ndarray:
    """The model's logits for a preprocessed batch, on the CPU."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    out: np.ndarray = session.run([OUTPUT], {INPUT: batch})[0]
    return out


def check_probe(path: Path, reference: Sequence[tuple[int, float]] = LITE0_PROBE_LOGITS,
                tolerance: float = PROBE_TOLERANCE) -> float:
    """The largest difference between the model's logits on :func:`probe_input` and PyTorch's pinned ones;
    StoreError when it exceeds ``tolerance``."""
    logits = run_onnx(path, probe_input())[0]
    worst = max((abs(float(logits[k]) - v) for k, v in reference), default=0.0)
    if worst > tolerance:
        raise StoreError(f"the ONNX export of {path.name} differs from PyTorch's output by {worst:.4g} "
                         f"(allowed {tolerance:g})", hint="the export is wrong for this onnx/onnxruntime; report it")
    return worst


def export_efficientnet_lite(pth: Path, out: Path, stages: Sequence[Stage] = LITE0_STAGES) -> Path:
    """Write the ONNX model of the checkpoint ``pth`` to ``out`` (no PyTorch needed)."""
    import onnx

    model = build_efficientnet_lite(load_state_dict(pth), stages)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(out))
    return out


def quantize_int8(src: Path, dst: Path) -> Path:
    """Dynamic int8 quantization of ``src`` (weights int8, activations quantized at run time)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QUInt8)
    return dst


def read_labels(path: Path) -> list[str]:
    """The class names of a ``{"0": "tench, Tinca tinca", ...}`` file, index order; StoreError if malformed."""
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        labels = [str(data[str(i)]) for i in range(len(data))]
    except (OSError, ValueError, KeyError) as exc:
        raise StoreError(f"class names file {path} is unreadable: {exc}") from exc
    return labels


def load_rgb(image: str | Path | Image.Image) -> Image.Image:
    """An RGB Pillow image of a file or image (transparency composited on white)."""
    from PIL import Image

    img = image if isinstance(image, Image.Image) else Image.open(image)
    img.load()
    if img.mode in ("RGBA", "LA", "P"):
        img = img.convert("RGBA")
        canvas = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(canvas, img)
    return img.convert("RGB")


def preprocess(images: Sequence[str | Path | Image.Image], size: int = SIZE, resize: int = RESIZE) -> np.ndarray:
    """A normalised [N, 3, size, size] float32 batch: short side to ``resize``, centre crop, (x - 127) / 128."""
    from PIL import Image

    rows = []
    for image in images:
        img = load_rgb(image)
        w, h = img.size
        scale = resize / min(w, h)
        img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BICUBIC)
        w, h = img.size
        left, top = (w - size) // 2, (h - size) // 2
        img = img.crop((left, top, left + size, top + size))
        rows.append(np.asarray(img, dtype=np.float32).transpose(2, 0, 1))
    return ((np.stack(rows) - np.float32(MEAN)) / np.float32(STD)).astype(np.float32)


# scikit-image's colour and grey photos (the test extra) for the int8 agreement check
PROBE_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "motorcycle", "hubble_deep_field", "immunohistochemistry",
                "retina", "camera", "coins", "moon", "page", "text", "brick", "grass", "gravel", "colorwheel", "logo",
                "cell", "horse", "clock")


def probe_photos() -> list[Image.Image]:
    """Real photos from scikit-image and generated variants of each (mirrored, zoomed in, darker, brighter,
    turned a quarter): the fixed set int8 is checked on. Needs scikit-image (the test extra)."""
    from PIL import Image, ImageEnhance, ImageOps
    from skimage import data

    photos = []
    for name in PROBE_PHOTOS:
        loader = getattr(data, name, None)
        if loader is None:
            continue
        array = loader()
        if name == "motorcycle":
            array = data.stereo_motorcycle()[0]
        if array.dtype != np.uint8:
            array = (np.clip(array.astype(np.float64) / max(float(array.max()), 1e-9), 0, 1) * 255).astype(np.uint8)
        photos.append(load_rgb(Image.fromarray(array)))
    out: list[Image.Image] = []
    for img in photos:
        w, h = img.size
        out += [img, ImageOps.mirror(img), img.crop((w // 8, h // 8, w - w // 8, h - h // 8)),
                ImageEnhance.Brightness(img).enhance(0.6), ImageEnhance.Brightness(img).enhance(1.3),
                img.transpose(Image.Transpose.ROTATE_90)]
    return out


def top1_agreement(fp32: Path, int8: Path, batch: np.ndarray) -> float:
    """The share of inputs on which the int8 model's top class is the fp32 model's."""
    a = run_onnx(fp32, batch).argmax(axis=1)
    b = run_onnx(int8, batch).argmax(axis=1)
    return float((a == b).mean())


# int8 top-1 agreement with fp32 on :func:`probe_photos` (21 scikit-image photos x 6 variants = 120 inputs;
# measured by tests/integration/test_onnx_vision.py, which checks this figure): below INT8_TOP1_MIN, so
# fp32 stays the model; the int8 file is not kept.
LITE0_INT8_AGREEMENT = 0.408
INT8_TOP1_MIN = 0.99
# ONNX fp32 against PyTorch on the real photos (largest absolute logit difference, same test).
LITE0_PHOTO_MAX_ABS_DIFF = 5.7e-6


def build_pack(folder: Path, options: dict[str, Any], say: Progress) -> dict[str, Any]:
    """The pack's build step: export ``options["source"]`` to ``options["model"]`` in ``folder`` and check it
    against PyTorch's pinned probe logits; returns the figures for the card's options."""
    import time

    import onnx
    import onnxruntime

    start = time.perf_counter()
    source, target = folder / options["source"], folder / options["model"]
    export_efficientnet_lite(source, target)
    worst = check_probe(target)
    labels = read_labels(folder / options["labels"])
    if len(labels) != int(run_onnx(target, probe_input()).shape[1]):
        raise StoreError(f"{options['labels']} names {len(labels)} classes but the model has other outputs")
    seconds = time.perf_counter() - start
    say(f"exported {options['model']} without PyTorch in {seconds:.1f} s; probe logits match PyTorch's "
        f"within {worst:.2g}")
    return {
        "export": {"exporter": "localgpt.store.image_onnx (torch-free)", "onnx": onnx.__version__,
                   "onnxruntime": onnxruntime.__version__, "opset": OPSET, "seconds": round(seconds, 2),
                   "probe_max_abs_diff": worst, "photos_max_abs_diff_vs_pytorch": LITE0_PHOTO_MAX_ABS_DIFF},
        "int8_agreement": {"top1": LITE0_INT8_AGREEMENT, "probes": "probe_photos(): 120 photos and variants",
                           "method": "onnxruntime dynamic int8", "default": LITE0_INT8_AGREEMENT >= INT8_TOP1_MIN},
    }
