"""Mending a plan that failed validation (salvage_plan) and the Planner's use of it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from localgpt.errors import PlanError
from localgpt.llm import FakeLLM
from localgpt.planner import Planner, salvage_plan


def t(i: int, task: str, args: dict[str, str], dep: list[int] | None = None) -> dict[str, Any]:
    return {"id": i, "task": task, "dep": dep if dep is not None else [-1], "args": args}


def shape(plan: Any) -> list[tuple[int, str, dict[str, str], list[int]]]:
    return [(x.id, x.task, x.args, x.dep) for x in plan.tasks]


def test_image_given_where_text_is_needed_gets_a_converter() -> None:
    request = "how similar is the text in example.jpg to 'The cat is on the mat.'"
    plan = salvage_plan([t(0, "sentence-similarity", {"text": "The cat is on the mat.", "other_text": "example.jpg"})],
                        request)
    assert shape(plan) == [
        (0, "image-to-text", {"image": "example.jpg"}, []),
        (1, "sentence-similarity", {"text": "The cat is on the mat.", "other_text": "<resource>-0"}, [0]),
    ]


def test_question_answering_given_an_image_asks_about_the_image() -> None:
    request = "I have example.jpg of a street. Answer 'How many cars are there?'"
    plan = salvage_plan([t(0, "question-answering", {"question": "How many cars are there?",
                                                     "context": "example.jpg"})], request)
    assert shape(plan) == [(0, "visual-question-answering",
                            {"image": "example.jpg", "text": "How many cars are there?"}, [])]
    # the question and the image swapped round: still the image is asked about
    plan = salvage_plan([t(0, "question-answering", {"question": "example.jpg", "context": "How many cars?"})],
                        request)
    assert shape(plan) == [(0, "visual-question-answering", {"image": "example.jpg", "text": "How many cars?"}, [])]


def test_question_about_a_document_image_or_a_drawn_image() -> None:
    request = "My scanned invoice is example.png. When is the payment due?"
    plan = salvage_plan([t(0, "question-answering", {"question": "When is the payment due?",
                                                     "context": "example.png"})], request)
    assert shape(plan) == [(0, "document-question-answering",
                            {"image": "example.png", "text": "When is the payment due?"}, [])]
    # an image made by an earlier task is asked about too, not captioned first
    plan = salvage_plan([t(0, "text-to-image", {"text": "a red boat"}),
                         t(1, "question-answering", {"question": "What colour is it?", "context": "<resource>-0"},
                           [0])], "draw a red boat, then tell me what colour it is")
    assert shape(plan) == [(0, "text-to-image", {"text": "a red boat"}, []),
                           (1, "visual-question-answering", {"image": "<resource>-0", "text": "What colour is it?"},
                            [0])]


def test_question_with_nothing_to_read_asks_about_the_users_image() -> None:
    request = "I have an image with text on it 'example.jpg'. Answer: 'What is the main topic?'"
    plan = salvage_plan([t(0, "question-answering", {"question": "What is the main topic?",
                                                     "context": "<resource>-1"})], request)
    assert shape(plan) == [(0, "document-question-answering",
                            {"image": "example.jpg", "text": "What is the main topic?"}, [])]
    # with a text to read from, the lost context takes that text instead
    plan = salvage_plan([t(0, "automatic-speech-recognition", {"audio": "talk.wav"}),
                         t(1, "question-answering", {"question": "Who speaks?", "context": "<resource>-7"})],
                        "Listen to talk.wav and example.jpg: who speaks?")
    assert [x.task for x in plan.tasks] == ["automatic-speech-recognition", "question-answering"]
    assert plan.tasks[1].args["context"] == "<resource>-0"


def test_a_quoted_file_name_is_not_the_users_text() -> None:
    plan = salvage_plan([t(0, "text-to-speech", {"text": "<resource>-4"})],
                        "I have 'example.jpg'. Please read 'Good morning' aloud.")
    assert shape(plan) == [(0, "text-to-speech", {"text": "Good morning"}, [])]


def test_output_of_the_wrong_kind_is_converted() -> None:
    # text-to-image's picture fed to a text task: a caption goes in between
    plan = salvage_plan([t(0, "text-to-image", {"text": "a red boat"}),
                         t(1, "summarization", {"text": "<resource>-0"}, [0])])
    assert [x.task for x in plan.tasks] == ["text-to-image", "image-to-text", "summarization"]
    assert plan.tasks[1].args == {"image": "<resource>-0"}
    assert plan.tasks[2].args == {"text": "<resource>-1"} and plan.tasks[2].dep == [1]


def test_output_of_the_wrong_kind_takes_the_latest_fitting_output_or_file_first() -> None:
    # the plan names the speech where it needs an image: the image made before it is what it meant
    plan = salvage_plan([t(0, "text-to-image", {"text": "a red boat"}),
                         t(1, "text-to-speech", {"text": "a red boat"}),
                         t(2, "image-classification", {"image": "<resource>-1"}, [1])], "draw, read, classify")
    assert [x.task for x in plan.tasks] == ["text-to-image", "text-to-speech", "image-classification"]
    assert plan.tasks[2].args == {"image": "<resource>-0"} and plan.tasks[2].dep == [0]
    # no image output, but the user's picture: that one, not a picture drawn from the speech's text
    plan = salvage_plan([t(0, "text-to-speech", {"text": "hello"}),
                         t(1, "object-detection", {"image": "<resource>-0"}, [0])], "read hello, then a.png")
    assert shape(plan) == [(0, "text-to-speech", {"text": "hello"}, []),
                           (1, "object-detection", {"image": "a.png"}, [])]


def test_question_about_a_picture_looks_at_it() -> None:
    # question answering cannot see: a question that speaks of the image goes to the image made before it
    plan = salvage_plan([t(0, "text-to-image", {"text": "a beach at sunset"}),
                         t(1, "question-answering", {"question": "What is in the picture?", "context": "<resource>-5"}),
                         t(2, "translation", {"text": "<resource>-1", "target_language": "French"})],
                        "draw a beach at sunset, tell me what is in the picture, in French")
    assert shape(plan)[1] == (1, "visual-question-answering",
                              {"image": "<resource>-0", "text": "What is in the picture?"}, [0])
    # a question about something else, with a text to read, stays question answering
    plan = salvage_plan([t(0, "image-to-text", {"image": "a.jpg"}),
                         t(1, "question-answering", {"question": "Who is named?", "context": "<resource>-5"})],
                        "caption a.jpg; who is named?")
    assert [x.task for x in plan.tasks] == ["image-to-text", "question-answering"]


def test_reference_to_a_missing_task_takes_the_latest_output_of_that_kind() -> None:
    plan = salvage_plan([t(0, "image-classification", {"image": "photo.png"}),
                         t(1, "text-to-image", {"text": "a cat"}),
                         t(2, "image-to-text", {"image": "<resource>-7"}, [7])], "classify photo.png, then ...")
    assert plan.tasks[2].args == {"image": "<resource>-1"} and plan.tasks[2].dep == [1]
    # a text that was only a dangling reference takes the latest text output
    plan = salvage_plan([t(0, "image-classification", {"image": "photo.png"}),
                         t(1, "translation", {"text": "<resource>-5"})], "classify photo.png and translate it")
    assert plan.tasks[1].args == {"text": "<resource>-0"}


def test_invented_file_becomes_the_users_file_of_that_kind() -> None:
    plan = salvage_plan([t(0, "automatic-speech-recognition", {"audio": "speech.wav"})], "transcribe it",
                        files=["/data/talk.flac"])
    assert plan.tasks[0].args == {"audio": "/data/talk.flac"}


def test_tasks_that_cannot_be_mended_are_dropped_with_their_converters() -> None:
    plan = salvage_plan([
        t(0, "no-such-task", {"text": "x"}),
        t(1, "summarization", {"text": "a long text"}),
        t(2, "visual-question-answering", {"image": "missing.jpg", "text": "what is it?"}),  # no image anywhere
        t(3, "text-to-speech", {"text": "<resource>-1"}),
        t(3, "translation", {"text": "duplicate id"}),
    ], "summarize and read aloud")
    assert shape(plan) == [(0, "summarization", {"text": "a long text"}, []),
                           (1, "text-to-speech", {"text": "<resource>-0"}, [0])]


def test_embedded_references_are_renumbered_or_removed() -> None:
    plan = salvage_plan([t(3, "summarization", {"text": "a text"}),
                         t(5, "translation", {"text": "<resource>-3 and <resource>-9", "target_language": "French"})])
    assert plan.tasks[1].args["text"] == "<resource>-0 and"
    assert plan.tasks[1].dep == [0]


def test_nothing_left_is_an_error() -> None:
    with pytest.raises(PlanError, match="no task"):
        salvage_plan([t(0, "image-to-text", {"image": "none.jpg"})], "describe it")
    with pytest.raises(PlanError, match="not a list"):
        salvage_plan("nonsense")


def test_planner_mends_without_a_repair_round() -> None:
    bad = [t(0, "sentence-similarity", {"text": "example.jpg", "other_text": "a cat"}),
           t(1, "text-to-speech", {"text": "<resource>-4"})]
    llm = FakeLLM([json.dumps(bad), json.dumps(bad)])
    planner = Planner(llm)
    plan = planner.plan("compare the text in example.jpg with 'a cat' and read the result aloud")
    assert len(llm.calls) == 1 and planner.last_salvaged
    assert [x.task for x in plan.tasks] == ["image-to-text", "sentence-similarity", "text-to-speech"]
    assert plan.tasks[2].args == {"text": "<resource>-1"}
    # off: the error reaches the caller
    with pytest.raises(PlanError):
        Planner(FakeLLM([json.dumps(bad), json.dumps(bad)]), salvage=False).plan("compare example.jpg with 'a cat'")


def test_a_text_input_with_no_source_takes_the_text_the_user_gave() -> None:
    # the first task refers to itself: no earlier output exists, so the request's text file is read
    raw = {"steps": [], "tasks": [t(0, "translation", {"text": "<resource>-0"}),
                                  t(1, "summarization", {"text": "<resource>-0"}, [0]),
                                  t(2, "image-editing", {"image": "example.jpg", "text": "<resource>-1"}, [1])]}
    request = ("I have an English text file named 'example.txt', and an image file named 'example.jpg'. Translate the "
               "text into French, summarize it, and modify the image according to the summary.")
    plan = salvage_plan(raw, request)
    assert [(x.task, x.args) for x in plan.tasks] == [
        ("translation", {"text": "example.txt"}), ("summarization", {"text": "<resource>-0"}),
        ("image-editing", {"image": "example.jpg", "text": "<resource>-1"})]
    # a quoted passage is the text the user gave; without any, the request itself
    lost = [t(0, "text-to-speech", {"text": "<resource>-3"})]
    assert salvage_plan(lost, "Read 'good night, moon.' aloud").tasks[0].args == {"text": "good night, moon."}
    assert salvage_plan(lost, "read something calming aloud").tasks[0].args == {"text": "read something calming aloud"}
    # a missing required text is filled the same way; a later text task takes the latest text output instead
    missing = [t(0, "image-to-text", {"image": "cat.png"}), t(1, "translation", {})]
    plan = salvage_plan(missing, "describe cat.png in French")
    assert plan.tasks[1].args == {"text": "<resource>-0"} and plan.tasks[1].dep == [0]
