"""Substitute tasks: the registry's data, the selector's stand-ins, the executor running them (in place of a
missing model, or after a model that found nothing), the answer's note and ``localgpt tasks``; all with fakes."""

from __future__ import annotations

from pathlib import Path

import pytest

from localgpt import tasks as registry
from localgpt.config import Settings
from localgpt.errors import NoModelError
from localgpt.experts.base import ExpertContext, ExpertOutput
from localgpt.runtime.executor import Executor
from localgpt.runtime.pool import ModelPool
from localgpt.runtime.responder import Responder
from localgpt.runtime.runs import InputFiles, RunDir
from localgpt.runtime.selector import Selector, StandIn, install_hint
from localgpt.schema import ModelCard, Plan, Task, TaskResult
from localgpt.testing import FakeExpert, FakeLLM, Recorder, fake_card, fake_factory, install, png_bytes


class Cards:
    """A candidate source over a fixed list of cards (the controller appended for LLM-servable tasks)."""

    def __init__(self, *cards: ModelCard, controller: ModelCard | None = None) -> None:
        self.cards = cards
        self.controller = controller

    def candidates(self, task: str) -> list[ModelCard]:
        found = [c for c in self.cards if task in c.tasks]
        if self.controller is not None and registry.get(task).llm_servable:
            found.append(self.controller)
        return found


CLASSIFIER = fake_card("labeller", ["image-classification"])
LLM_CARD = fake_card("controller-llm", ["question-answering"])


def test_registry_substitutes_are_registered_tasks_taking_the_same_media() -> None:
    for spec in registry.TASKS:
        for sub in spec.substitutes:
            stand = registry.get(sub.task)
            assert {i.kind for i in stand.required} <= {i.kind for i in spec.inputs}, (spec.name, sub.task)
            assert stand.output == spec.output
            if sub.then:
                assert registry.get(sub.then).llm_servable
    assert [s.task for s in registry.get("image-to-text").substitutes] == ["image-classification"]
    vqa = registry.get("visual-question-answering").substitutes[0]
    assert (vqa.task, vqa.then) == ("image-classification", "question-answering")
    assert not registry.get("object-detection").substitutes and registry.get("object-detection").no_substitute


def test_selector_stands_in_when_nothing_serves_the_task() -> None:
    selector = Selector(Cards(CLASSIFIER), llm=None)
    card, selection = selector.select(Task(id=0, task="image-to-text", args={"image": "p.png"}), "what is this?")
    assert card.id == "labeller" and selection.stand_in == "image-classification"
    assert selection.task == "image-to-text" and "localgpt models pull" in selection.reason
    assert "image-to-text" in selection.reason and "image-classification" in selection.reason


def test_selector_prefers_a_real_model_and_substitutes_can_be_turned_off() -> None:
    captioner = fake_card("captioner", ["image-to-text"])
    card, selection = Selector(Cards(CLASSIFIER, captioner), llm=None).select(
        Task(id=0, task="image-to-text", args={"image": "p.png"}), "")
    assert card.id == "captioner" and selection.stand_in is None
    off = Selector(Cards(CLASSIFIER), llm=None, substitutes=False)
    assert off.stand_in("image-to-text") is None
    with pytest.raises(NoModelError, match="substitutes are off") as info:
        off.select(Task(id=0, task="image-to-text", args={"image": "p.png"}), "")
    assert "localgpt models pull" in (info.value.hint or "")


def test_no_stand_in_for_detection_says_why() -> None:
    with pytest.raises(NoModelError, match="no other task can stand in") as info:
        Selector(Cards(CLASSIFIER), llm=None).select(Task(id=3, task="object-detection", args={"image": "p"}), "")
    assert registry.get("object-detection").no_substitute in info.value.message


def test_vqa_stand_in_needs_a_model_for_its_then_step() -> None:
    assert Selector(Cards(CLASSIFIER), llm=None).stand_in("visual-question-answering") is None
    stand = Selector(Cards(CLASSIFIER, controller=LLM_CARD), llm=None).stand_in("visual-question-answering")
    assert stand is not None and stand.then == "question-answering" and stand.then_card is LLM_CARD


def test_install_hint_names_the_smallest_curated_model() -> None:
    hint = install_hint("image-to-text")
    assert hint.startswith("localgpt models pull --hub ") and "--task image-to-text" in hint


class EmptyReader(FakeExpert):
    """Like an OCR model on a photo without text: it answers, and says it found nothing."""

    def run(self, task: str, inputs: dict[str, str], out: RunDir) -> ExpertOutput:
        super().run(task, inputs, out)
        return ExpertOutput(outputs={"text": "(nothing found)"}, data={"empty": True})


class Env:
    def __init__(self, tmp: Path) -> None:
        self.rec = Recorder()
        self.ctx = ExpertContext(settings=Settings(store=tmp / "store", runs_dir=tmp / "runs"),
                                 extra={"recorder": self.rec})
        self.pool = ModelPool(self.ctx, 1 << 30,
                              factory=fake_factory(self.ctx, {"fake": FakeExpert, "empty": EmptyReader}))
        self.out = RunDir(tmp / "run")
        self.image = tmp / "photo.png"
        self.image.write_bytes(png_bytes("a cat"))
        self.files = InputFiles([self.image], roots=[tmp])

    def run(self, tasks: list[Task], cards: dict[int, ModelCard], **kw: dict[int, StandIn]) -> list[TaskResult]:
        return Executor(self.pool, max_workers=2, timeout=30).run(Plan(tasks=tasks), cards, self.files, self.out,
                                                                   **kw)


def test_executor_runs_the_stand_in_task_in_place_and_feeds_dependants(tmp_path: Path) -> None:
    env = Env(tmp_path)
    stand = StandIn("image-to-text", "image-classification", CLASSIFIER, "labels")
    speaker = fake_card("voice", ["text-to-speech"])
    tasks = [Task(id=0, task="image-to-text", args={"image": str(env.image)}),
             Task(id=1, task="text-to-speech", dep=[0], args={"text": "<resource>-0"})]
    first, second = env.run(tasks, {0: CLASSIFIER, 1: speaker}, stand_ins={0: stand})
    assert first.status == "done" and first.task == "image-to-text" and first.stand_in == "image-classification"
    assert first.model == "labeller" and "stood in" in (first.note or "")
    runs = env.rec.runs
    assert runs[0]["task"] == "image-classification" and set(runs[0]["inputs"]) == {"image"}
    assert second.status == "done" and runs[1]["inputs"]["text"] == first.outputs["text"]


def test_executor_vqa_stand_in_asks_the_llm_with_the_labels(tmp_path: Path) -> None:
    env = Env(tmp_path)
    stand = StandIn("visual-question-answering", "image-classification", CLASSIFIER, "labels + LLM",
                    then="question-answering", then_card=LLM_CARD)
    [result] = env.run([Task(id=0, task="visual-question-answering",
                             args={"image": str(env.image), "text": "Is it an animal?"})],
                       {0: CLASSIFIER}, stand_ins={0: stand})
    labels_run, qa_run = env.rec.runs
    assert labels_run["task"] == "image-classification" and qa_run["task"] == "question-answering"
    assert qa_run["inputs"] == {"question": "Is it an animal?", "context": "labeller(image-classification): "
                                f"image={env.image}"}
    assert result.outputs["text"].startswith("controller-llm(question-answering)")
    assert "question-answering by controller-llm" in (result.note or "")


def test_fallback_runs_only_when_the_model_found_nothing(tmp_path: Path) -> None:
    env = Env(tmp_path)
    ocr = fake_card("reader", ["image-to-text"], backend="empty")
    stand = StandIn("image-to-text", "image-classification", CLASSIFIER, "labels")
    task = Task(id=0, task="image-to-text", args={"image": str(env.image)})
    [result] = env.run([task], {0: ocr}, fallbacks={0: stand})
    assert [r["model"] for r in env.rec.runs] == ["reader", "labeller"]
    assert result.stand_in == "image-classification" and "model 'reader' found nothing" in (result.note or "")
    assert result.outputs["text"].startswith("labeller(")

    env2 = Env(tmp_path / "second")
    reader = fake_card("reader2", ["image-to-text"])  # a model that finds something keeps its answer
    [kept] = env2.run([task.model_copy(update={"args": {"image": str(env2.image)}})], {0: reader},
                      fallbacks={0: stand})
    assert kept.stand_in is None and kept.note is None and [r["model"] for r in env2.rec.runs] == ["reader2"]


def test_answer_ends_with_the_stand_in_note() -> None:
    result = TaskResult(id=0, task="image-to-text", status="done", model="labeller", outputs={"text": "cat"},
                        stand_in="image-classification", note="image-classification stood in; install X")
    answer = Responder(FakeLLM(default="It is a cat.")).respond("what is in it?", [result])
    assert answer.startswith("It is a cat.") and answer.endswith("- task 0 (image-to-text): "
                                                                 "image-classification stood in; install X")
    assert "Stand-ins:" in Responder.fallback([result], "no LLM")


def test_tasks_command_shows_stand_ins_and_the_switch(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from localgpt.cli.main import main

    monkeypatch.delenv("LOCALGPT_SUBSTITUTES", raising=False)
    install(tmp_path / "store", "labeller", ["image-classification"])
    assert main(["--store", str(tmp_path / "store"), "tasks"]) == 0
    text = capsys.readouterr().out
    assert "stand-in: image-classification\n" in text and "stand-in: image-classification + question-answering" in text
    assert "stand-in: none (" in text
    assert main(["--store", str(tmp_path / "store"), "--no-substitutes", "tasks"]) == 0
    assert "stand-in (off): image-classification" in capsys.readouterr().out
    monkeypatch.setenv("LOCALGPT_SUBSTITUTES", "0")
    assert Settings.load().substitutes is False


READER = fake_card("reader", ["image-to-text"], scope={"image-to-text": "reads the printed text in an image"})


@pytest.mark.parametrize("choice", ["labeller", "reader"])
def test_a_partial_model_competes_with_the_stand_in_and_the_llm_picks(choice: str) -> None:
    llm = FakeLLM([f'{{"id": "{choice}", "reason": "fits the request"}}'])
    card, selection, stand = Selector(Cards(READER, CLASSIFIER), llm=llm).choose(
        Task(id=0, task="image-to-text", args={"image": "p.png"}), "what is in p.png?")
    assert (stand is not None) is (choice == "labeller")
    assert card.id == choice and selection.candidates == ["reader", "labeller"]
    assert (selection.stand_in == "image-classification") is (choice == "labeller")
    listing = llm.calls[0].messages[-1]["content"]
    assert "- labeller: stands in for image-to-text: labels" in listing and "what is in p.png?" in listing
    if choice == "labeller":
        assert "only reads the printed text in an image" in selection.reason
        assert stand is not None and stand.note() == selection.reason  # the result's note says the same
        assert "no installed model serves" not in stand.note()


def test_a_model_serving_the_whole_task_gets_no_competitor() -> None:
    llm = FakeLLM()
    captioner = fake_card("captioner", ["image-to-text"])
    card, selection = Selector(Cards(captioner, CLASSIFIER), llm=llm).select(
        Task(id=0, task="image-to-text", args={"image": "p.png"}), "")
    assert card.id == "captioner" and not llm.calls and selection.stand_in is None


def test_ocr_backend_declares_its_scope() -> None:
    from localgpt.experts.ocr import RapidOCRExpert
    from localgpt.runtime.selector import scope

    assert "image-to-text" in RapidOCRExpert.SCOPE
    ocr = fake_card("ocr", ["image-to-text"], backend="rapidocr")
    assert scope(ocr, "image-to-text") == RapidOCRExpert.SCOPE["image-to-text"]
    assert scope(CLASSIFIER, "image-classification") == ""
