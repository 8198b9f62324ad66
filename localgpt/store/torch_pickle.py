"""Read a PyTorch checkpoint (a ``.pth`` / ``.pt`` state dict) into numpy arrays without PyTorch.

A checkpoint is a pickle whose tensors point at raw storages kept beside it. A full unpickle runs
any code the file names, so this reader allows only the globals a plain state dict needs (the
tensor-rebuild functions, the typed storage classes, ``OrderedDict``) and refuses every other one;
tensors are rebuilt as numpy arrays from the raw bytes. Both layouts PyTorch writes are read: the zip
archive (``torch.save`` since 1.6: ``<name>/data.pkl`` + ``<name>/data/<key>``) and the legacy stream
(magic number, protocol, system info, the pickle, the storage keys, then each storage's bytes).

Example::

    from localgpt.store.torch_pickle import load_state_dict
    weights = load_state_dict(Path("efficientnet-lite0.pth"))
    weights["_fc.weight"].shape  # (1000, 1280)
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from localgpt.errors import StoreError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
# torch's typed storage classes and the numpy dtype of their elements (bfloat16 has none in numpy)
STORAGE_DTYPES: dict[str, np.dtype[Any]] = {
    "FloatStorage": np.dtype("<f4"), "DoubleStorage": np.dtype("<f8"), "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"), "IntStorage": np.dtype("<i4"), "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"), "ByteStorage": np.dtype("u1"), "BoolStorage": np.dtype("?"),
}


@dataclass(frozen=True)
class _StorageType:
    """Stands for a ``torch.<X>Storage`` class named in the pickle."""

    name: str

    @property
    def dtype(self) -> np.dtype[Any]:
        return STORAGE_DTYPES[self.name]


class _Storage:
    """A storage whose bytes are read after the pickle (legacy) or from its own archive member (zip)."""

    def __init__(self, key: str, dtype: np.dtype[Any], numel: int) -> None:
        self.key = key
        self.dtype = dtype
        self.numel = numel
        self.array: np.ndarray | None = None


@dataclass
class _Tensor:
    """A tensor waiting for its storage's bytes."""

    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def materialise(self) -> np.ndarray:
        flat = self.storage.array
        if flat is None:
            raise StoreError(f"checkpoint storage {self.storage.key} was never read")
        if not self.shape:
            return np.array(flat[self.offset], dtype=flat.dtype)
        need = self.offset + 1 + sum((n - 1) * s for n, s in zip(self.shape, self.stride, strict=True))
        if min(self.shape) > 0 and need > flat.size:
            raise StoreError(f"checkpoint tensor runs past its storage {self.storage.key}")
        item = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(flat[self.offset:], shape=self.shape,
                                               strides=tuple(s * item for s in self.stride), writeable=False)
        return np.ascontiguousarray(view)


def _rebuild_tensor(storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...],
                    *_: Any) -> _Tensor:
    """Stands for ``torch._utils._rebuild_tensor`` / ``_rebuild_tensor_v2`` (grad flags and hooks dropped)."""
    if not isinstance(storage, _Storage):
        raise StoreError("checkpoint tensor does not point at a storage")
    return _Tensor(storage, int(offset), tuple(int(n) for n in size), tuple(int(s) for s in stride))


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class _Restricted(pickle.Unpickler):
    """An unpickler that resolves only the globals of a plain state dict; storages are persistent ids."""

    def __init__(self, stream: IO[bytes], storages: dict[str, _Storage]) -> None:
        super().__init__(stream)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED.get((module, name))
        if found is None:
            raise StoreError(f"checkpoint names {module}.{name}, which a plain state dict does not need",
                             hint="only tensors and dicts of tensors are read; the file was not trusted further")
        return found

    def persistent_load(self, pid: Any) -> Any:
        # ('storage', storage_type, key, location, numel[, view_metadata])
        if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage" or not isinstance(pid[1], _StorageType):
            raise StoreError(f"checkpoint holds an unsupported persistent object {str(pid)[:80]}")
        if len(pid) > 5 and pid[5] is not None:
            raise StoreError("checkpoint holds a storage view (a layout older than PyTorch 1.0), not supported")
        key = str(pid[2])
        if key not in self.storages:
            self.storages[key] = _Storage(key, pid[1].dtype, int(pid[4]))
        return self.storages[key]


def _tensors(obj: Any, where: str) -> dict[str, np.ndarray]:
    """The flat ``name -> array`` mapping of a (possibly nested) state dict."""
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise StoreError(f"{where} does not hold a state dict (found {type(obj).__name__})")
    out: dict[str, np.ndarray] = {}
    for name, value in obj.items():
        if isinstance(value, _Tensor):
            out[str(name)] = value.materialise()
    return out


def _load_zip(path: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise StoreError(f"{path} is a zip but not a PyTorch checkpoint (no single data.pkl)")
        root = pickles[0][: -len("data.pkl")]
        storages: dict[str, _Storage] = {}
        state = _Restricted(io.BytesIO(archive.read(pickles[0])), storages).load()
        for key, storage in storages.items():
            raw = archive.read(f"{root}data/{key}")
            storage.array = np.frombuffer(raw, dtype=storage.dtype, count=storage.numel)
    return _tensors(state, str(path))


def _load_legacy(path: Path) -> dict[str, np.ndarray]:
    with path.open("rb") as stream:
        def plain() -> Any:  # the header pickles hold only numbers, strings and a dict of them
            return _Restricted(stream, {}).load()

        if plain() != LEGACY_MAGIC:
            raise StoreError(f"{path} is not a PyTorch checkpoint (wrong magic number)")
        plain()  # protocol version
        plain()  # system info: endianness and type sizes
        storages: dict[str, _Storage] = {}
        state = _Restricted(stream, storages).load()
        keys = plain()
        if not isinstance(keys, list):
            raise StoreError(f"{path}: the storage key list is missing")
        for key in keys:
            storage = storages.get(str(key))
            if storage is None:
                raise StoreError(f"{path}: storage {key} is listed but no tensor uses it")
            (numel,) = struct.unpack("<q", stream.read(8))
            nbytes = numel * storage.dtype.itemsize
            raw = stream.read(nbytes)
            if len(raw) != nbytes:
                raise StoreError(f"{path} is truncated (storage {key})")
            storage.array = np.frombuffer(raw, dtype=storage.dtype)
    return _tensors(state, str(path))


def load_state_dict(path: Path) -> dict[str, np.ndarray]:
    """The tensors of the PyTorch checkpoint ``path`` as numpy arrays, by name.

    Raises StoreError for a file that is not a checkpoint or that names anything beyond tensors,
    storages and dicts (nothing it names is imported or called).
    """
    path = Path(path)
    loader: Callable[[Path], dict[str, np.ndarray]] = _load_zip if zipfile.is_zipfile(path) else _load_legacy
    try:
        return loader(path)
    except (pickle.UnpicklingError, EOFError, struct.error, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise StoreError(f"{path} is not a readable PyTorch checkpoint: {exc}") from exc
