"""The model catalog: what is installed in the model store and which models can serve a task.

The store is a folder holding one sub-folder per model, each with a ``model.json`` manifest
(a :class:`~localgpt.schema.ModelCard`) next to the model's files. Folders whose name ends in
``.partial`` are installs in progress (or left by an interrupted one) and are never read.

Example::

    catalog = Catalog(Path("model_store"), controller="qwen2.5-coder-1.5b-instruct")
    for card in catalog.candidates("summarization"):
        print(card.id, card.backend)
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from pydantic import ValidationError

from localgpt import tasks
from localgpt.errors import NoModelError, StoreError
from localgpt.fileio import human_size, sha256_file
from localgpt.schema import FileEntry, ModelCard, ModelSource

MANIFEST = "model.json"
PARTIAL = ".partial"
CONTROLLER_ID = "controller-llm"
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def valid_id(model_id: str) -> bool:
    """Whether ``model_id`` can name a folder in the store (no separators, not a partial folder)."""
    return bool(_ID_RE.match(model_id)) and not model_id.endswith(PARTIAL)


def hash_folder(folder: Path) -> list[FileEntry]:
    """Every file under ``folder`` (except the manifest) with its sha256 and size, in path order."""
    return [FileEntry(path=p.relative_to(folder).as_posix(), sha256=sha256_file(p), size=p.stat().st_size)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST]


def read_manifest(path: Path) -> ModelCard:
    """Parse one ``model.json``; StoreError naming the file and the problem if it is not a valid card."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise StoreError(f"cannot read model manifest {path}: {e.strerror or e}") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StoreError(f"model manifest {path} is not valid JSON: {e}",
                         hint="fix or delete the file, or reinstall the model") from e
    try:
        card = ModelCard.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in e.errors()
        )
        raise StoreError(f"model manifest {path} is not a valid model card: {problems}",
                         hint="fix or delete the file, or reinstall the model") from e
    if card.id != path.parent.name:
        raise StoreError(f"model manifest {path} has id {card.id!r} but lies in folder {path.parent.name!r}",
                         hint="the folder name must equal the model id")
    return card.model_copy(update={"path": path.parent})


def existing_card(store: Path, model_id: str) -> ModelCard | None:
    """The card of ``model_id`` in ``store`` when its manifest exists and reads cleanly, else None."""
    manifest = Path(store) / model_id / MANIFEST
    if not manifest.is_file():
        return None
    try:
        return read_manifest(manifest)
    except StoreError:
        return None


def write_manifest(card: ModelCard, folder: Path) -> Path:
    """Write ``card`` as ``folder/model.json`` (via a temporary file, so a reader never sees half of it)."""
    target = folder / MANIFEST
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(card.model_dump_json(indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, target)
    return target


class Catalog:
    """The models installed in one store folder.

    Args:
        store: the model store folder (it need not exist yet: then nothing is installed).
        controller: id of the controller LLM (a GGUF model) when there is one; text tasks marked
            ``llm_servable`` in the task registry then also get the controller as a last candidate.

    The catalog re-reads the manifests on each call, so it sees models that another process installs.
    """

    def __init__(self, store: Path, controller: str | None = None) -> None:
        self.store = Path(store)
        self.controller = controller

    # --- reading ---

    def cards(self) -> list[ModelCard]:
        """Every model with a manifest in the store, sorted by id (``path`` set to its folder).

        Raises StoreError naming the manifest that does not parse.
        """
        if not self.store.is_dir():
            return []
        found = []
        for folder in self.store.iterdir():
            if not folder.is_dir() or folder.name.endswith(PARTIAL) or folder.name.startswith("."):
                continue
            manifest = folder / MANIFEST
            if manifest.is_file():
                found.append(read_manifest(manifest))
        return sorted(found, key=lambda c: c.id)

    def ids(self) -> list[str]:
        """The ids of every model with a manifest, sorted."""
        return [c.id for c in self.cards()]

    def get(self, model_id: str) -> ModelCard:
        """The card of ``model_id``; NoModelError (listing the installed ids) if there is none."""
        if valid_id(model_id):
            manifest = self.store / model_id / MANIFEST
            if manifest.is_file():
                return read_manifest(manifest)
        raise NoModelError(f"no model {model_id!r} in the model store {self.store}", hint=self._installed_hint())

    def is_installed(self, card: ModelCard) -> bool:
        """Whether every file of ``card`` exists with its recorded size (cheap: nothing is hashed)."""
        folder = card.path if card.path is not None else self.store / card.id
        try:
            return all((folder / f.path).stat().st_size == f.size for f in card.files)
        except OSError:
            return False

    def candidates(self, task: str) -> list[ModelCard]:
        """Installed models that can serve ``task``: dedicated models first (by id), the controller LLM last.

        The controller appears (as a virtual card with id ``controller-llm``, backend ``llm``) only when
        a controller is set and the task registry marks ``task`` as servable by the LLM.
        """
        found = [c for c in self.cards() if task in c.tasks and self.is_installed(c)]
        if self.controller and tasks.is_known(task) and tasks.get(task).llm_servable:
            found.append(self.controller_card())
        return found

    def controller_card(self) -> ModelCard:
        """The virtual card standing for the controller LLM answering a text task itself."""
        if not self.controller:
            raise NoModelError("no controller LLM is set", hint="set LOCALGPT_PLANNER to a GGUF model")
        license_ = "unknown"
        if valid_id(self.controller) and (self.store / self.controller / MANIFEST).is_file():
            license_ = self.get(self.controller).license
        return ModelCard(
            id=CONTROLLER_ID,
            tasks=[t.name for t in tasks.TASKS if t.llm_servable],
            backend="llm",
            format="gguf",
            description=(f"the controller LLM ({self.controller}) answers this itself, "
                         "as HuggingGPT does for text tasks"),
            source=ModelSource(type="builtin"),
            license=license_,
        )

    # --- checking ---

    def verify(self, ids: list[str] | None = None) -> dict[str, list[str]]:
        """Re-hash every file of the given models (default: all) and list the problems of each.

        Returns ``{model_id: [problem, ...]}``; an empty list means every file matches its manifest.
        Raises NoModelError for an id that is not installed.
        """
        cards = self.cards() if ids is None else [self.get(i) for i in ids]
        report: dict[str, list[str]] = {}
        for card in cards:
            assert card.path is not None
            problems: list[str] = []
            for entry in card.files:
                problems.extend(_check_file(card.path, entry))
            report[card.id] = problems
        return report

    # --- changing ---

    def add(self, card: ModelCard, folder: Path) -> ModelCard:
        """Register the model whose files lie in ``folder``: write its manifest and move it into place.

        ``folder`` should be a ``<store>/<id>.partial`` folder (any folder on the store's file system
        works). If ``card.files`` is empty, every file under ``folder`` is hashed and recorded; otherwise
        each listed file must exist with its recorded size. The final step is one rename, so the store
        never shows a half-installed model; an older install of the same id is replaced.
        Returns the card with ``path`` set.
        """
        if not valid_id(card.id):
            raise StoreError(f"invalid model id {card.id!r}", hint="use letters, digits, '.', '_' and '-'")
        folder = Path(folder)
        if not folder.is_dir():
            raise StoreError(f"cannot add model {card.id}: {folder} is not a folder")
        if not card.files:
            card = card.model_copy(update={"files": hash_folder(folder)})
        for entry in card.files:
            found = folder / entry.path
            if not found.is_file() or found.stat().st_size != entry.size:
                raise StoreError(f"cannot add model {card.id}: file {entry.path} is missing from {folder} "
                                 f"or is not {entry.size} bytes")
        card = card.model_copy(update={"size_bytes": sum(f.size for f in card.files), "path": None})
        write_manifest(card, folder)

        self.store.mkdir(parents=True, exist_ok=True)
        final = self.store / card.id
        if folder.resolve() != final.resolve():
            staged = folder
            if folder.resolve().parent != self.store.resolve():
                staged = self.store / (card.id + PARTIAL)
                remove_tree(staged)
                if _same_filesystem(folder, self.store):
                    os.replace(folder, staged)
                else:
                    shutil.copytree(folder, staged)
            old = self.store / (card.id + ".old" + PARTIAL)
            if final.exists():
                remove_tree(old)
                os.replace(final, old)
            os.replace(staged, final)
            remove_tree(old)
        return card.model_copy(update={"path": final})

    def remove(self, model_id: str) -> None:
        """Delete an installed model's folder; StoreError if there is no such model."""
        if not valid_id(model_id) or not (self.store / model_id).is_dir():
            raise StoreError(f"cannot remove {model_id!r}: no such model in {self.store}",
                             hint=self._installed_hint())
        # Rename first so a reader never sees a half-deleted model.
        doomed = self.store / (model_id + ".removing" + PARTIAL)
        remove_tree(doomed)
        os.replace(self.store / model_id, doomed)
        remove_tree(doomed)

    def _installed_hint(self) -> str:
        """The hint listing installed ids, or saying how to install some."""
        try:
            ids = self.ids()
        except StoreError:
            ids = []
        if ids:
            return "installed: " + ", ".join(ids)
        return "no models are installed; run: python download_models.py --profile starter"


def _check_file(folder: Path, entry: FileEntry) -> list[str]:
    """The problems of one file against its manifest entry (empty if it matches)."""
    path = folder / entry.path
    if not path.is_file():
        return [f"{entry.path}: missing"]
    size = path.stat().st_size
    if size != entry.size:
        return [f"{entry.path}: size differs (manifest {entry.size} B, found {size} B)"]
    digest = sha256_file(path)
    if digest != entry.sha256:
        return [f"{entry.path}: sha256 differs (manifest {entry.sha256[:12]}..., found {digest[:12]}...)"]
    return []


def remove_tree(path: Path) -> None:
    """Remove a folder tree (or a file) if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _same_filesystem(a: Path, b: Path) -> bool:
    """Whether two existing paths lie on the same file system (so a rename between them is atomic)."""
    return os.stat(a).st_dev == os.stat(b).st_dev


def runtime_label(card: ModelCard) -> str:
    """The FORMAT cell of ``models list``: ONNX models also show int8 and the devices they run on.

    Example: ``onnx int8 (cpu|cuda)`` for an int8 export that runs on the CPU or a CUDA GPU.
    """
    if card.format != "onnx":
        return card.format
    onnx_file = str(card.options.get("onnx_file") or card.options.get("model") or "")
    int8 = "quantized" in onnx_file or "int8" in onnx_file or card.id.endswith("-int8")
    return f"onnx{' int8' if int8 else ''} ({'|'.join(card.devices) or 'cpu'})"


def format_table(catalog: Catalog) -> str:
    """A plain-text table of the installed models: task, id, backend, format, size, license, status."""
    cards = catalog.cards()
    if not cards:
        return (f"no models installed in {catalog.store}\n"
                "install some with: python download_models.py --profile starter")
    header = ("TASK", "ID", "BACKEND", "FORMAT", "SIZE", "LICENSE", "STATUS")
    rows = [
        (", ".join(c.tasks), c.id, c.backend, runtime_label(c), human_size(c.size_bytes), c.license,
         "installed" if catalog.is_installed(c) else "missing files")
        for c in sorted(cards, key=lambda c: (c.tasks[0] if c.tasks else "", c.id))
    ]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in (header, *rows)]
    return "\n".join(lines)
