"""The torch-free checkpoint reader against torch.save, in both layouts, and its refusal of anything else."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from localgpt.errors import StoreError
from localgpt.store.torch_pickle import load_state_dict


@pytest.mark.parametrize("zip_layout", [True, False], ids=["zip", "legacy"])
def test_reads_what_torch_saves(tmp_path: Path, zip_layout: bool) -> None:
    torch = pytest.importorskip("torch")
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = {
        "w": torch.randn(3, 2, 5, 5),
        "view": base.t(),  # a strided view sharing its storage with "base"
        "base": base,
        "slice": base[1:3, 2:],  # an offset into the shared storage
        "count": torch.tensor(7, dtype=torch.int64),
        "half": torch.linspace(-1, 1, 9, dtype=torch.float16),
        "flags": torch.tensor([True, False]),
    }
    path = tmp_path / "ckpt.pth"
    torch.save(state, path, _use_new_zipfile_serialization=zip_layout)
    assert zipfile.is_zipfile(path) is zip_layout
    ours = load_state_dict(path)
    assert set(ours) == set(state)
    for name, tensor in state.items():
        assert ours[name].shape == tuple(tensor.shape), name
        assert np.array_equal(ours[name], tensor.numpy()), name
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {"w": state["w"]}, "epoch": 3}, wrapped)
    assert np.array_equal(load_state_dict(wrapped)["w"], state["w"].numpy())


def test_refuses_any_other_global(tmp_path: Path) -> None:
    import os

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps(os.system, protocol=2))
    with pytest.raises(StoreError, match="system"):
        load_state_dict(evil)
    inside = tmp_path / "inside.pth"
    with zipfile.ZipFile(inside, "w") as archive:
        archive.writestr("ckpt/data.pkl", pickle.dumps({"w": os.system}, protocol=2))
    with pytest.raises(StoreError, match="system"):
        load_state_dict(inside)


def test_not_a_checkpoint(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"plain text, not a pickle")
    with pytest.raises(StoreError, match="not a"):
        load_state_dict(junk)
