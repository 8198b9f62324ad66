"""ControlNet annotators: they turn a photo into the control image a conditioned generation follows.

- ``CannyExpert`` (backend ``canny``): Canny edges with OpenCV, no weights.
- ``LineExpert`` (backend ``opencv-lines``): straight-line maps in the style of M-LSD, from OpenCV's
  Line Segment Detector (probabilistic Hough lines on Canny edges where OpenCV lacks it), no weights.
- ``PoseExpert`` (backend ``mediapipe-pose``): MediaPipe's BlazePose detector and full-body landmark
  models (the tflite files shipped in the ``mediapipe`` 0.10.14 wheel), run with the LiteRT
  interpreter (``ai-edge-litert``); gives 33 keypoints and an OpenPose-style skeleton image.

Depth and segmentation maps come from the experts of ``depth-estimation`` and ``image-segmentation``;
a user's sketch for ``scribble-text-to-image`` is normalised by :func:`scribble_map`.
numpy, OpenCV and LiteRT are imported only inside methods.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localgpt.errors import ExpertError, InputError
from localgpt.experts.base import Expert, ExpertContext, ExpertOutput

if TYPE_CHECKING:
    import numpy as np

    from localgpt.runtime.runs import RunDir
    from localgpt.schema import ModelCard

REINSTALL = "reinstall it with: python download_models.py --profile test"
MAX_SIDE = 4096  # larger photos are refused: they only cost time, the control image is small anyway


def read_rgb(path: str, task: str, model: str) -> np.ndarray:
    """An input image as an RGB uint8 array; InputError when it does not decode or is too large."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if max(img.size) > MAX_SIDE:
                raise InputError(f"the image '{Path(path).name}' for {task} is {img.width}x{img.height} pixels; "
                                 f"model '{model}' takes at most {MAX_SIDE} pixels a side", "resize it first")
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"the image '{Path(path).name}' given to {task} ({model}) is not a decodable image: {exc}",
                         "give a PNG or JPEG file") from exc


def save_png(array: np.ndarray, out: RunDir) -> Path:
    """Save an RGB (or grey) uint8 array as PNG into the run folder."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return out.save(buf.getvalue(), ".png")


class CannyExpert(Expert):
    """Canny edge maps (white edges on black, 3 channels, as the canny ControlNet expects); serves
    ``canny-control``.

    Card options: ``low``/``high`` hysteresis thresholds (default: from the image's median
    brightness, 0.66x and 1.33x of it), ``blur`` (Gaussian kernel size, odd, default 3; 0 = none).

    Example::

        expert = CannyExpert(card, ExpertContext(settings))
        result = expert.run("canny-control", {"image": "photo.png"}, run_dir)
        result.outputs["image"], result.data["edge_fraction"]
    """

    TASKS = ("canny-control",)

    def run(self, task: str, inputs: dict[str, str], out: RunDir) -> ExpertOutput:
        """Trace the edges of ``image`` into a PNG control image."""
        import cv2
        import numpy as np

        self.check_task(task)
        rgb = read_rgb(inputs["image"], task, self.card.id)
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        blur = int(self.card.options.get("blur", 3))
        if blur > 1:
            grey = cv2.GaussianBlur(grey, (blur | 1, blur | 1), 0)
        median = float(np.median(grey))
        low = int(self.card.options.get("low", max(0.0, 0.66 * median)))
        high = int(self.card.options.get("high", min(255.0, max(1.33 * median, low + 1))))
        edges = cv2.Canny(grey, low, high)
        fraction = float((edges > 0).mean())
        path = save_png(np.stack([edges] * 3, axis=-1), out)
        h, w = edges.shape
        return ExpertOutput(outputs={"image": str(path)},
                            data={"thresholds": [low, high], "edge_fraction": round(fraction, 4), "size": [w, h],
                                  "runtime": f"opencv-{cv2.__version__}/cpu"})


class LineExpert(Expert):
    """Straight-line maps (white segments on black, M-LSD style, as the mlsd ControlNet expects) plus the
    segments as data; serves ``line-control``.

    Card options: ``method`` ("lsd" = OpenCV's Line Segment Detector, "hough" = probabilistic Hough
    lines on Canny edges; default lsd, hough where this OpenCV has no LSD), ``min_length`` (shortest
    segment kept, as a fraction of the image's longer side, default 0.04), ``thickness`` (pixels,
    default 1 per 512 pixels of the shorter side), ``max_segments`` (segments listed in the data,
    longest first, default 200; all are drawn).

    Example::

        expert = LineExpert(card, ExpertContext(settings))
        result = expert.run("line-control", {"image": "room.jpg"}, run_dir)
        result.outputs["image"]          # the line map, the photo's size
        result.data["segments"][0]       # [x1, y1, x2, y2] of the longest segment, in pixels
    """

    TASKS = ("line-control",)

    def run(self, task: str, inputs: dict[str, str], out: RunDir) -> ExpertOutput:
        """Find the straight line segments of ``image`` and draw them into a PNG control image."""
        import cv2
        import numpy as np

        self.check_task(task)
        opts = self.card.options
        rgb = read_rgb(inputs["image"], task, self.card.id)
        h, w = rgb.shape[:2]
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        min_length = float(opts.get("min_length", 0.04)) * max(h, w)
        method = str(opts.get("method", "lsd"))
        if method not in ("lsd", "hough"):
            raise ExpertError(f"model '{self.card.id}' names line method '{method}'",
                              "set options.method in its model.json to 'lsd' or 'hough'")
        found = _lsd_segments(grey) if method == "lsd" else None
        if found is None:
            method = "hough"
            found = _hough_segments(grey, min_length)
        lengths = np.hypot(found[:, 2] - found[:, 0], found[:, 3] - found[:, 1])
        order = np.argsort(-lengths)
        keep = order[lengths[order] >= min_length]
        name = Path(inputs["image"]).name
        if keep.size == 0:
            raise InputError(f"no straight lines of at least {min_length:.0f} pixels were found in '{name}' "
                             f"by model '{self.card.id}'",
                             "use a photo with straight edges (buildings, rooms, furniture), or lower "
                             "options.min_length in the model's model.json")
        thick = int(opts.get("thickness", max(1, round(min(h, w) / 512))))
        canvas = np.zeros((h, w, 3), dtype=np.uint8)
        for x1, y1, x2, y2 in found[keep]:
            cv2.line(canvas, (int(round(x1)), int(round(y1))), (int(round(x2)), int(round(y2))),
                     (255, 255, 255), thickness=thick, lineType=cv2.LINE_AA)
        path = save_png(canvas, out)
        listed = [[round(float(v), 1) for v in found[i]] for i in keep[:int(opts.get("max_segments", 200))]]
        longest = float(lengths[keep[0]])
        text = f"{keep.size} straight line segments (longest {longest:.0f} px)"
        return ExpertOutput(outputs={"image": str(path), "text": text},
                            data={"count": int(keep.size), "segments": listed, "method": method,
                                  "min_length": round(min_length, 1), "size": [w, h],
                                  "line_fraction": round(float((canvas[..., 0] > 0).mean()), 4),
                                  "runtime": f"opencv-{cv2.__version__}/cpu"})


def _lsd_segments(grey: np.ndarray) -> np.ndarray | None:
    """Segments (n x 4 floats: x1, y1, x2, y2) from OpenCV's Line Segment Detector; None when this
    OpenCV build has no LSD (it was left out of some 4.x releases)."""
    import cv2
    import numpy as np

    try:
        detector = cv2.createLineSegmentDetector()
        lines = detector.detect(grey)[0]
    except (cv2.error, AttributeError):
        return None
    if lines is None:
        return np.zeros((0, 4), dtype=np.float32)
    return np.asarray(lines, dtype=np.float32).reshape(-1, 4)


def _hough_segments(grey: np.ndarray, min_length: float) -> np.ndarray:
    """Segments (n x 4 floats) from probabilistic Hough lines on the Canny edges of ``grey``."""
    import cv2
    import numpy as np

    median = float(np.median(grey))
    edges = cv2.Canny(cv2.GaussianBlur(grey, (3, 3), 0), int(max(0.0, 0.66 * median)),
                      int(min(255.0, max(1.33 * median, 0.66 * median + 1))))
    lines = cv2.HoughLinesP(edges, 1, math.pi / 180, threshold=max(10, int(min_length / 2)),
                            minLineLength=max(2.0, min_length), maxLineGap=max(2.0, min_length / 8))
    if lines is None:
        return np.zeros((0, 4), dtype=np.float32)
    return np.asarray(lines, dtype=np.float32).reshape(-1, 4)


def scribble_map(image: Any, name: str = "sketch", threshold: int = 64) -> tuple[Any, str]:
    """A user's sketch (a PIL image: light lines on a dark ground or dark lines on a light one, any
    colours) as the scribble ControlNet wants it: white lines on black, nothing else; also says
    which way round the sketch was ("light-on-dark" or "dark-on-light").

    The ground is the sketch's median grey level; a pixel is a line when it differs from the ground
    by more than ``threshold`` grey levels. InputError when nothing differs (a blank sketch).

    Example::

        lines, polarity = scribble_map(Image.open("castle.png"), "castle.png")   # "dark-on-light"
    """
    import numpy as np
    from PIL import Image

    grey = np.asarray(image.convert("L"), dtype=np.int16)
    ground = int(np.median(grey))
    mask = np.abs(grey - ground) > threshold
    if not mask.any():
        raise InputError(f"the sketch '{name}' holds no lines: every pixel is within {threshold} grey levels of its "
                         f"background ({ground})", "draw the sketch with lines clearly darker or lighter than "
                         "the background")
    polarity = "dark-on-light" if ground >= 128 else "light-on-dark"
    lines = np.where(mask, 255, 0).astype(np.uint8)
    return Image.fromarray(np.stack([lines] * 3, axis=-1)), polarity


# --- pose ---

# BlazePose's 33 landmarks, in the order the landmark model returns them.
LANDMARKS = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye", "right_eye_outer",
    "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_pinky", "right_pinky", "left_index", "right_index",
    "left_thumb", "right_thumb", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "left_heel", "right_heel", "left_foot_index", "right_foot_index",
)
# The 18 OpenPose (COCO) joints the openpose ControlNet was trained on, as BlazePose indices
# ("neck" is the middle of the shoulders, written as a pair).
OPENPOSE_JOINTS: tuple[tuple[int, ...], ...] = (
    (0,), (11, 12), (12,), (14,), (16,), (11,), (13,), (15,), (24,), (26,), (28,), (23,), (25,), (27,),
    (5,), (2,), (8,), (7,),
)
# OpenPose limbs between those joints.
OPENPOSE_LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
                  (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))


@dataclass(frozen=True)
class Roi:
    """A rotated square region of the image, in pixels: centre, side and rotation (radians)."""

    cx: float
    cy: float
    size: float
    angle: float

    def to_image(self, u: float, v: float, side: int) -> tuple[float, float]:
        """A point of the ``side``-pixel crop mapped back into image pixels."""
        dx, dy = (u / side - 0.5) * self.size, (v / side - 0.5) * self.size
        c, s = math.cos(self.angle), math.sin(self.angle)
        return self.cx + dx * c - dy * s, self.cy + dx * s + dy * c


def ssd_anchors(input_size: int = 224, strides: tuple[int, ...] = (8, 16, 32, 32, 32)) -> np.ndarray:
    """Anchor centres (x, y in 0..1) of the BlazePose detector: 2 per cell and layer, layers of one
    stride merged, fixed size."""
    import numpy as np

    centres: list[tuple[float, float]] = []
    layer = 0
    while layer < len(strides):
        same = 0
        while layer + same < len(strides) and strides[layer + same] == strides[layer]:
            same += 1
        cells = math.ceil(input_size / strides[layer])
        for y in range(cells):
            for x in range(cells):
                centres.extend([((x + 0.5) / cells, (y + 0.5) / cells)] * (2 * same))
        layer += same
    return np.asarray(centres, dtype=np.float32)


def _sigmoid(x: Any) -> Any:
    import numpy as np

    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(x, dtype=np.float64), -80.0, 80.0)))


class PoseExpert(Expert):
    """Body pose from one photo: 33 keypoints (data) and a skeleton control image; serves ``pose-detection``.

    Card options: ``detector`` (default pose_detection.tflite), ``landmarks`` (default
    pose_landmark_full.tflite), ``min_score`` (detector score to accept a person, default 0.5),
    ``min_visibility`` (keypoints drawn and counted, default 0.5). The most confident person is used.

    Example::

        expert = PoseExpert(card, ExpertContext(settings))
        result = expert.run("pose-detection", {"image": "boy.jpg"}, run_dir)
        result.outputs["image"]            # skeleton (OpenPose colours) on black, the photo's size
        result.data["keypoints"][0]        # {"name": "nose", "x": 211.4, "y": 96.0, "visibility": 0.99}
    """

    TASKS = ("pose-detection",)
    DETECT = 224
    LANDMARK = 256

    def __init__(self, card: ModelCard, ctx: ExpertContext) -> None:
        super().__init__(card, ctx)
        self._detector: Any = None
        self._landmarker: Any = None
        self._anchors: Any = None

    def load(self) -> None:
        """Open both tflite models with the LiteRT interpreter."""
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:
            raise ExpertError(f"model '{self.card.id}' needs the LiteRT interpreter, which is not installed",
                              "pip install ai-edge-litert (in localgpt's cpu extra)") from exc
        opts = self.card.options
        models = []
        for name in (opts.get("detector", "pose_detection.tflite"), opts.get("landmarks", "pose_landmark_full.tflite")):
            path = self.card.file(name)
            if not path.is_file():
                raise ExpertError(f"model '{self.card.id}' is missing its file {path}", REINSTALL)
            try:
                interpreter = Interpreter(model_path=str(path), num_threads=self.ctx.settings.threads)
                interpreter.allocate_tensors()
            except (RuntimeError, ValueError) as exc:
                raise ExpertError(f"model '{self.card.id}' could not open {path.name}: {exc}", REINSTALL) from exc
            models.append(interpreter)
        self._detector, self._landmarker = models
        self._anchors = ssd_anchors(self.DETECT)
        super().load()

    @staticmethod
    def _invoke(interpreter: Any, tensor: np.ndarray) -> list[np.ndarray]:
        """Run a tflite model on one input; its outputs in declared order."""
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], tensor)
        interpreter.invoke()
        return [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]

    def _detect(self, rgb: np.ndarray) -> tuple[Roi, float] | None:
        """The most confident person as a landmark region (hips to head, rotated upright), or None."""
        import cv2
        import numpy as np

        h, w = rgb.shape[:2]
        side = max(h, w)
        pad_x, pad_y = (side - w) / 2, (side - h) / 2
        square = cv2.copyMakeBorder(rgb, int(pad_y), side - h - int(pad_y), int(pad_x), side - w - int(pad_x),
                                    cv2.BORDER_CONSTANT, value=(0, 0, 0))
        tensor = cv2.resize(square, (self.DETECT, self.DETECT), interpolation=cv2.INTER_AREA).astype(np.float32)
        tensor = (tensor / 127.5 - 1.0)[None]
        boxes, scores = self._invoke(self._detector, tensor)
        if boxes.shape[-1] != 12:  # outputs may come in either order
            boxes, scores = scores, boxes
        score = _sigmoid(scores.reshape(-1))
        best = int(np.argmax(score))
        if float(score[best]) < float(self.card.options.get("min_score", 0.5)):
            return None
        raw = boxes.reshape(-1, 12)[best]
        ax, ay = self._anchors[best]
        points = [(raw[4 + 2 * k] / self.DETECT + ax, raw[5 + 2 * k] / self.DETECT + ay) for k in range(4)]
        (x0, y0), (x1, y1) = [(px * side - int(pad_x), py * side - int(pad_y)) for px, py in points[:2]]
        angle = math.pi / 2 - math.atan2(-(y1 - y0), x1 - x0)
        angle = (angle + math.pi) % (2 * math.pi) - math.pi
        size = 2 * math.hypot(x1 - x0, y1 - y0) * 1.25
        return Roi(x0, y0, size, angle), float(score[best])

    def _landmarks(self, rgb: np.ndarray, roi: Roi) -> tuple[np.ndarray, float]:
        """33 keypoints (x, y in image pixels, z, visibility, presence) inside ``roi``, and the pose score."""
        import cv2
        import numpy as np

        side = self.LANDMARK
        corners = np.array([roi.to_image(0, 0, side), roi.to_image(side, 0, side), roi.to_image(0, side, side)],
                           dtype=np.float32)
        matrix = cv2.getAffineTransform(corners, np.array([[0, 0], [side, 0], [0, side]], dtype=np.float32))
        crop = cv2.warpAffine(rgb, matrix, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        outputs = self._invoke(self._landmarker, (crop.astype(np.float32) / 255.0)[None])
        coords = next(o for o in outputs if o.size == 195).reshape(39, 5)[:33]
        flag = next(o for o in outputs if o.size == 1)
        points = np.empty((33, 5), dtype=np.float64)
        for i, (u, v, z, vis, pres) in enumerate(coords):
            x, y = roi.to_image(float(u), float(v), side)
            points[i] = (x, y, float(z) * roi.size / side, _sigmoid(vis), _sigmoid(pres))
        return points, float(flag.reshape(-1)[0])

    def run(self, task: str, inputs: dict[str, str], out: RunDir) -> ExpertOutput:
        """Find the pose of the most confident person in ``image``; draw its skeleton."""
        self.check_task(task)
        if not self.loaded:
            self.load()
        rgb = read_rgb(inputs["image"], task, self.card.id)
        found = self._detect(rgb)
        name = Path(inputs["image"]).name
        if found is None:
            raise InputError(f"no person was found in '{name}' by model '{self.card.id}'",
                             "use a photo showing a person's body, large enough in the frame")
        roi, detection_score = found
        points, pose_score = self._landmarks(rgb, roi)
        min_vis = float(self.card.options.get("min_visibility", 0.5))
        h, w = rgb.shape[:2]
        keypoints = [{"name": LANDMARKS[i], "x": round(float(p[0]), 1), "y": round(float(p[1]), 1),
                      "z": round(float(p[2]), 1), "visibility": round(float(p[3]), 3)}
                     for i, p in enumerate(points)]
        visible = [LANDMARKS[i] for i, p in enumerate(points) if p[3] >= min_vis and 0 <= p[0] < w and 0 <= p[1] < h]
        skeleton = draw_skeleton(points, (h, w), min_vis)
        path = save_png(skeleton, out)
        text = (f"1 person (score {detection_score:.2f}); {len(visible)} of 33 keypoints visible: "
                + ", ".join(visible[:12]) + (" ..." if len(visible) > 12 else ""))
        return ExpertOutput(outputs={"image": str(path), "text": text},
                            data={"persons": 1, "score": round(detection_score, 3), "pose_score": round(pose_score, 3),
                                  "keypoints": keypoints, "visible": visible, "size": [w, h],
                                  "runtime": "litert/cpu"})

    def close(self) -> None:
        """Drop both interpreters."""
        self._detector = self._landmarker = None
        super().close()


def draw_skeleton(points: np.ndarray, shape: tuple[int, int], min_visibility: float = 0.5) -> np.ndarray:
    """An OpenPose-style skeleton (coloured limbs and joints on black) of BlazePose ``points``."""
    import colorsys

    import cv2
    import numpy as np

    h, w = shape
    canvas = np.zeros((h, w, 3), dtype=np.uint8)
    joints: list[tuple[int, int] | None] = []
    for members in OPENPOSE_JOINTS:
        rows = points[list(members)]
        if (rows[:, 3] < min_visibility).any():
            joints.append(None)
            continue
        joints.append((int(round(rows[:, 0].mean())), int(round(rows[:, 1].mean()))))
    thick = max(2, round(min(h, w) / 128))
    palette = [tuple(int(c * 255) for c in colorsys.hsv_to_rgb(i / 18, 1.0, 1.0)) for i in range(18)]
    for i, (a, b) in enumerate(OPENPOSE_LIMBS):
        pa, pb = joints[a], joints[b]
        if pa is None or pb is None:
            continue
        colour = tuple(int(0.6 * c) for c in palette[i])
        cv2.line(canvas, pa, pb, colour, thickness=thick * 2, lineType=cv2.LINE_AA)
    for i, p in enumerate(joints):
        if p is not None:
            cv2.circle(canvas, p, thick + 1, palette[i], thickness=-1, lineType=cv2.LINE_AA)
    return canvas
