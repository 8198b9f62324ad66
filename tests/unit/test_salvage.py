"""Mending a plan that failed validation (salvage_plan) and the Planner's use of it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from localgpt import tasks as registry
from localgpt.errors import PlanError
from localgpt.planning.mend import salvage_plan
from localgpt.planning.passes import apply_passes
from localgpt.planning.planner import Planner, PlannerOptions, accept_reply
from localgpt.planning.validate import validate_plan
from localgpt.schema import Plan
from localgpt.tasks import TaskSpec
from localgpt.testing import FakeLLM


def tidy_plan(plan: Plan, request: str = "", files: Sequence[str] = (), max_tasks: int = 32,
              specs: Sequence[TaskSpec] = registry.TASKS) -> Plan:
    """The plan after every pass (:func:`apply_passes`)."""
    return apply_passes(plan, request, files, max_tasks, specs)[0]

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
    # question answering cannot see: with nothing to read but a picture, it asks the picture made before it
    plan = salvage_plan([t(0, "text-to-image", {"text": "a beach at sunset"}),
                         t(1, "question-answering", {"question": "Tell me what's there", "context": "<resource>-5"}),
                         t(2, "translation", {"text": "<resource>-1", "target_language": "French"})],
                        "draw a beach at sunset, tell me what is there, in French")
    assert shape(plan)[1] == (1, "visual-question-answering",
                              {"image": "<resource>-0", "text": "Tell me what's there"}, [0])
    # a mended plan whose question speaks of the picture is tidied so too, though a text was at hand
    raw = [t(0, "text-to-image", {"text": "a beach at sunset"}), t(1, "image-to-text", {"image": "<resource>-0"}),
           t(2, "summarization", {"text": "<resource>-1"}),
           t(3, "question-answering", {"question": "What is in the picture?", "context": "<resource>-9"})]
    plan, mended = accept_reply(json.dumps(raw), "draw a beach at sunset and tell me what is in the picture")
    assert mended and shape(plan)[3] == (3, "visual-question-answering",
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


def test_a_task_on_a_dropped_tasks_output_goes_too_when_there_is_no_text_to_take() -> None:
    # "describe the picture and read it aloud" with no picture: reading the request itself aloud would
    # answer nothing; the plan fails, and the planner's error asks for the file
    raw = [t(0, "image-to-text", {"image": "picture.jpg"}), t(1, "text-to-speech", {"text": "<resource>-0"}, [0])]
    with pytest.raises(PlanError, match="no task"):
        salvage_plan(raw, "Describe the picture and read the description aloud")
    llm = FakeLLM([json.dumps(raw), json.dumps(raw)])
    attempt = Planner(llm, n_demos=0).attempt("Опиши картинку и прочитай описание вслух")
    assert attempt.plan is None and "did not give" in str(attempt.error) and len(llm.calls) == 2
    # with an earlier text output it takes that, as before; a reference to no task at all takes the user's text
    kept = salvage_plan([t(0, "summarization", {"text": "a long text"}), *raw], "summarize, describe, read aloud")
    assert [x.task for x in kept.tasks] == ["summarization", "text-to-speech"]
    assert kept.tasks[1].args == {"text": "<resource>-0"}
    lost = salvage_plan([t(0, "text-to-speech", {"text": "<resource>-7"})], "Read 'good night, moon.' aloud")
    assert lost.tasks[0].args == {"text": "good night, moon."}


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
    attempt = Planner(llm).attempt("compare the text in example.jpg with 'a cat' and read the result aloud")
    plan = attempt.plan
    assert plan is not None and len(llm.calls) == 1 and attempt.salvaged
    assert [x.task for x in plan.tasks] == ["image-to-text", "sentence-similarity", "text-to-speech"]
    assert plan.tasks[2].args == {"text": "<resource>-1"}
    # off: the error reaches the caller
    with pytest.raises(PlanError):
        Planner(FakeLLM([json.dumps(bad), json.dumps(bad)]),
                options=PlannerOptions(salvage=False)).plan("compare example.jpg with 'a cat'")


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


def test_an_image_asked_for_but_never_made_is_drawn_first() -> None:
    # the request wants a picture made, the plan edits a file nobody gave: draw it, then edit the drawing
    request = "I want an image with a group of people at the beach, and please change all red umbrellas to blue."
    raw = [t(0, "image-editing", {"image": "example.jpg", "text": "change all red umbrellas to blue"})]
    assert shape(salvage_plan(raw, request)) == [
        (0, "text-to-image", {"text": request}, []),
        (1, "image-editing", {"image": "<resource>-0", "text": "change all red umbrellas to blue"}, [0])]
    # drawn from the latest text output when there is one
    raw = [t(0, "question-answering", {"question": "How do solar panels work?", "context": "solar panels turn light"}),
           t(1, "image-to-image", {"image": "panels.jpg"}, [0])]
    plan = salvage_plan(raw, "answer 'How do solar panels work?' and generate an image of solar panels")
    assert [(x.task, x.args) for x in plan.tasks][1:] == [("text-to-image", {"text": "<resource>-0"}),
                                                         ("image-to-image", {"image": "<resource>-1"})]
    # a request that speaks of the user's own image (not given) is not answered with a drawing
    with pytest.raises(PlanError, match="no task"):
        salvage_plan(raw[1:], "I have an image of a room; please edit the image to have blue walls")
    # nor is a wish to change the user's (missing) recording a wish for new speech
    with pytest.raises(PlanError, match="no task"):
        salvage_plan([t(0, "audio-to-audio", {"audio": "noisy.wav"})], "make the audio clearer")
    made = salvage_plan([t(0, "audio-to-audio", {"audio": "noisy.wav"})], "generate the audio of 'hello' and clean it")
    assert [x.task for x in made.tasks] == ["text-to-speech", "audio-to-audio"]


def test_tidy_runs_a_repeated_task_once() -> None:
    plan = validate_plan([t(0, "automatic-speech-recognition", {"audio": "talk.wav"}),
                          t(1, "automatic-speech-recognition", {"audio": "talk.wav"}),
                          t(2, "summarization", {"text": "<resource>-1"}, [1])], "transcribe talk.wav and summarize it")
    assert shape(tidy_plan(plan, "transcribe talk.wav and summarize it")) == [
        (0, "automatic-speech-recognition", {"audio": "talk.wav"}, []),
        (1, "summarization", {"text": "<resource>-0"}, [0])]


def test_tidy_follows_what_an_earlier_task_made_of_the_users_file() -> None:
    request = "clean up noisy.wav, transcribe the cleaned speech, then read the transcript aloud"
    plan = validate_plan({"steps": ["Step 1: Clean up the audio.", "Step 2: Transcribe the cleaned speech.",
                                    "Step 3: Read the transcript aloud."],
                          "tasks": [t(0, "audio-to-audio", {"audio": "noisy.wav"}),
                                    t(1, "automatic-speech-recognition", {"audio": "noisy.wav"}),
                                    t(2, "text-to-speech", {"text": "<resource>-1"}, [1])]}, request)
    tidy = tidy_plan(plan, request)
    assert tidy.tasks[1].args == {"audio": "<resource>-0"} and tidy.tasks[1].dep == [0]
    assert tidy.steps == plan.steps
    # through a chain: the edited image is segmented, and the segmented one classified
    chain = validate_plan([t(0, "image-editing", {"image": "room.jpg", "text": "paint the walls blue"}),
                           t(1, "image-segmentation", {"image": "room.jpg"}),
                           t(2, "image-classification", {"image": "room.jpg"})], "edit room.jpg ...")
    images = [x.args["image"] for x in tidy_plan(chain, "edit room.jpg ...").tasks]
    assert images == ["room.jpg", "<resource>-0", "<resource>-1"]


def test_tidy_keeps_the_original_when_asked_and_what_needs_no_change() -> None:
    steps = ["Step 1: Edit the image.", "Step 2: Answer the question about the original image."]
    tasks = [t(0, "image-editing", {"image": "room.jpg", "text": "paint the walls blue"}),
             t(1, "visual-question-answering", {"image": "room.jpg", "text": "what colour were the walls?"})]
    plan = validate_plan({"steps": steps, "tasks": tasks}, "edit room.jpg ...")
    assert tidy_plan(plan, "edit room.jpg ...") is plan
    # not from a task of the same type, nor from object detection's boxes, nor from another file
    for first, request in ((t(0, "image-classification", {"image": "room.jpg"}), "room.jpg"),
                           (t(0, "object-detection", {"image": "room.jpg"}), "room.jpg"),
                           (t(0, "image-editing", {"image": "hall.jpg", "text": "paint it"}), "room.jpg hall.jpg")):
        plan = validate_plan([first, t(1, "image-to-text", {"image": "room.jpg"})], request)
        assert tidy_plan(plan, request) is plan
    same = validate_plan([t(0, "image-editing", {"image": "room.jpg", "text": "a"}),
                          t(1, "image-editing", {"image": "room.jpg", "text": "b"})], "room.jpg")
    assert tidy_plan(same, "room.jpg") is same


def test_every_accepted_reply_is_tidied() -> None:
    raw = {"steps": ["Step 1: Enhance.", "Step 2: Transcribe."],
           "tasks": [t(0, "audio-to-audio", {"audio": "noisy.wav"}), t(1, "automatic-speech-recognition",
                                                                      {"audio": "noisy.wav"})]}
    plan, mended = accept_reply(json.dumps(raw), "enhance noisy.wav and transcribe it")
    assert not mended and plan.tasks[1].args == {"audio": "<resource>-0"}


def test_tidy_gives_a_text_argument_the_output_its_step_speaks_of() -> None:
    request = "label the objects in room.jpg, translate the labels into French and compare them with 'un chat'"
    steps = ["Step 1: Detect the objects in room.jpg.", "Step 2: Translate the labels into French.",
             "Step 3: Compare the translated text with 'un chat'."]
    tasks = [t(0, "object-detection", {"image": "room.jpg"}),
             t(1, "translation", {"text": "<resource>-0", "target_language": "French"}, [0]),
             t(2, "sentence-similarity", {"text": "<resource>-0", "other_text": "un chat"}, [0])]
    tidy = tidy_plan(validate_plan({"steps": steps, "tasks": tasks}, request), request)
    assert tidy.tasks[2].args == {"text": "<resource>-1", "other_text": "un chat"} and tidy.tasks[2].dep == [1]
    # the step speaks of what it already takes, or of nothing earlier, or steps and tasks do not pair up
    for last in ("Step 3: Compare the detected objects (object detection) with 'un chat'.",
                 "Step 3: Compare them with 'un chat'."):
        plan = validate_plan({"steps": steps[:2] + [last], "tasks": tasks}, request)
        assert tidy_plan(plan, request) is plan
    plan = validate_plan({"steps": steps[1:], "tasks": tasks}, request)
    assert tidy_plan(plan, request) is plan


def test_tidy_asks_the_image_a_question_answered_from_its_caption() -> None:
    raw = [t(0, "image-to-text", {"image": "scan.jpg"}),
           t(1, "question-answering", {"question": "What is the main topic?", "context": "<resource>-0"}, [0])]
    request = "What is the main topic of the document in scan.jpg?"
    assert shape(tidy_plan(validate_plan(raw, request), request)) == [
        (0, "document-question-answering", {"image": "scan.jpg", "text": "What is the main topic?"}, [])]
    # not a document: visual question answering; the caption stays when something else uses it
    keep = [t(0, "image-to-text", {"image": "photo.jpg"}), {**raw[1]},
            t(2, "text-to-speech", {"text": "<resource>-0"}, [0])]
    request = "caption photo.jpg, read the caption aloud and tell me what the main topic is"
    tidy = tidy_plan(validate_plan(keep, request), request)
    assert [x.task for x in tidy.tasks] == ["image-to-text", "visual-question-answering", "text-to-speech"]
    # a caption the request asks for stays, though nothing else uses it (a quoted "describe" is no such ask)
    for asks, kept in (("Caption scan.jpg, then answer 'What is the main topic?'",
                        ["image-to-text", "document-question-answering"]),
                       ("For scan.jpg answer 'Can you describe the main topic?'", ["document-question-answering"])):
        assert [x.task for x in tidy_plan(validate_plan(raw, asks), asks).tasks] == kept
    # a planner not offered visual question answering keeps the caption and the question answering
    from localgpt import tasks as registry
    offered = [spec for spec in registry.TASKS if spec.name != "visual-question-answering"]
    plan = validate_plan(keep, request)
    assert tidy_plan(plan, request, specs=offered) is plan


def qa(question: str, context: str = "a text", i: int = 0) -> dict[str, Any]:
    return t(i, "question-answering", {"question": question, "context": context})


def asked(raw: list[dict[str, Any]], request: str, files: list[str] | None = None, **kw: Any) -> list[Any]:
    """The tidied plan's (task, args) pairs."""
    return [(x.task, x.args) for x in tidy_plan(validate_plan(raw, request, files or []), request, files or [],
                                                **kw).tasks]


def test_tidy_asks_an_image_a_question_that_speaks_of_one() -> None:
    request = "draw 'a beach at sunset', then answer 'What is the main feature of the image?' and say it in Spanish"
    raw = [t(0, "text-to-image", {"text": "a beach at sunset"}), qa("What is the main feature of the image?",
                                                                     "a beach at sunset", 1),
           t(2, "translation", {"text": "<resource>-1", "target_language": "Spanish"}, [1])]
    tidy = tidy_plan(validate_plan(raw, request), request)
    # the latest picture made before it is asked; the rest of the plan stays as it was
    assert shape(tidy) == [
        (0, "text-to-image", {"text": "a beach at sunset"}, []),
        (1, "visual-question-answering", {"image": "<resource>-0", "text": "What is the main feature of the image?"},
         [0]),
        (2, "translation", {"text": "<resource>-1", "target_language": "Spanish"}, [1])]
    # the user's image the question names comes first, then a picture made, then the user's first image
    edit = t(0, "image-editing", {"image": "a.jpg", "text": "make it blue"})
    assert asked([edit, qa("Is the car in b.jpg blue?", i=1)], "a.jpg b.jpg")[1][1]["image"] == "b.jpg"
    assert asked([edit, qa("Is the car in the image blue?", i=1)], "a.jpg b.jpg")[1][1]["image"] == "<resource>-0"
    assert asked([qa("Who is in the photo?")], "a.jpg and b.jpg", files=["b.jpg"])[0] == (
        "visual-question-answering", {"image": "b.jpg", "text": "Who is in the photo?"})
    # ... but a question about the original image asks the user's
    assert asked([edit, qa("What colour was the car in the original image?", i=1)], "a.jpg")[1][1]["image"] == "a.jpg"
    # a map of an image (depth, a mask, boxes) stands for the image it maps: the edited one here, the user's there
    depth = t(1, "depth-estimation", {"image": "<resource>-0"})
    assert asked([edit, depth, qa("What is in the image?", i=2)], "a.jpg")[2][1]["image"] == "<resource>-0"
    assert asked([t(0, "object-detection", {"image": "a.jpg"}), qa("What is in the image?", i=1)],
                 "a.jpg")[1][1]["image"] == "a.jpg"
    # a question about a document, or a request that speaks of one: document question answering
    assert asked([qa("What date is on the picture?")], "the form in scan.png")[0] == (
        "document-question-answering", {"image": "scan.png", "text": "What date is on the picture?"})
    raw = [t(0, "image-to-text", {"image": "photo.jpg"}), t(1, "summarization", {"text": "<resource>-0"}, [0]),
           qa("What is the title on this page?", "<resource>-1", 2)]
    # the tasks that fed the question stay: their outputs are still the user's
    assert asked(raw, "photo.jpg, tell me") == [
        ("image-to-text", {"image": "photo.jpg"}), ("summarization", {"text": "<resource>-0"}),
        ("document-question-answering", {"image": "photo.jpg", "text": "What is the title on this page?"})]
    # a file the question names that nobody gave is not taken (the plan would not be valid)
    assert asked([qa("What is in the image c.jpg?")], "look at a.jpg")[0][1]["image"] == "a.jpg"
    # no image anywhere, a question about none ("form" of energy is no document), or the type not offered: it stays
    from localgpt import tasks as registry
    no_vqa = [spec for spec in registry.TASKS if spec.name != "visual-question-answering"]
    for question, request, kw in (("What is the main topic?", "photo.jpg", {}),
                                  ("What form of energy is it?", "photo.jpg", {}),
                                  ("What is in the image?", "What is in the image? (no file here)", {}),
                                  ("What is in the image?", "photo.jpg", {"specs": no_vqa})):
        plan = validate_plan([qa(question)], request)
        assert tidy_plan(plan, request, **kw) is plan, question


def test_files_nobody_gave_take_the_users_files_of_that_kind_in_turn() -> None:
    raw = [t(0, "automatic-speech-recognition", {"audio": "meeting1.ogg"}),
           t(1, "automatic-speech-recognition", {"audio": "meeting2.ogg"})]
    plan = salvage_plan(raw, "حوّل التسجيلين صوت_أ.ogg و صوت_ب.ogg إلى نص", ["صوت_أ.ogg", "صوت_ب.ogg"])
    assert [x.args["audio"] for x in plan.tasks] == ["صوت_أ.ogg", "صوت_ب.ogg"]
    # more invented names than files: the first file again once every one is taken
    raw.append(t(2, "audio-classification", {"audio": "meeting3.ogg"}))
    plan = salvage_plan(raw, "transcribe x.ogg", ["x.ogg"])
    assert [x.args["audio"] for x in plan.tasks] == ["x.ogg", "x.ogg", "x.ogg"]


def test_a_text_argument_naming_a_file_nobody_gave_reads_the_users_file_of_that_kind() -> None:
    raw = [t(0, "summarization", {"text": "recording.ogg"})]
    plan = salvage_plan(raw, "fasse aufnahme.ogg zusammen", ["aufnahme.ogg"])
    assert [(x.task, x.args) for x in plan.tasks] == [
        ("automatic-speech-recognition", {"audio": "aufnahme.ogg"}), ("summarization", {"text": "<resource>-0"})]
    with pytest.raises(PlanError):  # no audio anywhere: nothing to read
        salvage_plan(raw, "summarize it")


def test_a_media_file_nobody_gave_takes_an_unused_users_file_before_an_output() -> None:
    raw = [t(0, "audio-to-audio", {"audio": "messages1.ogg"}), t(1, "audio-to-audio", {"audio": "messages2.ogg"})]
    plan = salvage_plan(raw, "حوّل التسجيلين صوت_أ.ogg و صوت_ب.ogg", ["صوت_أ.ogg", "صوت_ب.ogg"])
    assert [x.args["audio"] for x in plan.tasks] == ["صوت_أ.ogg", "صوت_ب.ogg"]
    # every file taken: the latest output of the kind, as before
    raw = [t(0, "audio-to-audio", {"audio": "a.ogg"}), t(1, "automatic-speech-recognition", {"audio": "clean.ogg"})]
    assert salvage_plan(raw, "clean a.ogg and transcribe it", ["a.ogg"]).tasks[1].args["audio"] == "<resource>-0"


def test_a_users_file_with_words_glued_before_it_is_that_file() -> None:
    request = "分析一下客厅.png：把里面的物体框出来，同时估计一下深度"
    raw = [t(0, "object-detection", {"image": "客厅.png"}), t(1, "depth-estimation", {"image": "分析一下客厅.png"})]
    assert [x.args for x in salvage_plan(raw, request, ["客厅.png"]).tasks] == [{"image": "客厅.png"}] * 2


def test_a_file_nobody_gave_takes_the_users_image_before_detections_boxes() -> None:
    # both tasks name a translated file; the second one works on the photo, not on the boxes drawn on it
    raw = [t(0, "object-detection", {"image": "guestroom.png"}), t(1, "depth-estimation", {"image": "guestroom.png"})]
    plan = salvage_plan(raw, "框出客厅.png里的物体，再估计深度", ["客厅.png"])
    assert [(x.task, x.args) for x in plan.tasks] == [("object-detection", {"image": "客厅.png"}),
                                                    ("depth-estimation", {"image": "客厅.png"})]
    # an output that is a new picture still comes first: enhanced, then captioned
    raw = [t(0, "image-to-image", {"image": "x.png", "text": "sharper"}), t(1, "image-to-text", {"image": "y.png"})]
    plan = salvage_plan(raw, "sharpen photo.png and describe it", ["photo.png"])
    assert plan.tasks[1].args == {"image": "<resource>-0"}
