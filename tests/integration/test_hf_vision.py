"""The transformers backend on vision and document tasks, with tiny random models of the real architectures.

Each model is built from a config (a few thousand parameters), saved with ``save_pretrained`` together with
a locally built image processor / tokenizer, and run through :class:`TransformersExpert` exactly as an
installed model would be. The builders are shared with the contract suite (``contract_cases``) and build
each model once per session (``tiny_model``).
"""

from __future__ import annotations

import gc
import io
import json
import shutil
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from localgpt.config import Settings
from localgpt.errors import ExpertError, InputError
from localgpt.experts import expert_class
from localgpt.experts.base import ExpertContext
from localgpt.runtime.runs import RunDir
from localgpt.schema import ModelCard

SIZE = 48  # test images are SIZE x SIZE-ish
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "what", "is", "the", "total", "date", "invoice", "number",
         "how", "many", "cats", "are", "there", "a", "cat", "dog", "red", "blue", "square", "42", "yes", "no",
         "paid", "amount", "due", "color", "of"]


# --- locally built tokenizers ---------------------------------------------------------------------------------

def _vocab(folder: Path) -> Path:
    """A BERT-style vocab.txt in ``folder``."""
    path = folder / "vocab.txt"
    path.write_text("\n".join(WORDS) + "\n", encoding="utf-8")
    return path


def bert_tokenizer(folder: Path, cls_name: str = "BertTokenizerFast") -> Any:
    """A WordPiece tokenizer class ``cls_name`` (BERT-like) over the small vocabulary, saved in ``folder``."""
    import transformers

    tok = getattr(transformers, cls_name)(vocab_file=str(_vocab(folder)), model_max_length=64)
    tok.save_pretrained(folder)
    return tok


def gpt2_tokenizer(folder: Path) -> Any:
    """A word-level GPT-2-style fast tokenizer (one token per word), saved in ``folder``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<|endoftext|>", "<unk>", *WORDS[5:]])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                  pad_token="<|endoftext|>", unk_token="<unk>", model_max_length=64,
                                  model_input_names=["input_ids", "attention_mask"])
    tok.save_pretrained(folder)
    return tok


# --- tiny models of the real architectures ------------------------------------------------------------------

LABELS = {0: "cat", 1: "dog", 2: "bird"}


def _labels() -> dict[str, Any]:
    return {"id2label": dict(LABELS), "label2id": {v: k for k, v in LABELS.items()}}


def build_vit(folder: Path) -> None:
    """ViT image classifier (3 labels) with a ViT image processor."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=64, **_labels())
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)


def build_detr(folder: Path) -> None:
    """DETR object detector on a tiny ResNet backbone built from config (no timm, no pretrained weights)."""
    from transformers import DetrConfig, DetrForObjectDetection, DetrImageProcessor, ResNetConfig

    backbone = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                            layer_type="basic", out_features=["stage1", "stage2"])
    config = DetrConfig(use_timm_backbone=False, backbone_config=backbone, use_pretrained_backbone=False,
                        backbone=None, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_queries=6,
                        **_labels())
    DetrForObjectDetection(config).save_pretrained(folder)
    DetrImageProcessor(size={"shortest_edge": 32, "longest_edge": 64}).save_pretrained(folder)


def build_segformer(folder: Path) -> None:
    """SegFormer semantic segmenter (3 labels) with its image processor."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    config = SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
                             num_attention_heads=[1, 2], patch_sizes=[7, 3], strides=[4, 2], mlp_ratios=[2, 2],
                             decoder_hidden_size=16, **_labels())
    SegformerForSemanticSegmentation(config).save_pretrained(folder)
    SegformerImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)


def build_dpt(folder: Path) -> None:
    """Plain DPT depth estimator on a tiny ViT (no hybrid backbone)."""
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    config = DPTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                       intermediate_size=64, backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 8, 16, 16],
                       reassemble_factors=[4, 2, 1, 0.5], fusion_hidden_size=16, head_in_index=-1)
    DPTForDepthEstimation(config).save_pretrained(folder)
    DPTImageProcessor(size={"height": 32, "width": 32}, keep_aspect_ratio=False).save_pretrained(folder)


def build_captioner(folder: Path) -> None:
    """VisionEncoderDecoder captioner: a tiny ViT encoder and a tiny GPT-2 decoder, with a word-level tokenizer."""
    from transformers import (
        GPT2Config,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessor,
    )

    tok = gpt2_tokenizer(folder)
    encoder = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64)
    decoder = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=1, n_head=2,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id = tok.bos_token_id
    config.pad_token_id = tok.pad_token_id
    config.eos_token_id = tok.eos_token_id
    model = VisionEncoderDecoderModel(config=config)
    model.generation_config.decoder_start_token_id = tok.bos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.min_new_tokens = 2  # a random model would often stop at once
    model.generation_config.max_new_tokens = 6
    model.generation_config.suppress_tokens = [tok.unk_token_id]
    model.save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)


def build_vilt(folder: Path) -> None:
    """ViLT visual question answering (answers: yes / no / two) with a BERT tokenizer and ViLT image processor."""
    from transformers import ViltConfig, ViltForQuestionAnswering, ViltImageProcessor

    bert_tokenizer(folder)
    answers = {0: "yes", 1: "no", 2: "two"}
    config = ViltConfig(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, image_size=32, patch_size=8, max_position_embeddings=64,
                        id2label=answers, label2id={v: k for k, v in answers.items()})
    ViltForQuestionAnswering(config).save_pretrained(folder)
    ViltImageProcessor(size={"shortest_edge": 32}, size_divisor=32).save_pretrained(folder)


def build_layoutlm(folder: Path) -> None:
    """LayoutLM extractive document question answering with a LayoutLM tokenizer (words and boxes from OCR)."""
    from transformers import LayoutLMConfig, LayoutLMForQuestionAnswering

    bert_tokenizer(folder, "LayoutLMTokenizerFast")
    config = LayoutLMConfig(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=64)
    LayoutLMForQuestionAnswering(config).save_pretrained(folder)


def build_clip(folder: Path) -> None:
    """CLIP (tiny text and vision towers) for zero-shot image classification, with a word-level tokenizer."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    tok = gpt2_tokenizer(folder)
    config = CLIPConfig(
        text_config={"vocab_size": len(tok), "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "intermediate_size": 64, "max_position_embeddings": 64, "eos_token_id": tok.eos_token_id,
                     "bos_token_id": tok.bos_token_id, "pad_token_id": tok.pad_token_id},
        vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "intermediate_size": 64},
        projection_dim=16)
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)


BUILDERS: dict[str, tuple[Callable[[Path], None], str, str]] = {
    # name: (builder, localgpt task, transformers pipeline)
    "vit": (build_vit, "image-classification", "image-classification"),
    "detr": (build_detr, "object-detection", "object-detection"),
    "segformer": (build_segformer, "image-segmentation", "image-segmentation"),
    "dpt": (build_dpt, "depth-estimation", "depth-estimation"),
    "captioner": (build_captioner, "image-to-text", "image-to-text"),
    "vilt": (build_vilt, "visual-question-answering", "visual-question-answering"),
    "layoutlm": (build_layoutlm, "document-question-answering", "document-question-answering"),
    "clip": (build_clip, "image-classification", "zero-shot-image-classification"),
}
PIPELINE_KWARGS: dict[str, dict[str, Any]] = {"detr": {"threshold": 0.0}, "captioner": {"max_new_tokens": 6}}
CANDIDATES = ["red square", "blue disc", "cat"]


def tiny_model(base: Path, name: str) -> Path:
    """The folder of tiny model ``name`` under ``base``, built on first use (so once per test session)."""
    folder = base / f"tiny-{name}"
    if not folder.is_dir():
        staging = base / f"tiny-{name}.building"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        BUILDERS[name][0](staging)
        staging.rename(folder)  # complete or absent, never half built
    return folder


def tiny_card(base: Path, name: str, fmt: str = "pytorch", folder: Path | None = None) -> ModelCard:
    """A transformers model card for tiny model ``name``."""
    _, task, pipeline_task = BUILDERS[name]
    options: dict[str, Any] = {"pipeline": pipeline_task}
    if name in PIPELINE_KWARGS:
        options["pipeline_kwargs"] = PIPELINE_KWARGS[name]
    if name == "clip":
        options["candidate_labels"] = list(CANDIDATES)
    path = folder or tiny_model(base, name)
    size = sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    return ModelCard(id=f"tiny-{name}" + ("-onnx" if fmt == "onnx" else ""), tasks=[task], backend="transformers",
                     format=fmt, description=f"tiny random {name}", options=options, path=path, size_bytes=size)


# --- generated inputs ----------------------------------------------------------------------------------------

def picture(path: Path, size: tuple[int, int] = (SIZE + 16, SIZE)) -> Path:
    """A PNG with a red square and a blue disc on a light background."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", size, (235, 235, 225))
    draw = ImageDraw.Draw(img)
    draw.rectangle((6, 6, 26, 26), fill=(200, 30, 30))
    draw.ellipse((size[0] - 30, size[1] - 30, size[0] - 6, size[1] - 6), fill=(30, 60, 200))
    img.save(path)
    return path


def document(path: Path) -> Path:
    """A white page with printed lines of text that OCR can read."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (600, 200), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=40)
    draw.text((20, 30), "Invoice number 42", fill="black", font=font)
    draw.text((20, 110), "Total amount due 42", fill="black", font=font)
    img.save(path)
    return path


def inputs_for(task: str, folder: Path) -> dict[str, str]:
    """Generated inputs for a vision or document task, by the names the registry declares."""
    if task == "document-question-answering":
        return {"image": str(document(folder / "page.png")), "text": "what is the invoice number"}
    values = {"image": str(picture(folder / "scene.png"))}
    if task == "visual-question-answering":
        values["text"] = "how many cats are there"
    return values


# --- fixtures ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session folder the tiny models are built in (shared with the contract suite)."""
    return tmp_path_factory.getbasetemp() / "tiny-hf"


@pytest.fixture(scope="session")
def cpu_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(store=tmp_path_factory.mktemp("store"), runs_dir=tmp_path_factory.mktemp("runs"),
                    device="cpu", threads=1)


def expert_for(card: ModelCard, settings: Settings) -> Any:
    """An unloaded transformers expert for ``card``."""
    return expert_class("transformers")(card, ExpertContext(settings=settings))


def png_size(path: str) -> tuple[int, int]:
    """Width and height of a PNG file (checks the signature)."""
    from PIL import Image

    raw = Path(path).read_bytes()
    assert raw.startswith(b"\x89PNG\r\n\x1a\n"), f"{path} is not a PNG"
    with Image.open(io.BytesIO(raw)) as img:
        return img.size


# --- tests ---------------------------------------------------------------------------------------------------

def test_image_classification_labels_and_scores(tiny_base: Path, cpu_settings: Settings, tmp_path: Path,
                                                run_dir: RunDir) -> None:
    expert = expert_for(tiny_card(tiny_base, "vit"), cpu_settings)
    result = expert.run("image-classification", inputs_for("image-classification", tmp_path), run_dir)
    labels = result.data["labels"]
    assert {entry["label"] for entry in labels} == set(LABELS.values())
    scores = [entry["score"] for entry in labels]
    assert scores == sorted(scores, reverse=True) and sum(scores) == pytest.approx(1.0, abs=1e-4)
    assert result.outputs["text"].startswith(f"{labels[0]['label']} (")
    assert result.data["runtime"] == "pytorch/cpu"
    json.dumps(result.data)


def test_zero_shot_image_classification_clip(tiny_base: Path, cpu_settings: Settings, tmp_path: Path,
                                             run_dir: RunDir) -> None:
    expert = expert_for(tiny_card(tiny_base, "clip"), cpu_settings)
    inputs = inputs_for("image-classification", tmp_path)
    result = expert.run("image-classification", inputs, run_dir)
    labels = result.data["labels"]
    assert [entry["label"] for entry in labels] != [] and {e["label"] for e in labels} == set(CANDIDATES)
    assert sum(e["score"] for e in labels) == pytest.approx(1.0, abs=1e-4)
    assert type(expert.pipe).__name__ == "ZeroShotImageClassificationPipeline"
    # labels given with the task replace the card's
    chosen = expert.run("image-classification", {**inputs, "labels": "dog, bird"}, run_dir)
    assert {e["label"] for e in chosen.data["labels"]} == {"dog", "bird"}
    bare = tiny_card(tiny_base, "clip")
    bare.options.pop("candidate_labels")
    with pytest.raises(ExpertError, match="candidate labels"):
        expert_for(bare, cpu_settings).run("image-classification", inputs, run_dir)


def test_object_detection_boxes_drawn_and_listed(tiny_base: Path, cpu_settings: Settings, tmp_path: Path,
                                                 run_dir: RunDir) -> None:
    from PIL import Image

    expert = expert_for(tiny_card(tiny_base, "detr"), cpu_settings)
    inputs = inputs_for("object-detection", tmp_path)
    result = expert.run("object-detection", inputs, run_dir)
    objects = result.data["objects"]
    assert len(objects) >= 1  # threshold 0: every query that is not "no object"
    width, height = Image.open(inputs["image"]).size
    for obj in objects:
        assert obj["label"] in LABELS.values() and 0.0 <= obj["score"] <= 1.0
        assert set(obj["box"]) == {"xmin", "ymin", "xmax", "ymax"}
        assert all(isinstance(v, int) for v in obj["box"].values())
    drawn = result.outputs["image"]
    assert Path(drawn).parent == run_dir.path
    assert png_size(drawn) == (width, height)
    # the boxes are drawn in the palette's colours, the best object's first
    from localgpt.experts.hf_vision import PALETTE

    colours = {colour for _, colour in Image.open(drawn).convert("RGB").getcolors(1 << 16) or []}
    assert PALETTE[0] in colours and PALETTE[0] not in {c for _, c in Image.open(inputs["image"]).getcolors()}
    assert result.outputs["text"].startswith(f"{len(objects)} object(s): ")


def test_segmentation_masks_and_overlay(tiny_base: Path, cpu_settings: Settings, tmp_path: Path,
                                        run_dir: RunDir) -> None:
    from PIL import Image

    expert = expert_for(tiny_card(tiny_base, "segformer"), cpu_settings)
    inputs = inputs_for("image-segmentation", tmp_path)
    size = Image.open(inputs["image"]).size
    result = expert.run("image-segmentation", inputs, run_dir)
    segments = result.data["segments"]
    assert segments and {s["label"] for s in segments} <= set(LABELS.values())
    assert sum(s["area"] for s in segments) == pytest.approx(1.0, abs=1e-6)  # semantic masks tile the image
    for seg in segments:
        assert png_size(seg["mask"]) == size
        assert Image.open(seg["mask"]).mode == "L"
    assert png_size(result.outputs["image"]) == size
    assert "segment(s)" in result.outputs["text"]
    json.dumps(result.data)


def test_depth_map_png(tiny_base: Path, cpu_settings: Settings, tmp_path: Path, run_dir: RunDir) -> None:
    from PIL import Image

    expert = expert_for(tiny_card(tiny_base, "dpt"), cpu_settings)
    inputs = inputs_for("depth-estimation", tmp_path)
    result = expert.run("depth-estimation", inputs, run_dir)
    size = Image.open(inputs["image"]).size
    assert png_size(result.outputs["image"]) == size
    assert Image.open(result.outputs["image"]).mode == "L"
    assert (result.data["width"], result.data["height"]) == size
    assert result.data["min"] <= result.data["mean"] <= result.data["max"]


def test_captioning_vision_encoder_decoder(tiny_base: Path, cpu_settings: Settings, tmp_path: Path,
                                           run_dir: RunDir) -> None:
    expert = expert_for(tiny_card(tiny_base, "captioner"), cpu_settings)
    result = expert.run("image-to-text", inputs_for("image-to-text", tmp_path), run_dir)
    caption = result.data["caption"]
    words = caption.split()
    assert 1 <= len(words) <= 6 and set(words) <= set(WORDS)  # tokens of the tiny vocabulary, max_new_tokens 6
    assert result.outputs["text"] == caption


def test_visual_question_answering_vilt(tiny_base: Path, cpu_settings: Settings, tmp_path: Path,
                                        run_dir: RunDir) -> None:
    expert = expert_for(tiny_card(tiny_base, "vilt"), cpu_settings)
    inputs = inputs_for("visual-question-answering", tmp_path)
    result = expert.run("visual-question-answering", inputs, run_dir)
    answers = result.data["answers"]
    assert {a["answer"] for a in answers} == {"yes", "no", "two"}
    assert result.outputs["text"] == answers[0]["answer"]
    assert result.data["question"] == inputs["text"]
    with pytest.raises(InputError, match="question"):
        expert.run("visual-question-answering", {"image": inputs["image"], "text": " "}, run_dir)


def test_document_question_answering_with_ocr_words(tiny_base: Path, cpu_settings: Settings, tmp_path: Path,
                                                    run_dir: RunDir) -> None:
    from PIL import Image

    from localgpt.experts.hf_vision import ocr_word_boxes

    expert = expert_for(tiny_card(tiny_base, "layoutlm"), cpu_settings)
    inputs = inputs_for("document-question-answering", tmp_path)
    result = expert.run("document-question-answering", inputs, run_dir)
    page_words = [w.lower() for w, _ in ocr_word_boxes(expert.pipe, Image.open(inputs["image"]).convert("RGB"))]
    assert result.data["words"] == len(page_words) >= 6  # OCR read both printed lines
    answers = result.data["answers"]
    assert answers and result.outputs["text"] == answers[0]["answer"]
    for answer in answers:  # an extractive answer is a span of the page's words
        assert answer["answer"] and set(answer["answer"].lower().split()) <= set(page_words)
    with pytest.raises(InputError, match="no text could be read"):
        expert.run("document-question-answering", {"image": str(picture(tmp_path / "blank.png")),
                                                   "text": "what is the total"}, run_dir)


def test_ocr_word_boxes_are_normalised(tmp_path: Path) -> None:
    from PIL import Image

    from localgpt.experts.hf_vision import ocr_word_boxes

    class Holder:
        """Stands in for the pipeline object the OCR engine is cached on."""

    holder = Holder()
    words = ocr_word_boxes(holder, Image.open(document(tmp_path / "page.png")).convert("RGB"))
    texts = [w.lower() for w, _ in words]
    assert {"invoice", "number", "42", "due"} <= set(texts)
    for _, box in words:
        assert len(box) == 4 and all(0 <= v <= 1000 for v in box)
        assert box[0] <= box[2] and box[1] <= box[3]
    first = dict((w.lower(), b) for w, b in words)
    assert first["invoice"][2] <= first["number"][0] + 5  # words of one line are laid out left to right
    assert hasattr(holder, "_localgpt_ocr")  # the engine is reused for the next page


def test_bad_image_is_an_input_error(tiny_base: Path, cpu_settings: Settings, tmp_path: Path,
                                     run_dir: RunDir) -> None:
    expert = expert_for(tiny_card(tiny_base, "vit"), cpu_settings)
    bogus = tmp_path / "cat.png"
    bogus.write_text("not really a picture")
    with pytest.raises(InputError, match=r"cat\.png.*not a decodable image"):
        expert.run("image-classification", {"image": str(bogus)}, run_dir)
    with pytest.raises(InputError, match="needs an image"):
        expert.run("image-classification", {}, run_dir)


def test_wrong_task_missing_weights_and_unknown_pipeline(tiny_base: Path, cpu_settings: Settings,
                                                         tmp_path: Path, run_dir: RunDir) -> None:
    card = tiny_card(tiny_base, "vit")
    with pytest.raises(ExpertError, match="tiny-vit.*not 'depth-estimation'"):
        expert_for(card, cpu_settings).run("depth-estimation", {"image": "x.png"}, run_dir)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text((card.path / "config.json").read_text())  # type: ignore[operator]
    broken = card.model_copy(update={"id": "no-weights", "path": empty})
    with pytest.raises(ExpertError, match="no-weights.*no weights"):
        expert_for(broken, cpu_settings).load()
    with pytest.raises(ExpertError, match="no-weights.*no .onnx file"):
        expert_for(broken.model_copy(update={"format": "onnx"}), cpu_settings).load()
    odd = card.model_copy(update={"id": "odd-task", "options": {"pipeline": "image-dreaming"}})
    with pytest.raises(ExpertError, match="odd-task.*unknown transformers pipeline 'image-dreaming'"):
        expert_for(odd, cpu_settings).load()
    nothing = card.model_copy(update={"id": "gone", "path": tmp_path / "gone"})
    with pytest.raises(ExpertError, match="gone.*no config.json"):
        expert_for(nothing, cpu_settings).load()
    no_class = card.model_copy(update={"id": "detector-onnx", "format": "onnx",
                                       "options": {"pipeline": "object-detection"}})
    with pytest.raises(ExpertError, match="detector-onnx.*no optimum ONNX Runtime class"):
        expert_for(no_class, cpu_settings).load()


def test_close_releases_the_model(tiny_base: Path, cpu_settings: Settings, tmp_path: Path, run_dir: RunDir) -> None:
    expert = expert_for(tiny_card(tiny_base, "vit"), cpu_settings)
    expert.load()
    model_ref = weakref.ref(expert.pipe.model)
    expert.close()
    gc.collect()
    assert not expert.loaded and expert.pipe is None
    assert model_ref() is None
    # it loads again on the next run
    assert expert.run("image-classification", inputs_for("image-classification", tmp_path), run_dir).outputs["text"]


def vit_onnx_folder(base: Path) -> Path:
    """The tiny ViT exported to ONNX by optimum (with its image processor), built on first use."""
    from optimum.onnxruntime import ORTModelForImageClassification
    from transformers import AutoImageProcessor

    folder = base / "tiny-vit-onnx"
    if not folder.is_dir():
        source = tiny_model(base, "vit")
        staging = base / "tiny-vit-onnx.building"
        shutil.rmtree(staging, ignore_errors=True)
        ORTModelForImageClassification.from_pretrained(source, export=True).save_pretrained(staging)
        AutoImageProcessor.from_pretrained(source).save_pretrained(staging)
        staging.rename(folder)
    return folder


@pytest.fixture(scope="session")
def vit_onnx(tiny_base: Path) -> Path:
    return vit_onnx_folder(tiny_base)


def test_onnx_export_agrees_with_pytorch(tiny_base: Path, vit_onnx: Path, cpu_settings: Settings, tmp_path: Path,
                                         run_dir: RunDir) -> None:
    inputs = inputs_for("image-classification", tmp_path)
    torch_result = expert_for(tiny_card(tiny_base, "vit"), cpu_settings).run("image-classification", inputs, run_dir)
    onnx_expert = expert_for(tiny_card(tiny_base, "vit", "onnx", vit_onnx), cpu_settings)
    onnx_result = onnx_expert.run("image-classification", inputs, run_dir)
    assert onnx_result.data["runtime"] == "onnxruntime/CPUExecutionProvider"
    assert type(onnx_expert.pipe.model).__name__ == "ORTModelForImageClassification"
    assert onnx_result.data["labels"][0]["label"] == torch_result.data["labels"][0]["label"]
    for mine, theirs in zip(onnx_result.data["labels"], torch_result.data["labels"], strict=True):
        assert mine["score"] == pytest.approx(theirs["score"], abs=1e-4)
    with pytest.raises(ExpertError, match="missing its ONNX file"):
        card = tiny_card(tiny_base, "vit", "onnx", vit_onnx)
        card.options["onnx_file"] = "model_quantized.onnx"
        expert_for(card, cpu_settings).load()


def test_device_choice_follows_settings_and_card(tiny_base: Path, vit_onnx: Path, tmp_path: Path,
                                                 run_dir: RunDir) -> None:
    import onnxruntime
    import torch

    gpu_card = tiny_card(tiny_base, "vit").model_copy(update={"devices": ["cpu", "cuda"]})
    inputs = inputs_for("image-classification", tmp_path)

    def settings(device: str) -> Settings:
        return Settings(store=tmp_path, runs_dir=tmp_path, device=device, threads=1)

    auto = expert_for(gpu_card, settings("auto"))
    has_gpu = torch.cuda.is_available()
    assert auto.run("image-classification", inputs, run_dir).data["runtime"] == (
        "pytorch/cuda" if has_gpu else "pytorch/cpu")
    assert auto.device == ("cuda" if has_gpu else "cpu")
    auto.close()
    # a card that does not list cuda stays on the CPU whatever the setting
    cpu_only = expert_for(tiny_card(tiny_base, "vit"), settings("cuda"))
    assert cpu_only.run("image-classification", inputs, run_dir).data["runtime"] == "pytorch/cpu"
    if not has_gpu:
        with pytest.raises(ExpertError, match="tiny-vit.*torch sees no CUDA GPU"):
            expert_for(gpu_card, settings("cuda")).load()
    onnx_card = tiny_card(tiny_base, "vit", "onnx", vit_onnx).model_copy(update={"devices": ["cpu", "cuda"]})
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(ExpertError, match="tiny-vit-onnx.*no CUDAExecutionProvider"):
            expert_for(onnx_card, settings("cuda")).load()
        onnx_auto = expert_for(onnx_card, settings("auto"))
        assert onnx_auto.run("image-classification", inputs, run_dir).data["runtime"] == (
            "onnxruntime/CPUExecutionProvider")


def test_vision_handlers_cover_the_registry() -> None:
    from localgpt import tasks
    from localgpt.experts.hf import TASK_MODULES
    from localgpt.experts.hf_vision import HANDLERS

    vision = {t for t, module in TASK_MODULES.items() if module.endswith("hf_vision")}
    assert vision == set(HANDLERS)
    assert all(tasks.is_known(t) for t in TASK_MODULES)
    for name, (_, task, _) in BUILDERS.items():
        assert task in HANDLERS, name


# --- cases for the contract suite (tests/test_expert_contract.py) --------------------------------------------

def contract_cases() -> list[Any]:
    """One contract case per tiny vision model, and the ONNX export."""
    from tests.contract.test_expert_contract import Case, CaseEnv

    def card_of(name: str) -> Callable[[CaseEnv], ModelCard]:
        return lambda env: tiny_card(env.base / "tiny-hf", name)

    def onnx_card(env: CaseEnv) -> ModelCard:
        base = env.base / "tiny-hf"
        return tiny_card(base, "vit", "onnx", vit_onnx_folder(base))

    def inputs(task: str) -> Callable[[CaseEnv, Path], dict[str, str]]:
        return lambda env, folder: inputs_for(task, folder)

    cases = [Case(f"transformers-{name}", card_of(name), task, inputs(task), held=lambda e: e.pipe.model)
             for name, (_, task, _) in BUILDERS.items()]
    cases.append(Case("transformers-vit-onnx", onnx_card, "image-classification", inputs("image-classification"),
                      held=lambda e: e.pipe.model))
    return cases


def test_modules_import_nothing_heavy() -> None:
    import subprocess
    import sys

    code = ("import json, sys\n"
            "import localgpt.experts.hf, localgpt.experts.hf_vision, localgpt.runtime.pool\n"
            "heavy = ['torch', 'transformers', 'optimum', 'onnxruntime', 'PIL', 'numpy', 'rapidocr_onnxruntime']\n"
            "print(json.dumps([m for m in heavy if m in sys.modules]))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parents[2])
    assert json.loads(done.stdout) == []


def test_pipeline_runs_transformers_experts_from_the_store(tiny_base: Path, tmp_path: Path) -> None:
    """Catalog → selector → executor → pool → TransformersExpert, with a planned chain of two vision tasks."""
    from localgpt.pipeline import Pipeline
    from localgpt.store.catalog import Catalog
    from localgpt.testing import FakeLLM

    store = tmp_path / "store"
    store.mkdir()
    catalog = Catalog(store)
    for name in ("detr", "vit"):
        staging = store / f"tiny-{name}.partial"
        shutil.copytree(tiny_model(tiny_base, name), staging)
        card = tiny_card(tiny_base, name)
        catalog.add(card.model_copy(update={"path": None, "files": [], "size_bytes": 0}), staging)
    plan = [{"id": 0, "task": "object-detection", "dep": [-1], "args": {"image": "scene.png"}},
            {"id": 1, "task": "image-classification", "dep": [0], "args": {"image": "<resource>-0"}}]
    llm = FakeLLM([json.dumps(plan)], default="Boxes drawn and the result classified.")
    settings = Settings(store=store, runs_dir=tmp_path / "runs", device="cpu", threads=1)
    scene = picture(tmp_path / "scene.png")
    result = Pipeline(settings, llm, Catalog(store)).run("find the objects in scene.png and classify the result",
                                                         [scene])
    assert [r.status for r in result.results] == ["done", "done"], [r.error for r in result.results]
    detected, classified = result.results
    assert detected.model == "tiny-detr" and classified.model == "tiny-vit"
    assert png_size(detected.outputs["image"]) == png_size(str(scene))
    assert classified.args["image"] == detected.outputs["image"]  # the drawn image fed the classifier
    assert detected.data["runtime"] == classified.data["runtime"] == "pytorch/cpu"
    assert detected.outputs["image"] in result.files
