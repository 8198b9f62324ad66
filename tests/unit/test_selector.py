"""Model selection with a fake catalog and FakeLLM."""

from __future__ import annotations

import json

import pytest

from localgpt.errors import NoModelError
from localgpt.runtime.selector import Selector
from localgpt.schema import ModelCard, Task
from localgpt.testing import FakeLLM


def card(model_id: str, task: str = "image-to-text", backend: str = "fake") -> ModelCard:
    return ModelCard(id=model_id, tasks=[task], backend=backend, format="bin", description=f"{model_id} does {task}")


class FakeCatalog:
    def __init__(self, cards: list[ModelCard]) -> None:
        self.cards = cards
        self.asked: list[str] = []

    def candidates(self, task: str) -> list[ModelCard]:
        self.asked.append(task)
        return [c for c in self.cards if task in c.tasks]


TASK = Task(id=2, task="image-to-text", dep=[], args={"image": "photo.jpg"})


def test_single_candidate_needs_no_llm() -> None:
    llm = FakeLLM()
    chosen, sel = Selector(FakeCatalog([card("blip"), card("tts", "text-to-speech")]), llm).select(TASK, "caption")
    assert chosen.id == "blip"
    assert llm.calls == []
    assert (sel.task_id, sel.task, sel.model, sel.backend) == (2, "image-to-text", "blip", "fake")
    assert sel.reason and "only" in sel.reason
    assert sel.candidates == ["blip"]


def test_several_candidates_llm_picks() -> None:
    cands = [card("blip"), card("git-base"), card("vit-gpt2")]
    llm = FakeLLM([json.dumps({"id": "git-base", "reason": "better at long captions"})])
    chosen, sel = Selector(FakeCatalog(cands), llm).select(TASK, "describe photo.jpg in detail")
    assert chosen is cands[1]
    assert len(llm.calls) == 1
    schema = llm.calls[0].schema
    assert schema is not None and schema["properties"]["id"]["enum"] == ["blip", "git-base", "vit-gpt2"]
    prompt = "\n".join(m["content"] for m in llm.calls[0].messages)
    assert "describe photo.jpg in detail" in prompt
    assert all(c.description in prompt for c in cands)
    assert sel.model == "git-base" and sel.reason == "better at long captions"
    assert sel.candidates == ["blip", "git-base", "vit-gpt2"]


@pytest.mark.parametrize("reply", ["not json", json.dumps({"id": "unknown-model", "reason": "x"}),
                                   json.dumps(["blip"]), ""])
def test_unreadable_choice_takes_first(reply: str) -> None:
    cands = [card("blip"), card("git-base")]
    llm = FakeLLM([reply])
    chosen, sel = Selector(FakeCatalog(cands), llm).select(TASK, "caption")
    assert chosen.id == "blip"
    assert "unreadable" in sel.reason
    assert len(llm.calls) == 1


def test_empty_reason_gets_default() -> None:
    llm = FakeLLM([json.dumps({"id": "git-base", "reason": ""})])
    _, sel = Selector(FakeCatalog([card("blip"), card("git-base")]), llm).select(TASK, "caption")
    assert sel.model == "git-base" and sel.reason


def test_several_candidates_without_llm_take_first() -> None:
    chosen, sel = Selector(FakeCatalog([card("blip"), card("git-base")]), None).select(TASK, "caption")
    assert chosen.id == "blip" and "first" in sel.reason


def test_no_candidate_names_task() -> None:
    llm = FakeLLM()
    task = Task(id=4, task="depth-estimation", dep=[], args={"image": "x.png"})
    with pytest.raises(NoModelError) as err:
        Selector(FakeCatalog([card("blip")]), llm).select(task, "how deep")
    assert "task 4" in err.value.message and "depth-estimation" in err.value.message
    assert err.value.hint
    assert llm.calls == []
