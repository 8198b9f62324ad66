"""Vision and document handlers for :class:`localgpt.experts.hf.TransformersExpert`.

Each handler takes ``(pipe, task, inputs, out)`` — the transformers pipeline, the localgpt task
name, the task's inputs by the names ``localgpt.tasks`` declares (media as absolute paths) and
the run folder — and returns an :class:`ExpertOutput`. Images produced (boxes drawn, masks,
overlays, depth maps) are PNG files in the run folder; ``data`` is JSON-serialisable.

PIL, numpy and rapidocr are imported only inside functions.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from localgpt.errors import ExpertError, InputError
from localgpt.experts.base import ExpertOutput
from localgpt.experts.ocr import bundled_engine

if TYPE_CHECKING:
    from PIL import Image

    from localgpt.runtime.runs import RunDir

Handler = Callable[[Any, str, dict[str, str], "RunDir"], ExpertOutput]

TOP_K = 5
# Distinct colours for boxes and segments (RGB), reused in turn.
PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40), (128, 0, 0))


def read_image(inputs: dict[str, str], task: str, name: str = "image") -> Image.Image:
    """The RGB image given as input ``name``; an InputError when absent or not decodable."""
    from PIL import Image, UnidentifiedImageError

    path = inputs.get(name, "").strip()
    if not path:
        raise InputError(f"{task} needs an image as '{name}'", "give the path of an image file")
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise InputError(f"{task}: file '{path}' is not a decodable image: {exc}") from exc


def read_text(inputs: dict[str, str], task: str, name: str = "text") -> str:
    """The non-empty text input ``name``; an InputError otherwise."""
    value = inputs.get(name, "").strip()
    if not value:
        raise InputError(f"{task} needs a question as '{name}'", "ask a question about the image")
    return value


def save_png(img: Image.Image, out: RunDir) -> str:
    """Save ``img`` as a PNG in the run folder; its path."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return str(out.save(buf.getvalue(), ".png"))


def scored(items: list[dict[str, Any]], label: str = "label") -> str:
    """A short summary like "cat (0.93), dog (0.04)"."""
    parts = [f"{item[label]} ({item['score']:.2f})" if item.get("score") is not None else str(item[label])
             for item in items]
    return ", ".join(parts)


def _as_list(result: Any) -> list[dict[str, Any]]:
    """A pipeline result as a flat list of dicts (pipelines nest lists for batched input)."""
    if isinstance(result, dict):
        return [result]
    if result and isinstance(result[0], list):
        return list(result[0])
    return list(result)


def image_classification(pipe: Any, task: str, inputs: dict[str, str], out: RunDir) -> ExpertOutput:
    """Labels with scores, best first. A zero-shot model (CLIP, SigLIP) scores the candidate labels given
    as ``labels`` (comma-separated) or in the card's ``candidate_labels`` option."""
    image = read_image(inputs, task)
    if getattr(pipe, "task", "") == "zero-shot-image-classification":
        given = [part.strip() for part in inputs.get("labels", "").split(",") if part.strip()]
        candidates = given or list(getattr(pipe, "localgpt_options", {}).get("candidate_labels") or [])
        if not candidates:
            raise ExpertError("zero-shot image classification needs candidate labels",
                              "set the card option 'candidate_labels' to a list of labels")
        results = _as_list(pipe(image, candidate_labels=candidates))[:TOP_K]
    else:
        results = _as_list(pipe(image, top_k=TOP_K))
    labels = [{"label": str(r["label"]), "score": float(r["score"])} for r in results]
    return ExpertOutput(outputs={"text": scored(labels) or "no label"}, data={"labels": labels})


def object_detection(pipe: Any, task: str, inputs: dict[str, str], out: RunDir) -> ExpertOutput:
    """Objects as label, score and box (pixels), and the boxes drawn with labels onto a copy of the image."""
    from PIL import ImageDraw

    image = read_image(inputs, task)
    objects: list[dict[str, Any]] = []
    for r in _as_list(pipe(image)):
        box = {k: int(round(float(r["box"][k]))) for k in ("xmin", "ymin", "xmax", "ymax")}
        objects.append({"label": str(r["label"]), "score": float(r["score"]), "box": box})
    objects.sort(key=lambda o: -o["score"])
    drawn = image.copy()
    draw = ImageDraw.Draw(drawn)
    width = max(1, round(max(image.size) / 200))
    for i, obj in reversed(list(enumerate(objects))):  # the best object is drawn last, on top
        colour = PALETTE[i % len(PALETTE)]
        b = obj["box"]
        draw.rectangle((b["xmin"], b["ymin"], b["xmax"], b["ymax"]), outline=colour, width=width)
        caption = f"{obj['label']} {obj['score']:.2f}"
        left, top, right, bottom = draw.textbbox((b["xmin"], b["ymin"]), caption)
        y = max(0, b["ymin"] - (bottom - top) - 2)
        draw.rectangle((b["xmin"], y, b["xmin"] + right - left + 2, y + bottom - top + 2), fill=colour)
        draw.text((b["xmin"] + 1, y), caption, fill=(255, 255, 255))
    text = f"{len(objects)} object(s): {scored(objects)}" if objects else "no objects found"
    return ExpertOutput(outputs={"image": save_png(drawn, out), "text": text}, data={"objects": objects})


def image_segmentation(pipe: Any, task: str, inputs: dict[str, str], out: RunDir) -> ExpertOutput:
    """One mask PNG per segment and a coloured overlay of all segments on the image."""
    import numpy as np
    from PIL import Image

    image = read_image(inputs, task)
    base = np.asarray(image, dtype=np.float32)
    overlay = base.copy()
    segments = []
    for i, r in enumerate(_as_list(pipe(image))):
        mask_img = r["mask"].convert("L")
        if mask_img.size != image.size:
            mask_img = mask_img.resize(image.size, Image.Resampling.NEAREST)
        mask = np.asarray(mask_img) > 127
        colour = np.array(PALETTE[i % len(PALETTE)], dtype=np.float32)
        overlay[mask] = 0.45 * base[mask] + 0.55 * colour
        score = r.get("score")
        segments.append({"label": str(r["label"]), "score": None if score is None else float(score),
                         "area": float(mask.mean()), "mask": save_png(mask_img, out)})
    blended = Image.fromarray(overlay.clip(0, 255).astype(np.uint8))
    text = f"{len(segments)} segment(s): {scored(segments)}" if segments else "no segments found"
    return ExpertOutput(outputs={"image": save_png(blended, out), "text": text}, data={"segments": segments})


def depth_estimation(pipe: Any, task: str, inputs: dict[str, str], out: RunDir) -> ExpertOutput:
    """The depth map as a greyscale PNG of the input's size (brighter = nearer for relative-depth models)."""
    import numpy as np
    from PIL import Image

    image = read_image(inputs, task)
    result = pipe(image)
    depth = result["depth"] if isinstance(result, dict) else result[0]["depth"]
    if depth.size != image.size:
        depth = depth.resize(image.size, Image.Resampling.BILINEAR)
    raw = result.get("predicted_depth") if isinstance(result, dict) else None
    values = np.asarray(raw.detach().cpu().float() if raw is not None else depth, dtype=np.float32)
    data = {"width": depth.size[0], "height": depth.size[1],
            "min": float(values.min()), "max": float(values.max()), "mean": float(values.mean())}
    return ExpertOutput(outputs={"image": save_png(depth.convert("L"), out)}, data=data)


def image_to_text(pipe: Any, task: str, inputs: dict[str, str], out: RunDir) -> ExpertOutput:
    """A caption of the image."""
    image = read_image(inputs, task)
    results = _as_list(pipe(image))
    caption = " ".join(str(results[0].get("generated_text", "")).split()) if results else ""
    return ExpertOutput(outputs={"text": caption or "(no caption)"}, data={"caption": caption})


def visual_question_answering(pipe: Any, task: str, inputs: dict[str, str], out: RunDir) -> ExpertOutput:
    """Answers to a question about the image, with scores, best first."""
    image = read_image(inputs, task)
    question = read_text(inputs, task)
    answers: list[dict[str, Any]] = [{"answer": str(r["answer"]), "score": float(r["score"])}
                                     for r in _as_list(pipe(image=image, question=question, top_k=TOP_K))]
    best = answers[0]["answer"] if answers else ""
    return ExpertOutput(outputs={"text": best or "(no answer)"}, data={"question": question, "answers": answers})


def ocr_word_boxes(pipe: Any, image: Image.Image) -> list[tuple[str, list[int]]]:
    """Words of ``image`` with boxes scaled to 0-1000, read by rapidocr.

    rapidocr reads lines; its character boxes split them into words: at spaces and between letters
    and digits, and, in a line read without any space (PP-OCR often drops the spaces of English
    text), at gaps wider than 0.6 of the line's median character width.
    """
    import numpy as np

    engine = bundled_engine(pipe, "document-question-answering")
    lines, _ = engine(np.asarray(image)[:, :, ::-1], return_word_box=True)  # rapidocr wants BGR like OpenCV
    width, height = image.size
    words: list[tuple[str, list[int]]] = []
    for line in lines or []:
        for text, (x0, y0, x1, y1) in _line_words(line):
            box = [x0 / width, y0 / height, x1 / width, y1 / height]
            words.append((text, [max(0, min(1000, round(v * 1000))) for v in box]))
    return words


def _line_words(line: Any) -> list[tuple[str, tuple[float, float, float, float]]]:
    """The words of one rapidocr line with pixel boxes (x0, y0, x1, y1)."""
    points, text = line[0], str(line[1])
    ys = [float(p[1]) for p in points]
    top, bottom = min(ys), max(ys)
    chars = list(line[4]) if len(line) > 4 else []
    char_boxes = list(line[3]) if len(line) > 4 else []
    if not chars or len(chars) != len(char_boxes):  # no character boxes: share the line's width by characters
        xs = [float(p[0]) for p in points]
        left, right = min(xs), max(xs)
        tokens = text.split()
        total = max(1, sum(len(t) for t in tokens) + len(tokens) - 1)
        found, start = [], 0
        for token in tokens:
            x0 = left + (right - left) * start / total
            x1 = left + (right - left) * (start + len(token)) / total
            found.append((token, (x0, top, x1, bottom)))
            start += len(token) + 1
        return found
    spans = [(min(float(p[0]) for p in b), max(float(p[0]) for p in b)) for b in char_boxes]
    widths = sorted(r - left for left, r in spans if r > left)
    no_spaces = not any(c.isspace() for c in chars)
    gap_limit = 0.6 * (widths[len(widths) // 2] if widths else 10.0) if no_spaces else float("inf")
    result: list[tuple[str, tuple[float, float, float, float]]] = []
    current, x0, x1 = "", 0.0, 0.0
    for char, (left, right) in zip(chars, spans, strict=True):
        split = char.isspace() or (current and (
            left - x1 > gap_limit or current[-1].isdigit() != char.isdigit()))
        if split and current:
            result.append((current, (x0, top, x1, bottom)))
            current = ""
        if char.isspace():
            continue
        if not current:
            x0 = left
        current += char
        x1 = right
    if current:
        result.append((current, (x0, top, x1, bottom)))
    return result


def document_question_answering(pipe: Any, task: str, inputs: dict[str, str], out: RunDir) -> ExpertOutput:
    """Answers read from a document image (words found by OCR), with scores and word positions."""
    image = read_image(inputs, task)
    question = read_text(inputs, task)
    processor: Any = getattr(pipe, "image_processor", None)
    if getattr(processor, "apply_ocr", False):  # LayoutLMv2/v3 processors would run Tesseract; rapidocr reads
        processor.apply_ocr = False
    words = ocr_word_boxes(pipe, image)
    if not words:
        raise InputError(f"{task}: no text could be read in the document image", "give a clearer scan of the page")
    results = _as_list(pipe(image=image, question=question, word_boxes=words, top_k=3))
    answers: list[dict[str, Any]] = [
        {"answer": str(r["answer"]), "score": float(r["score"]), "start": int(r.get("start", 0)),
         "end": int(r.get("end", 0))} for r in results]
    best = answers[0]["answer"] if answers else ""
    return ExpertOutput(outputs={"text": best or "(no answer)"},
                        data={"question": question, "answers": answers, "words": len(words)})


HANDLERS: dict[str, Handler] = {
    "image-classification": image_classification,
    "object-detection": object_detection,
    "image-segmentation": image_segmentation,
    "depth-estimation": depth_estimation,
    "image-to-text": image_to_text,
    "visual-question-answering": visual_question_answering,
    "document-question-answering": document_question_answering,
}
