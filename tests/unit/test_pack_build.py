"""A pack's build step (e.g. the ONNX export): its files join the card, its options too, a failure registers
nothing, and a reinstall of a built pack is recognised."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from localgpt.errors import StoreError
from localgpt.store import packs
from localgpt.store.catalog import Catalog
from localgpt.store.packs import PackSpec, install_pack
from tests.unit.test_store import fake_spec, wheels  # noqa: F401  (the fixture)

CALLS: list[dict[str, Any]] = []


def double(folder: Path, options: dict[str, Any], say: Any) -> dict[str, Any]:
    """A build step: writes a derived file from the model file."""
    CALLS.append(dict(options))
    source = (folder / options["model"]).read_bytes()
    (folder / "derived.bin").write_bytes(source * 2)
    say("built derived.bin")
    return {"derived": "derived.bin", "check": {"ok": True}}


def broken(folder: Path, options: dict[str, Any], say: Any) -> dict[str, Any]:
    (folder / "half.bin").write_bytes(b"x")
    raise StoreError("the export does not match the reference")


@pytest.fixture
def steps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packs, "BUILD_STEPS", MappingProxyType({
        "double": f"{__name__}:double", "broken": f"{__name__}:broken"}))


def built(step: str, model_id: str = "built-model") -> PackSpec:
    base = fake_spec(model_id=model_id)
    return PackSpec(**{**{f: getattr(base, f) for f in base.__dataclass_fields__}, "build": step,
                       "built_size": 10})


def test_build_step_files_and_options_join_the_card(wheels: Path, tmp_path: Path, steps: None) -> None:  # noqa: F811
    CALLS.clear()
    store, lines = tmp_path / "store", []
    card = install_pack(built("double"), store, find_links=str(wheels), progress=lines.append)
    assert "built derived.bin" in lines and CALLS[0]["model"] == "weights/model.bin"
    assert "derived.bin" in {f.path for f in card.files} and card.options["check"] == {"ok": True}
    model = (store / "built-model" / "weights" / "model.bin").read_bytes()
    assert (store / "built-model" / "derived.bin").read_bytes() == model * 2
    assert card.size_bytes == sum(f.size for f in card.files)
    assert Catalog(store).verify(["built-model"]) == {"built-model": []}
    again: list[str] = []
    install_pack(built("double"), store, find_links=str(wheels), progress=again.append)
    assert len(CALLS) == 1 and any("already installed" in line for line in again)


def test_failed_build_registers_nothing(wheels: Path, tmp_path: Path, steps: None) -> None:  # noqa: F811
    store = tmp_path / "store"
    with pytest.raises(StoreError, match="does not match"):
        install_pack(built("broken"), store, find_links=str(wheels), progress=lambda _: None)
    assert Catalog(store).ids() == [] and not any(p.name.endswith(".partial") for p in store.iterdir())


def test_unknown_build_step_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown build step"):
        built("no-such-step")


def test_lite0_pack_is_in_the_default_profiles() -> None:
    spec = packs.pack("efficientnet-lite0")
    assert spec.build == "efficientnet-lite-onnx" and spec.backend == "onnx-image-classification"
    assert "efficientnet-lite0" in packs.PROFILES["starter"] and "efficientnet-lite0" in packs.PROFILES["test"]
    assert all(version for _, version in spec.packages) and len(spec.files) == 2
