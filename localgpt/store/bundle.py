"""Offline bundles: carry installed models to an air-gapped machine in one tar file.

A bundle holds ``index.json`` first (every model id, and every file of every model, ``model.json``
included, with its sha256 and size) and then each model's folder as ``<id>/<file>``. Importing checks
every member's name and type before reading anything (absolute paths, ``..``, links, devices are
refused), streams the files into a temporary folder inside the store while hashing them, compares
each against the index and each model's card, and registers the models only when all of them
passed. Importing a bundle whose models are already installed with the same files changes nothing.

Example::

    from localgpt.store.bundle import make_bundle, import_bundle
    make_bundle(Path("model_store"), Path("models.tar"), ["whisper-tiny-en"])
    import_bundle(Path("/data/models"), Path("models.tar"))
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from localgpt.errors import StoreError
from localgpt.fileio import copy_hashing, human_size, print_err
from localgpt.schema import FileEntry, ModelCard
from localgpt.store.catalog import MANIFEST, PARTIAL, Catalog, read_manifest, remove_tree, valid_id

Progress = Callable[[str], None]
INDEX = "index.json"
FORMAT = "localgpt-bundle"
VERSION = 1
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    """A plain-file member with neutral owner and mode (bundles do not leak local users)."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = 0
    info.uname = info.gname = ""
    return info


def make_bundle(store: Path, out: Path, ids: Sequence[str] = (), progress: Progress | None = None) -> dict[str, Any]:
    """Write the models ``ids`` (default: all installed) of ``store`` with their cards into tar file ``out``.

    Every model is re-hashed first: a model whose files do not match its card is not bundled (StoreError).
    ``out`` ending in ``.gz`` is gzip-compressed. Returns the index written into the bundle.

    Example::

        make_bundle(Path("model_store"), Path("speech.tar"), ["piper-en-us-joe-medium", "whisper-tiny-en"])
    """
    say = progress or print_err
    catalog = Catalog(Path(store))
    cards = [catalog.get(i) for i in ids] if ids else catalog.cards()
    if not cards:
        raise StoreError(f"no models to bundle in {catalog.store}")
    problems = catalog.verify([c.id for c in cards])
    bad = {k: v for k, v in problems.items() if v}
    if bad:
        first = next(iter(bad))
        raise StoreError(f"model {first} does not match its card: {bad[first][0]}",
                         hint="reinstall it, or leave it out of the bundle")
    manifests = {c.id: (c.model_dump_json(indent=2) + "\n").encode() for c in cards}
    index: dict[str, Any] = {"format": FORMAT, "version": VERSION, "models": []}
    for card in cards:
        entries = [{"path": MANIFEST, "sha256": hashlib.sha256(manifests[card.id]).hexdigest(),
                    "size": len(manifests[card.id])}]
        entries += [f.model_dump() for f in card.files]
        index["models"].append({"id": card.id, "files": entries})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    mode = "w:gz" if out.name.endswith((".gz", ".tgz")) else "w"
    try:
        with tarfile.open(tmp, mode) as tar:  # type: ignore[call-overload]
            data = json.dumps(index, indent=2).encode()
            tar.addfile(_tarinfo(INDEX, len(data)), io.BytesIO(data))
            for card in cards:
                assert card.path is not None
                tar.addfile(_tarinfo(f"{card.id}/{MANIFEST}", len(manifests[card.id])),
                            io.BytesIO(manifests[card.id]))
                for f in card.files:
                    with (card.path / f.path).open("rb") as src:
                        tar.addfile(_tarinfo(f"{card.id}/{f.path}", f.size), src)
                say(f"bundled {card.id} ({len(card.files)} files, {human_size(card.size_bytes)})")
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return index


def check_member(member: tarfile.TarInfo) -> None:
    """StoreError unless ``member`` is a plain file or folder with a safe relative name."""
    name = member.name
    path = PurePosixPath(name)
    if not name or name.startswith(("/", "\\")) or "\\" in name or re.match(r"^[A-Za-z]:", name):
        raise StoreError(f"bundle member {name!r} has an absolute or non-POSIX path", hint="the bundle is unsafe")
    if ".." in path.parts or any(p in ("", ".") for p in name.rstrip("/").split("/")):
        raise StoreError(f"bundle member {name!r} leaves or confuses its folder ('..', '.', '//')",
                         hint="the bundle is unsafe; refusing to import it")
    if not (member.isfile() or member.isdir()):
        kind = ("a symbolic link" if member.issym() else "a hard link" if member.islnk()
                else "a device" if member.isdev() else "a special file")
        raise StoreError(f"bundle member {name!r} is {kind}; bundles hold plain files only",
                         hint="the bundle is unsafe; refusing to import it")
    if member.isfile() and name != INDEX and not valid_id(path.parts[0]):
        raise StoreError(f"bundle member {name!r} is not inside a model folder")


def _read_index(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], where: Path) -> list[dict[str, Any]]:
    """The models listed by the bundle's index, checked for shape."""
    if INDEX not in members:
        raise StoreError(f"{where} has no {INDEX}; it is not a localgpt bundle",
                         hint="make bundles with: localgpt models bundle")
    src = tar.extractfile(members[INDEX])
    assert src is not None
    try:
        index = json.loads(src.read(members[INDEX].size))
    except (ValueError, UnicodeDecodeError) as e:
        raise StoreError(f"{where}: {INDEX} is not valid JSON: {e}") from e
    if not isinstance(index, dict) or index.get("format") != FORMAT or not isinstance(index.get("models"), list):
        raise StoreError(f"{where}: {INDEX} is not a localgpt bundle index")
    if index.get("version") != VERSION:
        raise StoreError(f"{where}: bundle version {index.get('version')} is not supported (this is {VERSION})",
                         hint="upgrade localgpt on this machine")
    for model in index["models"]:
        if not isinstance(model, dict) or not valid_id(str(model.get("id", ""))) or \
                not isinstance(model.get("files"), list):
            raise StoreError(f"{where}: {INDEX} has a malformed model entry")
        for f in model["files"]:
            if not (isinstance(f, dict) and isinstance(f.get("path"), str) and isinstance(f.get("size"), int)
                    and _HEX64.match(str(f.get("sha256", "")))):
                raise StoreError(f"{where}: {INDEX} has a malformed file entry in model {model['id']}")
    ids = [m["id"] for m in index["models"]]
    if len(set(ids)) != len(ids):
        raise StoreError(f"{where}: {INDEX} lists a model twice")
    return list(index["models"])


def _already_installed(catalog: Catalog, model_id: str, files: list[dict[str, Any]]) -> bool:
    """Whether ``model_id`` is installed with exactly the bundle's files (the manifest aside)."""
    manifest = catalog.store / model_id / MANIFEST
    if not manifest.is_file():
        return False
    try:
        card = read_manifest(manifest)
    except StoreError:
        return False
    wanted = {(f["path"], f["sha256"], f["size"]) for f in files if f["path"] != MANIFEST}
    return {(f.path, f.sha256, f.size) for f in card.files} == wanted and catalog.is_installed(card)


def _extract_checked(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path, entry: dict[str, Any]) -> None:
    """Stream one member to ``target`` while hashing it; StoreError when it differs from the index."""
    target.parent.mkdir(parents=True, exist_ok=True)
    src = tar.extractfile(member)
    assert src is not None
    with target.open("xb") as sink:
        digest, size = copy_hashing([src], sink)
    if size != entry["size"] or digest != entry["sha256"]:
        raise StoreError(f"bundle file {member.name} does not match the bundle's index "
                         f"(sha256 {digest[:12]}..., index {entry['sha256'][:12]}...)",
                         hint="the bundle was altered or damaged in transit; nothing was imported")


def import_bundle(store: Path, bundle: Path, progress: Progress | None = None) -> list[ModelCard]:
    """Import every model of ``bundle`` into ``store``; returns the cards registered (none if all were there).

    Nothing is registered unless every member name is safe and every file matches both the bundle's
    index and its model's card. Models already installed with the same files are skipped.

    Example::

        cards = import_bundle(Path("model_store"), Path("models.tar"))
    """
    say = progress or print_err
    store, bundle = Path(store), Path(bundle)
    catalog = Catalog(store)
    try:
        tar = tarfile.open(bundle, "r:*")  # noqa: SIM115 - closed by the with below
    except (OSError, tarfile.TarError) as e:
        raise StoreError(f"cannot open bundle {bundle}: {e}", hint="is it a tar file made by localgpt?") from e
    with tar:
        try:
            listing = tar.getmembers()
        except tarfile.TarError as e:
            raise StoreError(f"bundle {bundle} is damaged: {e}") from e
        for member in listing:  # every name is checked before anything is read or written
            check_member(member)
        members: dict[str, tarfile.TarInfo] = {}
        for member in listing:
            if member.isfile():
                if member.name in members:
                    raise StoreError(f"bundle member {member.name!r} appears twice", hint="the bundle is unsafe")
                members[member.name] = member
        models = _read_index(tar, members, bundle)
        expected = {f"{m['id']}/{f['path']}" for m in models for f in m["files"]} | {INDEX}
        extra = sorted(set(members) - expected)
        lacking = sorted(expected - set(members))
        if extra or lacking:
            what = f"files the index does not list: {extra[:3]}" if extra else f"files missing: {lacking[:3]}"
            raise StoreError(f"bundle {bundle} does not match its index ({what})",
                             hint="the bundle was altered or truncated; nothing was imported")
        for m in models:
            for f in m["files"]:
                if members[f"{m['id']}/{f['path']}"].size != f["size"]:
                    raise StoreError(f"bundle file {m['id']}/{f['path']} is not {f['size']} bytes as indexed",
                                     hint="the bundle was altered; nothing was imported")

        todo = [m for m in models if not _already_installed(catalog, m["id"], m["files"])]
        for m in models:
            if m not in todo:
                say(f"{m['id']}: already installed with the same files")
        if not todo:
            return []
        store.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".import-", suffix=PARTIAL, dir=store))
        try:
            cards: list[tuple[ModelCard, Path]] = []
            for m in todo:
                folder = work / m["id"]
                for f in m["files"]:
                    _extract_checked(tar, members[f"{m['id']}/{f['path']}"], folder / f["path"], f)
                card = read_manifest(folder / MANIFEST)
                listed = {(f["path"], f["sha256"], f["size"]) for f in m["files"] if f["path"] != MANIFEST}
                if {(f.path, f.sha256, f.size) for f in card.files} != listed:
                    raise StoreError(f"bundle model {m['id']}: its card and the bundle's index list different "
                                     "files", hint="the bundle was altered; nothing was imported")
                cards.append((card, folder))
                say(f"{m['id']}: {len(m['files'])} files checked")
            done = []
            for card, folder in cards:  # everything passed: register, one rename per model
                clean = card.model_copy(update={"path": None,
                                                "files": [FileEntry(**f.model_dump()) for f in card.files]})
                done.append(catalog.add(clean, folder))
                say(f"{card.id}: imported into {store / card.id}")
            return done
        finally:
            remove_tree(work)
