"""Fakes for tests, of this project and of plugins: a scripted LLM that records its calls, fake experts,
fake model cards, and small valid media files."""

from __future__ import annotations

import json
import re
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localgpt import tasks as registry
from localgpt.config import Settings
from localgpt.experts import expert_class
from localgpt.experts.base import Expert, ExpertContext, ExpertOutput
from localgpt.llm import LLMStats, Message, TokenCallback
from localgpt.runtime.pool import ExpertFactory, ModelPool
from localgpt.runtime.runs import RunDir
from localgpt.schema import ModelCard
from localgpt.store.catalog import Catalog

if TYPE_CHECKING:
    from localgpt.pipeline import Pipeline

Reply = str | Callable[[Sequence[Message], dict[str, Any] | None], str]


@dataclass
class FakeCall:
    """One call recorded by FakeLLM."""

    messages: list[Message]
    schema: dict[str, Any] | None
    temperature: float = 0.0
    seed: int | None = None
    repeat_penalty: float = 1.0
    at: float = field(default_factory=time.monotonic)  # when it was made


class FakeLLM:
    """An LLM for tests: returns scripted replies in order and records every call.

    A reply may be a string or a function of (messages, schema). When the script runs out,
    ``default`` is returned (or an error raised when it is None). Streaming sends the reply
    word by word to ``on_token``. :meth:`warm` records its calls in ``warmed`` and, like a real
    model's, keeps calls waiting until it is done (``warm_gate``, when set, holds it).
    """

    def __init__(self, replies: Iterable[Reply] = (), default: str | None = None, n_ctx: int = 4096) -> None:
        self.replies = list(replies)
        self.default = default
        self.n_ctx = n_ctx
        self.calls: list[FakeCall] = []
        self.stats = LLMStats()
        self.warmed: list[FakeCall] = []
        self.warm_gate: threading.Event | None = None
        self._lock = threading.Lock()

    def warm(self, messages: Sequence[Message], schema: dict[str, Any] | None = None) -> str:
        """Record a warm-up (after ``warm_gate`` is set, when there is one); calls wait for it."""
        with self._lock:
            if self.warm_gate is not None:
                self.warm_gate.wait(30)
            self.warmed.append(FakeCall([dict(m) for m in messages], schema))
        return "evaluated"

    def generate(
        self,
        messages: Sequence[Message],
        *,
        schema: dict[str, Any] | None = None,
        max_tokens: int = 512,
        temperature: float = 0.0,
        on_token: TokenCallback | None = None,
        seed: int | None = None,
        repeat_penalty: float = 1.0,
    ) -> str:
        """Return the next scripted reply."""
        with self._lock:
            self.calls.append(FakeCall([dict(m) for m in messages], schema, temperature, seed, repeat_penalty))
            self.stats.calls += 1
            if self.replies:
                reply = self.replies.pop(0)
            elif self.default is not None:
                reply = self.default
            else:
                raise AssertionError("FakeLLM has no scripted reply left")
        text = reply(messages, schema) if callable(reply) else reply
        if on_token is not None:
            words = text.split(" ")
            for i, word in enumerate(words):
                on_token(word if i == len(words) - 1 else word + " ")
        return text

    def count_tokens(self, text: str) -> int:
        """About one token per four characters."""
        return max(1, len(text) // 4) if text else 0


def png_bytes(tag: str = "") -> bytes:
    """A valid 1x1 PNG whose text chunk makes the content (and so the file name) unique to ``tag``."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"tEXt", b"tag\x00" + tag.encode())
            + chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b""))


def wav_bytes(tag: str = "", samples: int = 160) -> bytes:
    """A valid mono 16 kHz 16-bit WAV of silence, padded with ``tag`` so content differs."""
    pcm = b"\x00\x00" * samples + tag.encode().ljust(len(tag) + len(tag) % 2, b"\x00")
    fmt = struct.pack("<HHIIHH", 1, 1, 16000, 32000, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(pcm)) + pcm
    return b"RIFF" + struct.pack("<I", len(body)) + body


def mp4_bytes(tag: str = "") -> bytes:
    """The first box of an MP4 file (enough for sniffing)."""
    return struct.pack(">I", 24) + b"ftypisom" + b"\x00\x00\x02\x00isomiso2" + tag.encode()


MEDIA = {"image": (png_bytes, ".png"), "audio": (wav_bytes, ".wav"), "video": (mp4_bytes, ".mp4")}


class Recorder:
    """What fake experts saw: loads, closes and the inputs of each run (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.loads: list[str] = []
        self.closes: list[str] = []
        self.runs: list[dict[str, Any]] = []

    def add(self, field: list[Any], item: Any) -> None:
        with self.lock:
            field.append(item)


class FakeExpert(Expert):
    """Serves any task. ``card.options`` steer it: ``sleep`` (seconds), ``fail`` (an error message).

    It produces every kind the task's spec lists: text as ``"<model>(<task>): <inputs>"``, media as a
    real file saved through ``out.save``. Media inputs are read back, so a bad path fails the run.
    """

    def load(self) -> None:
        self.ctx.extra["recorder"].add(self.ctx.extra["recorder"].loads, self.card.id)
        super().load()

    def close(self) -> None:
        self.ctx.extra["recorder"].add(self.ctx.extra["recorder"].closes, self.card.id)
        super().close()

    def run(self, task: str, inputs: dict[str, str], out: RunDir) -> ExpertOutput:
        rec: Recorder = self.ctx.extra["recorder"]
        spec = registry.get(task)
        read: dict[str, bytes] = {}
        for name, value in inputs.items():
            inp = spec.input(name)
            if inp is not None and inp.kind is not registry.Kind.TEXT:
                read[name] = Path(value).read_bytes()
        rec.add(rec.runs, {"model": self.card.id, "task": task, "inputs": dict(inputs), "read": read})
        time.sleep(float(self.card.options.get("sleep", 0)))
        if "fail" in self.card.options:
            raise RuntimeError(self.card.options["fail"])
        outputs: dict[str, str] = {}
        text = " ".join(f"{k}={v}" for k, v in sorted(inputs.items()))
        for kind in spec.produces:
            if kind is registry.Kind.TEXT:
                outputs["text"] = f"{self.card.id}({task}): {text}"
            else:
                make, suffix = MEDIA[kind.value]
                outputs[kind.value] = str(out.save(make(f"{self.card.id}/{task}/{text}"), suffix))
        return ExpertOutput(outputs=outputs, data={"model": self.card.id})


def fake_card(model_id: str, tasks: list[str], size: int = 0, backend: str = "fake", **options: Any) -> ModelCard:
    """A card for a fake expert."""
    return ModelCard(id=model_id, tasks=tasks, backend=backend, format="fake", description=f"fake {model_id}",
                     size_bytes=size, options=options)


def fake_factory(ctx: ExpertContext, backends: dict[str, type[Expert]] | None = None) -> ExpertFactory:
    """A pool factory: backends named in ``backends`` (default: ``fake``) get fakes, others the real class."""
    table = backends if backends is not None else {"fake": FakeExpert}

    def build(card: ModelCard) -> Expert:
        cls = table.get(card.backend) or expert_class(card.backend)
        return cls(card, ctx)

    return build


def install(store: Path, model_id: str, tasks: list[str], **options: Any) -> ModelCard:
    """Add a fake-backend model to ``store`` the way an installer does."""
    folder = store.parent / f"staging-{model_id}"
    folder.mkdir(parents=True)
    (folder / "weights.bin").write_bytes(model_id.encode() * 8)
    card = ModelCard(id=model_id, tasks=tasks, backend="fake", format="fake",
                     description=f"{model_id}: a fake model for {', '.join(tasks)}", options=options)
    return Catalog(store).add(card, folder)


# --- a tokenizer for tiny transformers models, and a fake world behind a real server (tests and bench/) ---

SENTENCE_WORDS = ("the quick brown fox jumps over lazy dog a man is playing guitar on stage i really enjoyed this "
                  "film acting was wonderful worst service have ever had where nearest train station two kittens "
                  "are sleeping warm blanket please translate sentence into french ok")
WORDS = tuple(SENTENCE_WORDS.split(" "))


def build_tokenizer(folder: Path) -> Any:
    """A word-level BERT-style fast tokenizer ([CLS] ... [SEP]) saved into ``folder``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {w: i for i, w in enumerate(specials + sorted(set(WORDS)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=64)
    fast.save_pretrained(str(folder))
    return fast


ANSWER = "The models finished the work."
FAKE_MODELS = {"draw-fake": ["text-to-image"], "caption-fake": ["image-to-text"],
               "tts-fake": ["text-to-speech"], "asr-fake": ["automatic-speech-recognition"]}
IMAGE_FILE = re.compile(r"\S+\.(?:png|jpg)")




def plan_for(request: str, files: list[str]) -> list[dict[str, Any]]:
    """The plan the fake planner writes: keywords of the request pick the tasks."""
    image = next((f for f in files if IMAGE_FILE.fullmatch(f)), None)
    tasks: list[dict[str, Any]] = []
    if "caption" in request and "draw" in request and image:
        tasks.append({"id": 0, "task": "image-to-text", "dep": [-1], "args": {"image": image}})
        tasks.append({"id": 1, "task": "text-to-image", "dep": [0], "args": {"text": "<resource>-0"}})
    elif "draw" in request:
        tasks.append({"id": 0, "task": "text-to-image", "dep": [-1], "args": {"text": "a red square"}})
        if "caption it" in request:
            tasks.append({"id": 1, "task": "image-to-text", "dep": [0], "args": {"image": "<resource>-0"}})
    elif "caption each" in request:
        images = [f for f in files if IMAGE_FILE.fullmatch(f)]
        tasks.extend({"id": i, "task": "image-to-text", "dep": [-1], "args": {"image": f}}
                     for i, f in enumerate(images))
    elif "caption" in request and image:
        tasks.append({"id": 0, "task": "image-to-text", "dep": [-1], "args": {"image": image}})
    elif "depth" in request and image:
        tasks.append({"id": 0, "task": "depth-estimation", "dep": [-1], "args": {"image": image}})
    elif "outside" in request:
        path = request.split("outside ")[1].split()[0]
        tasks.append({"id": 0, "task": "image-to-text", "dep": [-1], "args": {"image": path}})
    else:
        tasks.append({"id": 0, "task": "text-to-speech", "dep": [-1], "args": {"text": "hello"}})
    return tasks


class FakeWorld:
    """A store of fake models and a pipeline factory whose FakeLLM plans by keywords.

    ``release`` gates requests that contain the word "wait"; ``load_gate`` (when set) blocks the
    factory itself, as slow model loading does.
    """

    def __init__(self, tmp: Path, expert: type[FakeExpert] = FakeExpert,
                 options: dict[str, dict[str, Any]] | None = None) -> None:
        self.tmp = tmp
        self.store = tmp / "store"
        self.store.mkdir(parents=True)
        for model_id, tasks in FAKE_MODELS.items():
            install(self.store, model_id, tasks, **(options or {}).get(model_id, {}))
        self.recorder = Recorder()
        self.expert = expert
        self.release = threading.Event()
        self.load_gate: threading.Event | None = None
        self.llms: list[FakeLLM] = []
        self.planner_prompts: list[list[Message]] = []

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {"store": self.store, "data_dir": self.tmp / "data", "task_timeout": 20,
                                  "runs_dir": self.tmp / "elsewhere", "concurrency": 2, "queue_size": 4}
        return Settings(**(values | overrides))

    def brain(self, messages: Sequence[Message], schema: dict[str, Any] | None) -> str:
        system = messages[0]["content"]
        if system.startswith("You are localgpt, an assistant that answered"):
            if "where" in messages[-1]["content"]:  # quote a produced file's path, as a real LLM may
                path = re.search(r'"(/[^"]+\.png)"', messages[-1]["content"])
                return f"{ANSWER} It is at {path.group(1) if path else '?'}, enjoy."
            return ANSWER
        if schema is not None and "reason" in schema.get("properties", {}):
            return json.dumps({"id": schema["properties"]["id"]["enum"][0], "reason": "it fits"})
        if system.startswith("You are the planner"):
            self.planner_prompts.append([dict(m) for m in messages])
            prompt = messages[-1]["content"]
            request = prompt.split("\n")[0].removeprefix("Request: ")
            listed = prompt.split("\nFiles: ", 1)[1]
            files = [] if listed == "none" else listed.split(", ")
            if "wait" in request:
                self.release.wait(30)
            plan = plan_for(request, files)
            if schema is not None and "steps" in schema.get("properties", {}):  # the decomposing planner
                steps = [f"Step {i}: run {t['task']}" for i, t in enumerate(plan, 1)]
                return json.dumps({"steps": steps, "tasks": plan})
            if schema is not None and "tasks" in schema.get("properties", {}):  # its steps inline
                return json.dumps({"tasks": [{"step": f"Step {i}: run {t['task']}", **t}
                                             for i, t in enumerate(plan, 1)]})
            return json.dumps(plan)
        raise AssertionError(f"unexpected LLM call: {messages[-1]['content'][:80]}")

    def factory(self, settings: Settings) -> Pipeline:
        from localgpt.pipeline import Pipeline

        if self.load_gate is not None:
            self.load_gate.wait(30)
        llm = ChoppyLLM([self.brain] * 5000)
        self.llms.append(llm)
        ctx = ExpertContext(settings=settings, llm=llm, extra={"recorder": self.recorder})
        pool = ModelPool(ctx, 1 << 30, factory=fake_factory(ctx, {"fake": self.expert}))
        return Pipeline(settings, llm, Catalog(settings.store), pool)


class ChoppyLLM(FakeLLM):
    """FakeLLM streaming in 5-character pieces (so words, and paths, are split across tokens)."""

    def generate(self, messages: Sequence[Message], **kwargs: Any) -> str:
        on_token = kwargs.pop("on_token", None)
        text = super().generate(messages, **kwargs)
        if on_token is not None:
            for i in range(0, len(text), 5):
                on_token(text[i:i + 5])
        return text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """A real uvicorn server for an app, in a thread, on a free loopback port."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)

    def wait_ready(self, timeout: float = 20) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while httpx.get(self.url + "/health").status_code != 200:
            assert time.monotonic() < deadline, "the server never became ready"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def serve(world: FakeWorld, **overrides: Any) -> Served:
    """A started, ready server for ``world``."""
    from localgpt.server import create_app

    served = Served(create_app(world.settings(**overrides), world.factory))
    if world.load_gate is None:
        served.wait_ready()
    return served


# --- tiny random diffusers pipelines, saved as installed models (the tests and bench.gpu_check) ---

TEXT_DIM = 16  # hidden size of the tiny text encoder = the UNets' cross-attention size


def tiny_tokenizer(folder: Path) -> Any:
    """A CLIP BPE tokenizer over single letters (vocab.json + merges.txt written here)."""
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    symbols = list("abcdefghijklmnopqrstuvwxyz0123456789.,'!?")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for s in symbols:
        vocab[s] = len(vocab)
        vocab[s + "</w>"] = len(vocab)
    for merged in ("th", "the</w>"):
        vocab[merged] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\nt h\nth e</w>\n", encoding="utf-8")
    tok = transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16)
    return tok


def tiny_text_encoder(vocab_size: int) -> Any:
    import torch
    import transformers

    config = transformers.CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=TEXT_DIM, intermediate_size=32, num_attention_heads=2,
        num_hidden_layers=1, max_position_embeddings=16, projection_dim=TEXT_DIM,
        bos_token_id=0, eos_token_id=1, pad_token_id=1)
    torch.manual_seed(0)
    return transformers.CLIPTextModel(config).eval()


def tiny_vae() -> Any:
    import diffusers

    return diffusers.AutoencoderKL(
        block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=8, sample_size=32)


def tiny_unet(in_channels: int = 4) -> Any:
    import diffusers

    return diffusers.UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=in_channels, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_DIM, attention_head_dim=4, norm_num_groups=8)


def tiny_controlnet() -> Any:
    import diffusers

    return diffusers.ControlNetModel(
        block_out_channels=(8, 16), layers_per_block=1, in_channels=4, cross_attention_dim=TEXT_DIM,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), attention_head_dim=4, norm_num_groups=8,
        conditioning_embedding_out_channels=(4, 8))


def sd_parts(folder: Path) -> dict[str, Any]:
    """The shared parts of a tiny Stable Diffusion pipeline (a 2x VAE: 32 px images, 16 px latents)."""
    import diffusers
    import torch

    torch.manual_seed(0)
    tok = tiny_tokenizer(folder / "tok")
    return {"vae": tiny_vae(), "text_encoder": tiny_text_encoder(len(tok)), "tokenizer": tok,
            "scheduler": diffusers.DDIMScheduler(num_train_timesteps=100, clip_sample=False, steps_offset=1)}


def save_model(root: Path, model_id: str, pipe: Any, tasks: list[str], **options: Any) -> ModelCard:
    """Save ``pipe`` into ``root/model_id`` and return its card (also written as model.json)."""
    folder = root / (model_id + ".partial")
    pipe.save_pretrained(str(folder))
    card = ModelCard(id=model_id, tasks=tasks, backend="diffusers", format="pytorch",
                     description=f"tiny random {options.get('pipeline_class')} for tests", license="apache-2.0",
                     options={"steps": 2, "guidance": 2.0, **options})
    return Catalog(root).add(card, folder)


def build_sd(root: Path) -> ModelCard:
    """A tiny random Stable Diffusion pipeline, installed in ``root`` (text-to-image, image-to-image)."""
    import diffusers
    import torch

    parts = sd_parts(root / "sd-src")
    torch.manual_seed(1)
    pipe = diffusers.StableDiffusionPipeline(unet=tiny_unet(), safety_checker=None, feature_extractor=None,
                                             requires_safety_checker=False, **parts)
    return save_model(root, "tiny-sd", pipe, ["text-to-image", "image-to-image"],
                      pipeline_class="StableDiffusionPipeline", width=48, height=32)
