"""The diffusers backend on tiny Stable Diffusion pipelines built from config (random weights).

Each pipeline is built once per session, saved with ``save_pretrained`` beside a model card, and
run through :class:`DiffusersExpert` with 2 steps on 32-48 px images.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

import pytest

from localgpt.config import Settings
from localgpt.errors import ExpertError, InputError
from localgpt.experts import expert_class
from localgpt.experts.base import ExpertContext
from localgpt.runtime.media import sniff_kind
from localgpt.runtime.runs import RunDir
from localgpt.schema import ModelCard
from localgpt.tasks import Kind
from localgpt.testing import (
    TEXT_DIM,
    build_sd,
    save_model,
    sd_parts,
    tiny_controlnet,
    tiny_tokenizer,
    tiny_unet,
    tiny_vae,
)


class _Lazy:
    """A module imported on first use, so that collecting this module (the contract suite imports it for its
    cases) stays light."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)


torch = _Lazy("torch")
diffusers = _Lazy("diffusers")
transformers = _Lazy("transformers")
Image = _Lazy("PIL.Image")


@pytest.fixture(autouse=True)
def _libraries() -> None:
    for name in ("torch", "diffusers", "transformers", "PIL"):
        pytest.importorskip(name)

def build_pix2pix(root: Path) -> ModelCard:
    parts = sd_parts(root / "p2p-src")
    torch.manual_seed(2)
    pipe = diffusers.StableDiffusionInstructPix2PixPipeline(
        unet=tiny_unet(in_channels=8), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        **parts)
    return save_model(root, "tiny-pix2pix", pipe, ["image-editing"],
                      pipeline_class="StableDiffusionInstructPix2PixPipeline")


def build_video(root: Path) -> ModelCard:
    parts = sd_parts(root / "video-src")
    torch.manual_seed(3)
    unet = diffusers.UNet3DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        cross_attention_dim=TEXT_DIM, attention_head_dim=4, norm_num_groups=8)
    pipe = diffusers.TextToVideoSDPipeline(unet=unet, **parts)
    return save_model(root, "tiny-video", pipe, ["text-to-video"], pipeline_class="TextToVideoSDPipeline",
                      frames=5, fps=4, width=32, height=32)


def build_controlnet(root: Path, model_id: str = "tiny-controlnet-pose",
                     tasks: tuple[str, ...] = ("pose-text-to-image",)) -> ModelCard:
    parts = sd_parts(root / f"{model_id}-src")
    torch.manual_seed(4)
    pipe = diffusers.StableDiffusionControlNetPipeline(
        unet=tiny_unet(), controlnet=tiny_controlnet(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False, **parts)
    return save_model(root, model_id, pipe, list(tasks), pipeline_class="StableDiffusionControlNetPipeline",
                      min_size=32)


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model store holding the tiny pipelines (built once per session)."""
    root = tmp_path_factory.mktemp("diffusers-store")
    build_sd(root)
    build_pix2pix(root)
    build_video(root)
    build_controlnet(root)
    return root


def _expert(store: Path, model_id: str, tmp_path: Path, **settings: Any) -> Any:
    from localgpt.store.catalog import Catalog

    card = Catalog(store).get(model_id)
    ctx = ExpertContext(settings=Settings(store=store, runs_dir=tmp_path / "runs", threads=2, device="cpu",
                                          **settings))
    return expert_class(card.backend)(card, ctx)


def _png(path: Path, size: tuple[int, int], colour: tuple[int, int, int] = (200, 30, 30)) -> Path:
    img = Image.new("RGB", size, colour)
    for x in range(size[0] // 4, size[0] // 2):  # a dark bar, so the image is not flat
        for y in range(size[1]):
            img.putpixel((x, y), (10, 10, 10))
    img.save(path)
    return path


def test_text_to_image_png_of_card_size_seeded(tiny_store: Path, tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    expert = _expert(tiny_store, "tiny-sd", tmp_path, seed=7)
    out = RunDir(tmp_path / "run")
    with caplog.at_level(logging.INFO, logger="localgpt.experts.diffusers"):
        first = expert.run("text-to-image", {"text": "the red cat"}, out)
    path = Path(first.outputs["image"])
    assert path.parent == out.path and path.suffix == ".png" and sniff_kind(path) is Kind.IMAGE
    with Image.open(path) as img:
        assert img.size == (48, 32)
        low, high = img.convert("L").getextrema()
    assert low != high
    assert first.data["seed"] == 7 and first.data["steps"] == 2 and first.data["size"] == [48, 32]
    assert first.data["runtime"] == "pytorch/cpu" and first.data["steps_run"] == 2
    steps = [r.getMessage() for r in caplog.records if "step" in r.getMessage()]
    assert steps == ["tiny-sd (text-to-image): step 1/2", "tiny-sd (text-to-image): step 2/2"]
    # the same seed gives the same image (same content-addressed file); another seed a different one
    again = expert.run("text-to-image", {"text": "the red cat"}, out)
    assert again.outputs["image"] == first.outputs["image"]
    other = _expert(tiny_store, "tiny-sd", tmp_path, seed=8).run("text-to-image", {"text": "the red cat"}, out)
    assert other.outputs["image"] != first.outputs["image"]
    expert.close()
    assert not expert.loaded and expert._pipe is None


def test_image_to_image_keeps_input_size(tiny_store: Path, tmp_path: Path) -> None:
    expert = _expert(tiny_store, "tiny-sd", tmp_path)  # a text-to-image pipeline, reused for image-to-image
    src = _png(tmp_path / "in.png", (44, 36))  # not a multiple of 8: generated at 40x32, resized back
    result = expert.run("image-to-image", {"image": str(src), "text": "make it blue"}, RunDir(tmp_path / "run"))
    with Image.open(result.outputs["image"]) as img:
        assert img.size == (44, 36)
    assert result.data["strength"] == 0.75 and result.data["size"] == [44, 36]
    assert result.data["generated_size"] == [40, 32]
    # a source larger than max_side is worked on scaled down, and still comes back at its own size
    expert.card = expert.card.model_copy(update={"options": {**expert.card.options, "max_side": 24}})
    small = expert.run("image-to-image", {"image": str(src), "text": "make it blue"}, RunDir(tmp_path / "run"))
    assert small.data["generated_size"] == [24, 16] and small.data["size"] == [44, 36]
    # the prompt is optional for image-to-image
    bare = expert.run("image-to-image", {"image": str(src)}, RunDir(tmp_path / "run"))
    assert Path(bare.outputs["image"]).is_file()


def test_image_editing_instruct_pix2pix(tiny_store: Path, tmp_path: Path) -> None:
    expert = _expert(tiny_store, "tiny-pix2pix", tmp_path)
    src = _png(tmp_path / "in.png", (32, 40))
    result = expert.run("image-editing", {"image": str(src), "text": "make the bar white"}, RunDir(tmp_path / "r"))
    with Image.open(result.outputs["image"]) as img:
        assert img.size == (32, 40)
    assert result.data["image_guidance"] == 1.5
    with pytest.raises(InputError, match="non-empty 'text'"):
        expert.run("image-editing", {"image": str(src), "text": "  "}, RunDir(tmp_path / "r"))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(InputError, match="not a decodable image"):
        expert.run("image-editing", {"image": str(broken), "text": "edit"}, RunDir(tmp_path / "r"))


def test_text_to_video_mp4_with_frame_count(tiny_store: Path, tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    import imageio_ffmpeg

    expert = _expert(tiny_store, "tiny-video", tmp_path)
    with caplog.at_level(logging.INFO, logger="localgpt.experts.diffusers"):
        result = expert.run("text-to-video", {"text": "a cat walks"}, RunDir(tmp_path / "run"))
    path = Path(result.outputs["video"])
    assert path.suffix == ".mp4" and sniff_kind(path) is Kind.VIDEO
    frames, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    assert frames == 5
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    assert tuple(meta["size"]) == (32, 32) and meta["fps"] == 4
    reader.close()
    assert result.data["frames"] == 5 and result.data["runtime"] == "pytorch/cpu"
    assert any("step 2/2" in r.getMessage() for r in caplog.records)


def test_controlnet_generates_at_control_size(tiny_store: Path, tmp_path: Path) -> None:
    expert = _expert(tiny_store, "tiny-controlnet-pose", tmp_path)
    control = _png(tmp_path / "pose.png", (40, 32), (0, 0, 0))
    result = expert.run("pose-text-to-image", {"text": "a girl reading", "image": str(control)},
                        RunDir(tmp_path / "run"))
    with Image.open(result.outputs["image"]) as img:
        assert img.size == (40, 32)
    assert result.data["control_scale"] == 1.0
    too_small = _png(tmp_path / "small.png", (16, 16))
    with pytest.raises(InputError, match="16x16 pixels"):
        expert.run("pose-text-to-image", {"text": "a girl", "image": str(too_small)}, RunDir(tmp_path / "run"))
    text_file = tmp_path / "notes.png"
    text_file.write_text("not an image")
    with pytest.raises(InputError, match="not a decodable image"):
        expert.run("pose-text-to-image", {"text": "a girl", "image": str(text_file)}, RunDir(tmp_path / "run"))


def test_wrong_task_and_bad_folder_are_clear_errors(tiny_store: Path, tmp_path: Path) -> None:
    expert = _expert(tiny_store, "tiny-sd", tmp_path)
    with pytest.raises(ExpertError, match="not 'text-to-video'"):
        expert.run("text-to-video", {"text": "x"}, RunDir(tmp_path / "run"))
    card = ModelCard(id="empty", tasks=["text-to-image"], backend="diffusers", format="pytorch", description="x",
                     path=tmp_path)
    empty = expert_class("diffusers")(card, ExpertContext(settings=Settings(device="cpu")))
    with pytest.raises(ExpertError, match="model_index.json"):
        empty.load()
    wrong = card.model_copy(update={"path": tiny_store / "tiny-sd", "options": {"pipeline_class": "NoSuchPipeline"}})
    with pytest.raises(ExpertError, match="NoSuchPipeline"):
        expert_class("diffusers")(wrong, ExpertContext(settings=Settings(device="cpu"))).load()


def test_lone_controlnet_plugs_into_a_base_model_of_the_store(tiny_store: Path, tmp_path: Path) -> None:
    from localgpt.store.catalog import Catalog

    folder = tmp_path / "cn.partial"
    torch.manual_seed(5)
    tiny_controlnet().save_pretrained(str(folder))  # as a hub pull of a ControlNet repo leaves it: no model_index
    card = ModelCard(id="tiny-controlnet-canny-alone", tasks=["canny-text-to-image"], backend="diffusers",
                     format="pytorch", description="a lone tiny ControlNet",
                     options={"pipeline_class": "StableDiffusionControlNetPipeline", "base_model": "tiny-sd",
                              "steps": 2, "min_size": 32})
    card = Catalog(tmp_path / "store").add(card, folder)
    settings = Settings(store=tiny_store, runs_dir=tmp_path / "runs", threads=2, device="cpu")
    expert = expert_class("diffusers")(card, ExpertContext(settings=settings))
    edges = _png(tmp_path / "edges.png", (32, 48), (0, 0, 0))
    result = expert.run("canny-text-to-image", {"text": "a cup", "image": str(edges)}, RunDir(tmp_path / "run"))
    with Image.open(result.outputs["image"]) as img:
        assert img.size == (32, 48)
    assert type(expert._pipe.controlnet).__name__ == "ControlNetModel"
    missing_base = card.model_copy(update={"options": {**card.options, "base_model": "sd-not-installed"}})
    with pytest.raises(ExpertError, match="base model 'sd-not-installed', which is not installed"):
        expert_class("diffusers")(missing_base, ExpertContext(settings=settings)).load()


# --- the expert contract (tests/test_expert_contract.py runs these cases) ---

def _contract_card(base: Path, model_id: str, build: Any) -> ModelCard:
    """A tiny pipeline under the session's temp folder, built on first use."""
    from localgpt.store.catalog import Catalog

    root = base / "diffusers-contract"
    if not (root / model_id / "model.json").is_file():
        root.mkdir(parents=True, exist_ok=True)
        build(root)
    return Catalog(root).get(model_id)


def contract_cases() -> list[Any]:
    """The diffusers backend under the contract: every generation mode on a tiny pipeline."""
    from tests.contract.test_expert_contract import Case

    def picture(env: Any, folder: Path) -> dict[str, str]:
        return {"image": str(_png(folder / "source.png", (40, 32))), "text": "make it blue"}

    return [
        Case("diffusers-text-to-image", lambda env: _contract_card(env.base, "tiny-sd", build_sd), "text-to-image",
             lambda env, d: {"text": "a red cat"}, held=lambda e: e._pipe),
        Case("diffusers-image-editing", lambda env: _contract_card(env.base, "tiny-pix2pix", build_pix2pix),
             "image-editing", picture, held=lambda e: e._pipe),
        Case("diffusers-text-to-video", lambda env: _contract_card(env.base, "tiny-video", build_video),
             "text-to-video", lambda env, d: {"text": "a cat walks"}, held=lambda e: e._pipe),
        Case("diffusers-controlnet", lambda env: _contract_card(env.base, "tiny-controlnet-pose", build_controlnet),
             "pose-text-to-image", picture, held=lambda e: e._pipe),
    ]


# --- scribble and the SDXL variant ---

def _sketch(path: Path, size: tuple[int, int], ink: tuple[int, int, int], paper: tuple[int, int, int]) -> Path:
    """A sketch: a house outline and its roof in ``ink`` on ``paper``."""
    from PIL import ImageDraw

    img = Image.new("RGB", size, paper)
    draw = ImageDraw.Draw(img)
    w, h = size
    draw.rectangle((w // 4, h // 2, 3 * w // 4, h - 3), outline=ink, width=2)
    draw.line((w // 4, h // 2, w // 2, h // 5, 3 * w // 4, h // 2), fill=ink, width=2)
    img.save(path)
    return path


def wake_controlnet(controlnet: Any, seed: int = 0) -> None:
    """Give a fresh ControlNet's zero-initialised layers random weights, so the control image changes the
    picture (a ControlNet built from config ignores its control image until trained)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in (controlnet.controlnet_cond_embedding.conv_out, controlnet.controlnet_down_blocks,
                       controlnet.controlnet_mid_block):
            for param in module.parameters():
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)


def test_scribble_either_way_round_gives_the_same_picture(tiny_store: Path, tmp_path: Path) -> None:
    expert = _expert(tiny_store, "tiny-controlnet-pose", tmp_path)  # the same ControlNet, as a scribble card
    expert.card = expert.card.model_copy(update={"tasks": ["scribble-text-to-image"]})
    expert.load()
    wake_controlnet(expert._pipe.controlnet)
    out = RunDir(tmp_path / "run")
    pencil = _sketch(tmp_path / "pencil.png", (48, 40), (20, 20, 20), (250, 250, 245))  # dark lines on white
    chalk = _sketch(tmp_path / "chalk.png", (48, 40), (255, 255, 255), (0, 0, 0))  # white lines on black
    first = expert.run("scribble-text-to-image", {"text": "a castle", "image": str(pencil)}, out)
    second = expert.run("scribble-text-to-image", {"text": "a castle", "image": str(chalk)}, out)
    assert first.data["sketch"] == "dark-on-light" and second.data["sketch"] == "light-on-dark"
    # both sketches became the same white-on-black control image, so the seeded pictures are the same file
    assert first.outputs["image"] == second.outputs["image"]
    with Image.open(first.outputs["image"]) as img:
        assert img.size == (48, 40)
    # an unnormalised dark-on-light control image would have given another picture
    raw = expert.card.model_copy(update={"tasks": ["pose-text-to-image"]})
    expert.card = raw
    other = expert.run("pose-text-to-image", {"text": "a castle", "image": str(pencil)}, out)
    assert other.outputs["image"] != first.outputs["image"]
    expert.card = raw.model_copy(update={"tasks": ["scribble-text-to-image"]})
    blank = Image.new("RGB", (48, 40), (240, 240, 240))
    blank.save(tmp_path / "blank.png")
    with pytest.raises(InputError, match="sketch 'blank.png' holds no lines"):
        expert.run("scribble-text-to-image", {"text": "a castle", "image": str(tmp_path / "blank.png")}, out)


def tiny_sdxl_parts(folder: Path) -> dict[str, Any]:
    """A tiny SDXL UNet (text-and-time addition embeddings) with its two CLIP text encoders, tokenizers, VAE and
    scheduler; cross-attention takes both encoders' hidden states side by side."""
    tok = tiny_tokenizer(folder / "tok")
    config = transformers.CLIPTextConfig(
        vocab_size=len(tok), hidden_size=TEXT_DIM, intermediate_size=32, num_attention_heads=2,
        num_hidden_layers=1, max_position_embeddings=16, projection_dim=TEXT_DIM,
        bos_token_id=0, eos_token_id=1, pad_token_id=1)
    torch.manual_seed(6)
    return {"vae": tiny_vae(), "text_encoder": transformers.CLIPTextModel(config).eval(),
            "text_encoder_2": transformers.CLIPTextModelWithProjection(config).eval(), "tokenizer": tok,
            "tokenizer_2": tok, "unet": diffusers.UNet2DConditionModel(sample_size=16, out_channels=4,
                                                                        up_block_types=("CrossAttnUpBlock2D",
                                                                                        "UpBlock2D"),
                                                                        **SDXL_BLOCKS),
            "scheduler": diffusers.EulerDiscreteScheduler(num_train_timesteps=100, steps_offset=1)}


# the blocks shared by the tiny SDXL UNet and its ControlNet: 6 time ids x 8 + the pooled text embedding
SDXL_BLOCKS: dict[str, Any] = {
    "block_out_channels": (8, 16), "layers_per_block": 1, "in_channels": 4, "attention_head_dim": 4,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"), "norm_num_groups": 8,
    "cross_attention_dim": 2 * TEXT_DIM, "addition_embed_type": "text_time", "addition_time_embed_dim": 8,
    "projection_class_embeddings_input_dim": TEXT_DIM + 6 * 8, "use_linear_projection": True}


def test_sdxl_controlnet_card_generates_at_control_size(tmp_path: Path) -> None:
    from localgpt.store.catalog import Catalog

    parts = tiny_sdxl_parts(tmp_path / "src")
    torch.manual_seed(7)
    controlnet = diffusers.ControlNetModel(conditioning_embedding_out_channels=(4, 8), **SDXL_BLOCKS)
    pipe = diffusers.StableDiffusionXLControlNetPipeline(controlnet=controlnet, add_watermarker=False, **parts)
    store = tmp_path / "store"
    save_model(store, "tiny-sdxl-controlnet", pipe, ["canny-text-to-image"],
               pipeline_class="StableDiffusionXLControlNetPipeline", min_size=32)
    edges = _png(tmp_path / "edges.png", (40, 32), (0, 0, 0))
    expert = _expert(store, "tiny-sdxl-controlnet", tmp_path)
    result = expert.run("canny-text-to-image", {"text": "a castle", "image": str(edges)}, RunDir(tmp_path / "run"))
    assert type(expert._pipe).__name__ == "StableDiffusionXLControlNetPipeline"
    with Image.open(result.outputs["image"]) as img:
        assert img.size == (40, 32) and img.format == "PNG"
        low, high = img.convert("L").getextrema()
    assert low != high and result.data["steps_run"] == 2 and result.data["size"] == [40, 32]
    expert.close()
    # the hub's shape: a lone SDXL ControlNet whose card plugs it into an SDXL base pipeline of the store
    base = diffusers.StableDiffusionXLPipeline(add_watermarker=False, **parts)
    save_model(store, "tiny-sdxl", base, ["text-to-image"], pipeline_class="StableDiffusionXLPipeline")
    folder = tmp_path / "cn.partial"
    controlnet.save_pretrained(str(folder))
    card = ModelCard(id="tiny-sdxl-controlnet-alone", tasks=["line-text-to-image"], backend="diffusers",
                     format="pytorch", description="a lone tiny SDXL ControlNet",
                     options={"pipeline_class": "StableDiffusionXLControlNetPipeline", "base_model": "tiny-sdxl",
                              "steps": 2, "min_size": 32})
    card = Catalog(store).add(card, folder)
    alone = _expert(store, card.id, tmp_path)
    lines = alone.run("line-text-to-image", {"text": "a castle", "image": str(edges)}, RunDir(tmp_path / "run"))
    with Image.open(lines.outputs["image"]) as img:
        assert img.size == (40, 32)
    assert type(alone._pipe).__name__ == "StableDiffusionXLControlNetPipeline"
