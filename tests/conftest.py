"""Shared fixtures: settings in a temp folder, a run folder, and the real models of the test store.

Real models come from the ``test`` profile (``python download_models.py --profile test``), installed
into ``model_store/`` or the folder named by ``LOCALGPT_TEST_STORE``. Where they are absent a test
skips with the reason printed; under CI (``CI=true``) an absent model fails the test instead, so
nothing is silently skipped there.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from localgpt.config import Settings
from localgpt.runtime.runs import RunDir
from localgpt.schema import ModelCard
from tests.helpers import missing, store_dir


@pytest.fixture(autouse=True)
def _prompt_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test its own prompt-state disk cache: none reads a state another test saved (or the user's)."""
    monkeypatch.setenv("LOCALGPT_PROMPT_CACHE_DIR", str(tmp_path / "prompt-state"))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings whose runs go to a temp folder and whose store is the test store."""
    return Settings(store=store_dir(), runs_dir=tmp_path / "runs", threads=2, planner="smollm2-135m-instruct")


@pytest.fixture
def run_dir(tmp_path: Path) -> RunDir:
    """An empty run folder."""
    return RunDir(tmp_path / "run")


@pytest.fixture
def real_card() -> Callable[[str], ModelCard]:
    """A function returning an installed model card of the test store, or skipping."""
    from localgpt.store.catalog import Catalog

    def get(model_id: str) -> ModelCard:
        store = store_dir()
        if not (store / model_id / "model.json").exists():
            missing(f"model '{model_id}' is not installed in {store}; run: python download_models.py --profile test")
        catalog = Catalog(store)
        card = catalog.get(model_id)
        if not catalog.is_installed(card):
            missing(f"model '{model_id}' in {store} has missing files; run: python download_models.py --profile test")
        return card

    return get
