"""The responder: time to its first streamed token, an answer no longer than the results need, a prompt of
its own (never the planner's)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from localgpt.llm import Message
from localgpt.runtime.responder import ANSWER_BASE_TOKENS, Responder
from localgpt.schema import TaskResult
from localgpt.testing import FakeLLM


class SlowStart(FakeLLM):
    """Reads its prompt for ``delay`` seconds, then streams words ``gap`` seconds apart; records max_tokens."""

    def __init__(self, delay: float, gap: float) -> None:
        super().__init__(default="Done: the audio is ready .")
        self.delay, self.gap = delay, gap
        self.max_tokens: list[int] = []

    def generate(self, messages: Sequence[Message], **kwargs: Any) -> str:
        self.max_tokens.append(kwargs["max_tokens"])
        on_token = kwargs.pop("on_token", None)
        time.sleep(self.delay)

        def paced(token: str) -> None:
            if on_token is not None:
                on_token(token)
            time.sleep(self.gap)

        return super().generate(messages, on_token=paced, **kwargs)


RESULTS = [TaskResult(id=0, task="text-to-speech", status="done", model="tts", outputs={"audio": "/r/a.wav"})]


def test_time_to_first_token_is_measured_and_tokens_stream() -> None:
    llm = SlowStart(delay=0.2, gap=0.1)
    responder = Responder(llm)
    seen: list[tuple[float, str]] = []
    start = time.perf_counter()
    answer = responder.respond("say hi", RESULTS, on_token=lambda t: seen.append((time.perf_counter() - start, t)))
    total = time.perf_counter() - start
    first = responder.first_token_seconds
    assert first is not None and 0.2 <= first < 0.3 and first < total - 0.3
    assert seen[0][0] < seen[-2][0] - 0.3  # the words arrived one by one, not at the end
    assert answer.startswith("Done: the audio is ready") and answer.endswith("- /r/a.wav")


def test_no_token_means_no_first_token_time() -> None:
    responder = Responder(FakeLLM(default=""))
    responder.respond("say hi", [])
    assert responder.first_token_seconds is None


def test_the_answer_is_no_longer_than_the_results_need() -> None:
    llm = SlowStart(delay=0, gap=0)
    responder = Responder(llm, max_tokens=400)
    responder.respond("say hi", RESULTS)
    user = responder.messages("say hi", RESULTS)[-1]["content"]
    assert llm.max_tokens[-1] == responder.answer_budget == ANSWER_BASE_TOKENS + llm.count_tokens(user) < 400
    long = [TaskResult(id=0, task="automatic-speech-recognition", status="done", model="asr",
                       outputs={"text": "word " * 1000})]
    responder.respond("transcribe it", long)
    assert llm.max_tokens[-1] == 400  # never above the limit


def test_the_prompt_is_the_request_and_results_only() -> None:
    msgs = Responder(FakeLLM()).messages("say hi", RESULTS)
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert "planner" not in msgs[0]["content"] and msgs[1]["content"].startswith("Request: say hi\nResults:")


def test_the_results_are_one_line_each_without_what_the_outputs_already_say() -> None:
    """A transcript in a result's outputs is not repeated in its details, nor an empty value shown; what the
    outputs do not say (the audio's length) stays; the results read as one JSON list, a result a line."""
    results = [
        TaskResult(id=0, task="automatic-speech-recognition", status="done", model="whisper",
                   outputs={"text": "the train leaves at nine"},
                   data={"text": "the train leaves at nine", "seconds": 2.5, "score": None}),
        TaskResult(id=1, task="image-to-text", status="done", model="blip", outputs={"text": "a cat"},
                   data={"caption": "a cat"}),
        TaskResult(id=2, task="text-to-speech", status="failed", error="no voice"),
    ]
    user = Responder(FakeLLM()).messages("transcribe it", results)[-1]["content"]
    body = user.split("Results:\n", 1)[1]
    lines = body.splitlines()
    assert lines[0] == "[" and lines[-1] == "]" and len(lines) == 5
    view = json.loads(body)
    assert view[0]["details"] == {"seconds": 2.5}
    assert "details" not in view[1] and view[1]["outputs"] == {"text": "a cat"}
    assert view[2]["error"] == "no voice"
    assert user.count("the train leaves at nine") == 1


def test_details_of_any_type_are_shown() -> None:
    """Details an expert returns as arrays or other objects are compared with the outputs only when they are
    text, and written as JSON text (anything else as its str)."""
    import numpy as np

    result = TaskResult(id=0, task="depth-estimation", status="done", model="dpt", outputs={"image": "/r/d.png"},
                        data={"range": np.array([0.5, 2.0]), "path": "/r/d.png", "size": [4, 4]})
    view = json.loads(Responder(FakeLLM()).messages("depth of x.png", [result])[-1]["content"].split("Results:\n")[1])
    assert view[0]["details"] == {"range": "[0.5 2. ]", "size": [4, 4]}


def test_numbers_in_details_are_given_to_four_significant_digits() -> None:
    """A score or a box is shown to four significant digits wherever it sits, a large number keeping its integer
    digits; integers, booleans, text and the outputs stay."""
    import numpy as np

    result = TaskResult(id=0, task="object-detection", status="done", model="detr", outputs={"text": "2 cats 0.98765"},
                        data={"score": 0.9891608357429504, "count": 2, "label": "0.123456", "area": 123456.7,
                              "depth": -0.0, "flag": True,
                              "boxes": [{"box": [12.345678, 0.000123456789, np.float32(1 / 3), 250], "score": 1e-7}]})
    user = Responder(FakeLLM()).messages("cats in x.png", [result])[-1]["content"]
    view = json.loads(user.split("Results:\n")[1])
    assert view[0]["details"] == {"score": 0.9892, "count": 2, "label": "0.123456", "area": 123457.0,
                                  "depth": -0.0, "flag": True,
                                  "boxes": [{"box": [12.35, 0.0001235, 0.3333, 250], "score": 1e-7}]}
    assert view[0]["outputs"] == {"text": "2 cats 0.98765"} and "0.98916" not in user
