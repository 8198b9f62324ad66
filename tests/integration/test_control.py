"""ControlNet annotators on real photos and the planned flow annotator -> conditioned generation.

Pose runs the real MediaPipe BlazePose models of the test store (``mediapipe-pose``); Canny needs
no weights; generation uses tiny ControlNet + Stable Diffusion pipelines built from config.
"""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from localgpt.config import Settings
from localgpt.errors import ExpertError, InputError
from localgpt.experts import expert_class
from localgpt.experts.base import ExpertContext
from localgpt.pipeline import Pipeline
from localgpt.planning.validate import validate_plan
from localgpt.runtime.pool import ModelPool
from localgpt.runtime.runs import RunDir
from localgpt.schema import ModelCard, Plan
from localgpt.store.catalog import Catalog
from localgpt.testing import FakeLLM, Recorder, fake_card, fake_factory
from tests.helpers import missing, store_dir


class _Lazy:
    """A module imported on first use (the contract suite imports this module for its cases)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)


np = _Lazy("numpy")
Image = _Lazy("PIL.Image")
skimage_data = _Lazy("skimage.data")


@pytest.fixture(autouse=True)
def _libraries() -> None:
    for name in ("numpy", "PIL", "skimage", "cv2"):
        pytest.importorskip(name)

POSE_REQUEST = "make a picture of a girl reading a book in the same pose as the boy in boy.jpg"


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real photos from scikit-image: a person and a cup of coffee (full size and small)."""
    root = tmp_path_factory.mktemp("photos")
    astronaut = Image.fromarray(skimage_data.astronaut())
    astronaut.save(root / "astronaut.png")
    astronaut.resize((128, 128)).save(root / "boy.jpg")
    coffee = Image.fromarray(skimage_data.coffee())
    coffee.save(root / "coffee.png")
    coffee.resize((96, 64)).save(root / "cup.png")
    return {p.stem: p for p in root.iterdir()}


@pytest.fixture(scope="session")
def pose_card() -> ModelCard:
    """The real pose model of the test store."""
    store = store_dir()
    if not (store / "mediapipe-pose" / "model.json").is_file():
        missing(f"model 'mediapipe-pose' is not installed in {store}; run: python download_models.py --profile test")
    try:
        import ai_edge_litert  # noqa: F401
    except ImportError:
        missing("ai-edge-litert (the LiteRT interpreter) is not installed: pip install -e '.[cpu]'")
    return Catalog(store).get("mediapipe-pose")


def _ctx(tmp_path: Path) -> ExpertContext:
    return ExpertContext(settings=Settings(store=tmp_path, runs_dir=tmp_path / "runs", threads=2, device="cpu"))


CANNY = ModelCard(id="opencv-canny", tasks=["canny-control"], backend="canny", format="none",
                  description="Canny edges")


def test_canny_edges_of_a_real_photo(photos: dict[str, Path], tmp_path: Path) -> None:
    expert = expert_class("canny")(CANNY, _ctx(tmp_path))
    result = expert.run("canny-control", {"image": str(photos["coffee"])}, RunDir(tmp_path / "run"))
    with Image.open(result.outputs["image"]) as img:
        assert img.mode == "RGB" and img.size == (600, 400)
        edges = np.asarray(img)
    assert set(np.unique(edges)) <= {0, 255}
    assert (edges[..., 0] == edges[..., 2]).all()
    fraction = float((edges[..., 0] > 0).mean())
    assert 0.01 < fraction < 0.4 and result.data["edge_fraction"] == pytest.approx(fraction, abs=1e-3)
    # fixed, higher thresholds keep fewer edges
    strict = CANNY.model_copy(update={"options": {"low": 200, "high": 250}})
    fewer = expert_class("canny")(strict, _ctx(tmp_path)).run("canny-control", {"image": str(photos["coffee"])},
                                                              RunDir(tmp_path / "run"))
    assert fewer.data["thresholds"] == [200, 250] and fewer.data["edge_fraction"] < fraction


def test_canny_bad_input_is_clear(tmp_path: Path) -> None:
    bogus = tmp_path / "photo.png"
    bogus.write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 10)
    expert = expert_class("canny")(CANNY, _ctx(tmp_path))
    with pytest.raises(InputError, match="photo.png.*not a decodable image"):
        expert.run("canny-control", {"image": str(bogus)}, RunDir(tmp_path / "run"))
    with pytest.raises(ExpertError, match="not 'pose-detection'"):
        expert.run("pose-detection", {"image": str(bogus)}, RunDir(tmp_path / "run"))


def test_pose_keypoints_and_skeleton_on_a_real_photo(pose_card: ModelCard, photos: dict[str, Path],
                                                     tmp_path: Path) -> None:
    expert = expert_class(pose_card.backend)(pose_card, _ctx(tmp_path))
    result = expert.run("pose-detection", {"image": str(photos["astronaut"])}, RunDir(tmp_path / "run"))
    points = {k["name"]: k for k in result.data["keypoints"]}
    assert len(points) == 33 and result.data["score"] > 0.5
    nose, left, right = points["nose"], points["left_shoulder"], points["right_shoulder"]
    # the astronaut's face is near (220, 125) in the 512x512 photo; shoulders lower, her left on the image's right
    assert 180 < nose["x"] < 260 and 90 < nose["y"] < 160 and nose["visibility"] > 0.9
    assert left["y"] > nose["y"] + 50 and right["y"] > nose["y"] + 50 and left["x"] > nose["x"] > right["x"]
    assert {"nose", "left_shoulder", "right_shoulder"} <= set(result.data["visible"])
    assert result.outputs["text"].startswith("1 person")
    with Image.open(result.outputs["image"]) as img:
        assert img.size == (512, 512)
        skeleton = np.asarray(img.convert("RGB"))
    lit = skeleton.max(axis=-1) > 0
    assert 0.002 < lit.mean() < 0.2  # lines were drawn, most of the canvas is black
    x, y = int(nose["x"]), int(nose["y"])
    assert lit[y - 4:y + 5, x - 4:x + 5].any()  # a joint sits on the nose
    expert.close()
    assert not expert.loaded


def test_pose_without_a_person_or_image_is_clear(pose_card: ModelCard, photos: dict[str, Path],
                                                 tmp_path: Path) -> None:
    expert = expert_class(pose_card.backend)(pose_card, _ctx(tmp_path))
    with pytest.raises(InputError, match="no person was found in 'coffee.png'"):
        expert.run("pose-detection", {"image": str(photos["coffee"])}, RunDir(tmp_path / "run"))
    text = tmp_path / "boy.jpg"
    text.write_text("hello")
    with pytest.raises(InputError, match="not a decodable image"):
        expert.run("pose-detection", {"image": str(text)}, RunDir(tmp_path / "run"))


# --- the planned flow ---

@pytest.fixture(scope="session")
def control_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny ControlNet pipelines (pose, canny) saved in a folder of their own (built once)."""
    pytest.importorskip("diffusers")
    from tests.integration.test_diffusers import build_controlnet

    root = tmp_path_factory.mktemp("controlnets")
    build_controlnet(root, "tiny-controlnet-pose", ("pose-text-to-image",))
    build_controlnet(root, "tiny-controlnet-canny", ("canny-text-to-image",))
    build_controlnet(root, "tiny-controlnet-depth", ("depth-text-to-image",))
    return root


def _flow_store(tmp_path: Path, control_models: Path, pose_card: ModelCard) -> Catalog:
    """A store with the real pose model, Canny, the tiny ControlNets and a fake captioner."""
    store = tmp_path / "store"
    catalog = Catalog(store)
    for src in (*[p for p in control_models.iterdir() if (p / "model.json").is_file()], pose_card.path):
        assert src is not None
        staging = tmp_path / f"staging-{src.name}"
        shutil.copytree(src, staging)
        card = Catalog(src.parent).get(src.name)
        catalog.add(card.model_copy(update={"path": None}), staging)
    (tmp_path / "staging-canny").mkdir()
    catalog.add(CANNY, tmp_path / "staging-canny")
    (tmp_path / "staging-captioner").mkdir()
    catalog.add(fake_card("fake-captioner", ["image-to-text"]), tmp_path / "staging-captioner")
    return catalog


def _pipeline(tmp_path: Path, catalog: Catalog, replies: list[Any]) -> tuple[Pipeline, Recorder]:
    settings = Settings(store=catalog.store, runs_dir=tmp_path / "runs", threads=2, device="cpu", max_workers=2,
                        demo_similarity="words", task_timeout=120)
    llm = FakeLLM(replies, default="Here is the picture you asked for.")
    rec = Recorder()
    ctx = ExpertContext(settings=settings, llm=llm, extra={"recorder": rec})
    pool = ModelPool(ctx, 1 << 30, factory=fake_factory(ctx))
    return Pipeline(settings, llm, catalog, pool), rec


def test_planned_pose_flow_makes_the_picture(pose_card: ModelCard, control_models: Path, photos: dict[str, Path],
                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    boy = tmp_path / "boy.jpg"
    shutil.copy(photos["boy"], boy)
    plan = [{"id": 0, "task": "pose-detection", "dep": [-1], "args": {"image": "boy.jpg"}},
            {"id": 1, "task": "pose-text-to-image", "dep": [0],
             "args": {"image": "<resource>-0", "text": "a girl reading a book"}}]
    pipe, _ = _pipeline(tmp_path, _flow_store(tmp_path, control_models, pose_card), [json.dumps(plan)])
    events: list[str] = []
    result = pipe.run(POSE_REQUEST, files=[boy], on_event=lambda e: events.append(e.type))
    assert [t.task for t in result.plan.tasks] == ["pose-detection", "pose-text-to-image"]
    assert result.plan.tasks[1].dep == [0]
    pose, picture = result.results
    assert pose.status == "done" and picture.status == "done", (pose.error, picture.error)
    assert [s.model for s in result.selections] == ["mediapipe-pose", "tiny-controlnet-pose"]
    # the generation followed the skeleton produced by the annotator, and kept its size
    assert picture.args["image"] == pose.outputs["image"]
    with Image.open(picture.outputs["image"]) as img:
        assert img.size == (128, 128)
    assert picture.outputs["image"] in result.files and pose.outputs["image"] in result.files
    assert len(pose.data["keypoints"]) == 33 and picture.data["runtime"] == "pytorch/cpu"
    assert events[0] == "plan" and events[-1] == "done" and result.answer
    # the planner was shown the pose demo as the closest example (last before the request)
    llm = pipe.llm
    assert isinstance(llm, FakeLLM)
    planning = llm.calls[0].messages
    assert "pose-text-to-image" in planning[-2]["content"] and "dancer.jpg" in planning[-3]["content"]


def test_planned_flow_with_captions_in_parallel_and_canny(pose_card: ModelCard, control_models: Path,
                                                          photos: dict[str, Path], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("boy.jpg", "cup.png"):
        shutil.copy(photos[Path(name).stem], tmp_path / name)
    request = ("Describe boy.jpg and cup.png, draw a girl reading in the boy's pose, "
               "and a sketch following the outlines of cup.png")
    raw = [{"id": 0, "task": "image-to-text", "dep": [-1], "args": {"image": "boy.jpg"}},
           {"id": 1, "task": "image-to-text", "dep": [-1], "args": {"image": "cup.png"}},
           {"id": 2, "task": "pose-detection", "dep": [-1], "args": {"image": "boy.jpg"}},
           {"id": 3, "task": "pose-text-to-image", "dep": [2], "args": {"image": "<resource>-2",
                                                                         "text": "a girl reading"}},
           {"id": 4, "task": "canny-control", "dep": [-1], "args": {"image": "cup.png"}},
           {"id": 5, "task": "canny-text-to-image", "dep": [4], "args": {"image": "<resource>-4",
                                                                          "text": "a pencil sketch of a cup"}}]
    files = [str(tmp_path / "boy.jpg"), str(tmp_path / "cup.png")]
    plan = validate_plan(raw, request, files)
    assert [t.dep for t in plan.tasks] == [[], [], [], [2], [], [4]]
    pipe, rec = _pipeline(tmp_path, _flow_store(tmp_path, control_models, pose_card), [])
    result = pipe.run(request, files=files, plan=Plan(tasks=plan.tasks))
    llm = pipe.llm
    assert isinstance(llm, FakeLLM)
    assert all((c.schema or {}).get("type") != "array" for c in llm.calls)  # the given plan: no planning call
    by_id = {r.id: r for r in result.results}
    assert all(r.status == "done" for r in result.results), [r.error for r in result.results]
    assert sorted(r["inputs"]["image"].rsplit("/", 1)[-1] for r in rec.runs) == ["boy.jpg", "cup.png"]
    with Image.open(by_id[3].outputs["image"]) as img:
        assert img.size == (128, 128)
    with Image.open(by_id[5].outputs["image"]) as img:
        assert img.size == (96, 64)
    assert by_id[5].args["image"] == by_id[4].outputs["image"]


def test_depth_map_from_the_depth_expert_guides_generation(pose_card: ModelCard, control_models: Path,
                                                           photos: dict[str, Path], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The control image of depth-text-to-image comes from the depth-estimation expert (tiny DPT)."""
    from tests.integration.test_hf_vision import build_dpt

    monkeypatch.chdir(tmp_path)
    shutil.copy(photos["cup"], tmp_path / "cup.png")
    catalog = _flow_store(tmp_path, control_models, pose_card)
    dpt = tmp_path / "staging-dpt"
    dpt.mkdir()
    build_dpt(dpt)
    catalog.add(ModelCard(id="tiny-dpt", tasks=["depth-estimation"], backend="transformers", format="pytorch",
                          description="tiny random DPT", options={"pipeline": "depth-estimation"}), dpt)
    raw = [{"id": 0, "task": "depth-estimation", "dep": [-1], "args": {"image": "cup.png"}},
           {"id": 1, "task": "depth-text-to-image", "dep": [0], "args": {"image": "<resource>-0",
                                                                          "text": "a jungle scene"}}]
    request = "paint a jungle scene with the depth of cup.png"
    plan = validate_plan(raw, request, [str(tmp_path / "cup.png")])
    pipe, _ = _pipeline(tmp_path, catalog, [])
    depth, picture = pipe.run(request, files=[tmp_path / "cup.png"], plan=plan).results
    assert depth.status == "done" and picture.status == "done", (depth.error, picture.error)
    assert picture.args["image"] == depth.outputs["image"] and picture.model == "tiny-controlnet-depth"
    with Image.open(picture.outputs["image"]) as img:
        assert img.size == (96, 64)


def test_bad_control_inputs_fail_the_task_clearly(control_models: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = Catalog(tmp_path / "store")
    src = control_models / "tiny-controlnet-pose"
    shutil.copytree(src, tmp_path / "staging")
    store.add(Catalog(control_models).get(src.name).model_copy(update={"path": None}), tmp_path / "staging")
    Image.new("RGB", (16, 16)).save(tmp_path / "tiny.png")
    (tmp_path / "fake.png").write_text("not an image at all")
    pipe, _ = _pipeline(tmp_path, store, [])
    raw = [{"id": 0, "task": "pose-text-to-image", "dep": [-1], "args": {"image": "tiny.png", "text": "a girl"}},
           {"id": 1, "task": "pose-text-to-image", "dep": [-1], "args": {"image": "fake.png", "text": "a girl"}}]
    files = [tmp_path / "tiny.png", tmp_path / "fake.png"]
    plan = validate_plan(raw, "draw", [str(f) for f in files])
    result = pipe.run("draw a girl in these poses", files=files, plan=plan)
    small, fake = result.results
    assert small.status == "failed" and "16x16 pixels" in (small.error or "")
    assert fake.status == "failed" and "should be image" in (fake.error or "")


# --- the expert contract (tests/test_expert_contract.py runs these cases) ---

def contract_cases() -> list[Any]:
    """The annotator backends under the contract: Canny (no weights) and the real MediaPipe pose models."""
    from tests.contract.test_expert_contract import Case

    def photo(env: Any, folder: Path) -> dict[str, str]:
        path = folder / "person.png"
        Image.fromarray(skimage_data.astronaut()).resize((192, 192)).save(path)
        return {"image": str(path)}

    return [
        Case("canny", lambda env: CANNY, "canny-control", photo),
        Case("opencv-lines", lambda env: LINES, "line-control", photo),
        Case("mediapipe-pose", lambda env: env.real_card("mediapipe-pose"), "pose-detection", photo,
             held=lambda e: e._landmarker),
    ]


# --- straight lines (M-LSD style) and scribbles ---

LINES = ModelCard(id="opencv-lines", tasks=["line-control"], backend="opencv-lines", format="none",
                  description="straight line segments")
LINE_REQUEST = "draw a castle following the straight lines of room.jpg"


def test_line_map_of_a_real_photo(photos: dict[str, Path], tmp_path: Path) -> None:
    rocket = tmp_path / "rocket.png"
    Image.fromarray(skimage_data.rocket()).save(rocket)  # launch towers: many straight girders
    expert = expert_class("opencv-lines")(LINES, _ctx(tmp_path))
    result = expert.run("line-control", {"image": str(rocket)}, RunDir(tmp_path / "run"))
    with Image.open(result.outputs["image"]) as img:
        assert img.mode == "RGB" and img.size == (640, 427)
        lines = np.asarray(img)
    assert (lines[..., 0] == lines[..., 2]).all()  # white (grey at anti-aliased borders) on black
    lit = lines[..., 0] > 127
    assert 0.005 < lit.mean() < 0.2 and result.data["line_fraction"] > 0
    segments = np.asarray(result.data["segments"])
    assert result.data["count"] >= 20 and len(segments) == min(result.data["count"], 200)
    assert (segments[:, [0, 2]] <= 640).all() and (segments[:, [1, 3]] <= 427).all() and (segments >= -1).all()
    lengths = np.hypot(segments[:, 2] - segments[:, 0], segments[:, 3] - segments[:, 1])
    assert (np.diff(lengths) <= 0.2).all() and lengths[-1] >= result.data["min_length"] - 0.5  # longest first
    for x1, y1, x2, y2 in segments[:10]:  # each listed segment is drawn: its midpoint is lit
        x, y = int(round((x1 + x2) / 2)), int(round((y1 + y2) / 2))
        assert lit[max(0, y - 1):y + 2, max(0, x - 1):x + 2].any()
    assert result.outputs["text"].startswith(f"{result.data['count']} straight line segments")
    # the Hough fallback finds lines in the same photo too
    hough = LINES.model_copy(update={"options": {"method": "hough"}})
    other = expert_class("opencv-lines")(hough, _ctx(tmp_path)).run("line-control", {"image": str(rocket)},
                                                                      RunDir(tmp_path / "run"))
    assert other.data["method"] == "hough" and other.data["count"] > 10
    assert result.data["method"] in ("lsd", "hough")


def test_line_map_finds_the_sides_of_a_drawn_frame(tmp_path: Path) -> None:
    from PIL import ImageDraw

    img = Image.new("RGB", (200, 150), (200, 200, 200))
    ImageDraw.Draw(img).rectangle((40, 30, 160, 120), outline=(20, 20, 20), width=3)
    img.save(tmp_path / "frame.png")
    result = expert_class("opencv-lines")(LINES, _ctx(tmp_path)).run(
        "line-control", {"image": str(tmp_path / "frame.png")}, RunDir(tmp_path / "run"))
    top = result.data["segments"][:4]  # the four longest: along the frame's sides (either edge of the stroke)
    for x1, y1, x2, y2 in top:
        horizontal = abs(y1 - y2) < 2 and abs(abs(x1 - x2) - 120) < 8 and min(abs(y1 - 30), abs(y1 - 120)) < 4
        vertical = abs(x1 - x2) < 2 and abs(abs(y1 - y2) - 90) < 8 and min(abs(x1 - 40), abs(x1 - 160)) < 4
        assert horizontal or vertical, (x1, y1, x2, y2)


def test_line_map_bad_inputs_are_clear(tmp_path: Path) -> None:
    expert = expert_class("opencv-lines")(LINES, _ctx(tmp_path))
    Image.new("RGB", (64, 48), (90, 120, 200)).save(tmp_path / "sky.png")
    with pytest.raises(InputError, match="no straight lines .* in 'sky.png'"):
        expert.run("line-control", {"image": str(tmp_path / "sky.png")}, RunDir(tmp_path / "run"))
    (tmp_path / "room.jpg").write_text("not a photo")
    with pytest.raises(InputError, match="room.jpg.*not a decodable image"):
        expert.run("line-control", {"image": str(tmp_path / "room.jpg")}, RunDir(tmp_path / "run"))
    with pytest.raises(ExpertError, match="not 'canny-control'"):
        expert.run("canny-control", {"image": str(tmp_path / "sky.png")}, RunDir(tmp_path / "run"))


def test_scribble_map_normalises_either_way_round() -> None:
    from PIL import ImageDraw

    from localgpt.experts.control import scribble_map

    def sketch(ink: tuple[int, int, int], paper: tuple[int, int, int]) -> Any:
        img = Image.new("RGB", (64, 48), paper)
        ImageDraw.Draw(img).line((8, 40, 32, 8, 56, 40), fill=ink, width=3)
        return img

    white_on_black, polarity = scribble_map(sketch((255, 255, 255), (0, 0, 0)), "chalk.png")
    assert polarity == "light-on-dark"
    lines = np.asarray(white_on_black)
    assert white_on_black.mode == "RGB" and white_on_black.size == (64, 48)
    assert set(np.unique(lines)) == {0, 255} and 0.02 < (lines[..., 0] > 0).mean() < 0.3
    for ink, paper in (((30, 30, 30), (255, 255, 255)), ((200, 0, 0), (250, 245, 235))):  # pencil; red crayon
        normalised, polarity = scribble_map(sketch(ink, paper), "pencil.png")
        assert polarity == "dark-on-light"
        assert (np.asarray(normalised) == lines).all()  # the same white-on-black map
    with pytest.raises(InputError, match="sketch 'empty.png' holds no lines"):
        scribble_map(Image.new("RGB", (64, 48), (255, 255, 255)), "empty.png")


@pytest.fixture(scope="session")
def line_controlnet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ControlNet pipeline serving line-text-to-image (built once)."""
    pytest.importorskip("diffusers")
    from tests.integration.test_diffusers import build_controlnet

    root = tmp_path_factory.mktemp("line-controlnet")
    build_controlnet(root, "tiny-controlnet-mlsd", ("line-text-to-image",))
    return root / "tiny-controlnet-mlsd"


def test_planned_line_flow_makes_the_picture(line_controlnet: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Image.fromarray(skimage_data.rocket()).resize((96, 64)).save(tmp_path / "room.jpg")
    catalog = Catalog(tmp_path / "store")
    shutil.copytree(line_controlnet, tmp_path / "staging-mlsd")
    catalog.add(Catalog(line_controlnet.parent).get(line_controlnet.name).model_copy(update={"path": None}),
                tmp_path / "staging-mlsd")
    (tmp_path / "staging-lines").mkdir()
    catalog.add(LINES, tmp_path / "staging-lines")
    plan = [{"id": 0, "task": "line-control", "dep": [-1], "args": {"image": "room.jpg"}},
            {"id": 1, "task": "line-text-to-image", "dep": [0],
             "args": {"image": "<resource>-0", "text": "a castle"}}]
    pipe, _ = _pipeline(tmp_path, catalog, [json.dumps(plan)])
    result = pipe.run(LINE_REQUEST, files=[tmp_path / "room.jpg"])
    assert [t.task for t in result.plan.tasks] == ["line-control", "line-text-to-image"]
    lines, picture = result.results
    assert lines.status == "done" and picture.status == "done", (lines.error, picture.error)
    assert [s.model for s in result.selections] == ["opencv-lines", "tiny-controlnet-mlsd"]
    assert picture.args["image"] == lines.outputs["image"] and lines.data["count"] > 0
    with Image.open(lines.outputs["image"]) as img:
        assert img.size == (96, 64)
    with Image.open(picture.outputs["image"]) as img:
        assert img.size == (96, 64) and img.format == "PNG"
    assert picture.outputs["image"] in result.files and result.answer
    # the planner was shown the straight-lines demo as the closest example (last before the request)
    llm = pipe.llm
    assert isinstance(llm, FakeLLM)
    planning = llm.calls[0].messages
    assert "line-text-to-image" in planning[-2]["content"] and "office.jpg" in planning[-3]["content"]
