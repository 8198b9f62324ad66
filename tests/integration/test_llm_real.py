"""LlamaCppLLM against the real SmolLM2-135M GGUF of the test store.

The 135M model plans badly, but under the production plan schema every reply must still parse
and validate: that is what the constraint promises. The tests also catch the quiet failure
where the constraint stops applying (an error inside llama.cpp's sampler callback is printed
and swallowed, and decoding goes on unconstrained).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from bench.varied_requests import REQUESTS
from localgpt.errors import ConfigError, LocalGPTError
from localgpt.llm import FREE_TEXT_REPEAT_PENALTY, MESSAGE_OVERHEAD, complete, schema_key
from localgpt.llm.llamacpp import LlamaCppLLM
from localgpt.planning.planner import Planner, PlannerOptions
from localgpt.planning.schema import steps_kept_schema
from localgpt.planning.validate import validate_plan
from tests import helpers

pytestmark = [
    pytest.mark.slow,
    # llguidance reads the vocabulary through a llama.cpp call that llama-cpp-python marks deprecated.
    pytest.mark.filterwarnings("ignore:llama_token_get_attr is deprecated:DeprecationWarning"),
]

SMOLLM = "smollm2-135m-instruct"

# 50 requests: single tasks, chains, files of every kind, odd phrasing, other languages, near-empty.


def model_path() -> Path:
    """The SmolLM2 GGUF of the test store, or skip (fail under CI)."""
    store = helpers.store_dir()
    path = store / SMOLLM / "model.gguf"
    if not path.is_file():
        helpers.missing(f"'{SMOLLM}' is not installed in {store}; run: python download_models.py --profile test")
    return path


@pytest.fixture(scope="module")
def llm() -> Iterator[LlamaCppLLM]:
    """One SmolLM2 shared by the module (loading per test would dominate the time)."""
    model = LlamaCppLLM(model_path(), n_threads=2)
    yield model
    model.close()


def test_fifty_requests_all_decode_to_valid_plans(llm: LlamaCppLLM) -> None:
    assert len(REQUESTS) == 50
    planner = Planner(llm)
    invalid: list[tuple[str, str, str]] = []
    tokens = 0
    start = time.perf_counter()
    for request, files in REQUESTS:
        raw = llm.generate(planner.messages(request, files), schema=planner.schema, max_tokens=planner.max_tokens())
        tokens += llm.count_tokens(raw)
        try:
            jsonschema.validate(json.loads(raw), planner.schema)
        except (json.JSONDecodeError, jsonschema.ValidationError) as exc:
            invalid.append((request, raw, str(exc).splitlines()[0]))
    seconds = time.perf_counter() - start
    summary = {
        "model": SMOLLM,
        "schema": "plan_schema() (production)",
        "n_demos": planner.n_demos,
        "requests": len(REQUESTS),
        "valid": len(REQUESTS) - len(invalid),
        "validity_rate": (len(REQUESTS) - len(invalid)) / len(REQUESTS),
        "seconds": round(seconds, 1),
        "seconds_per_request": round(seconds / len(REQUESTS), 2),
        "completion_tokens": tokens,
        "threads": llm.n_threads,
    }
    print("\nconstrained planning:", json.dumps(summary))
    out = os.environ.get("LOCALGPT_BENCH_OUT")  # where to keep the figures, when asked
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "llm_real_validity.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    assert not invalid, f"{len(invalid)} replies broke the schema, first: {invalid[0]}"


ODD_SCHEMA = {
    "type": "object",
    "properties": {"code": {"enum": ["zq-alpha-7", "xv-omega-3"]}},
    "required": ["code"],
    "additionalProperties": False,
}
POEM = [{"role": "user", "content": "Write a short poem about the sea."}]


def test_constraint_really_applies(llm: LlamaCppLLM) -> None:
    # No model writes this on its own: if the constraint silently dropped out, this would be a poem.
    constrained = llm.generate(POEM, schema=ODD_SCHEMA, max_tokens=40)
    assert constrained.startswith('{"code":"'), f"the constraint did not apply: {constrained!r}"
    assert json.loads(constrained)["code"] in ("zq-alpha-7", "xv-omega-3"), constrained

    free = llm.generate(POEM, max_tokens=40)
    assert "zq-alpha-7" not in free and "xv-omega-3" not in free
    try:
        decoded = json.loads(free)
    except json.JSONDecodeError:
        decoded = None
    assert not (isinstance(decoded, dict) and decoded.get("code") in ("zq-alpha-7", "xv-omega-3")), free


def test_a_constraint_failing_mid_decode_is_raised_not_swallowed(
        llm: LlamaCppLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    # llama.cpp runs the logits processor in a C callback that prints and drops exceptions; the
    # decode then goes on unconstrained. LlamaCppLLM must turn that into an error instead.
    monkeypatch.setattr(llm, "fast_forward", False)  # outlines' own processor (the fast path: the next test)
    schema = {**ODD_SCHEMA, "description": "failure test"}
    inner = llm.constraint(schema).logits_processor.inner
    real = inner.process_logits
    steps = {"n": 0}

    def fail_after_two(input_ids: Any, logits: Any) -> Any:
        steps["n"] += 1
        if steps["n"] > 2:
            raise RuntimeError("simulated backend failure")
        return real(input_ids, logits)

    monkeypatch.setattr(inner, "process_logits", fail_after_two)
    with pytest.raises(LocalGPTError, match="simulated backend failure"):
        llm.generate(POEM, schema=schema, max_tokens=40)
    monkeypatch.undo()
    assert json.loads(llm.generate(POEM, schema=schema, max_tokens=40))["code"] in ("zq-alpha-7", "xv-omega-3")


def test_a_mask_failing_in_the_fast_path_is_raised_not_swallowed(
        llm: LlamaCppLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    import llguidance.numpy

    monkeypatch.setattr(llm, "fast_forward", True)
    real = llguidance.numpy.fill_next_token_bitmask
    steps = {"n": 0}

    def fail_after_one(*args: Any) -> Any:
        steps["n"] += 1
        if steps["n"] > 1:
            raise RuntimeError("simulated mask failure")
        return real(*args)

    monkeypatch.setattr(llguidance.numpy, "fill_next_token_bitmask", fail_after_one)
    with pytest.raises(LocalGPTError, match="simulated mask failure"):
        llm.generate(POEM, schema=PLAN_LIKE, max_tokens=60)
    assert steps["n"] >= 2  # the fast path masked with llguidance, and its failure surfaced
    monkeypatch.setattr(llguidance.numpy, "fill_next_token_bitmask", real)
    assert json.loads(llm.generate(POEM, schema=PLAN_LIKE, max_tokens=60))["tasks"]  # the next call is whole


def test_a_prompt_past_the_context_is_a_clear_error_in_the_fast_path(
        llm: LlamaCppLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llm, "fast_forward", True)
    long = [{"role": "user", "content": "sea " * (llm.n_ctx + 10)}]
    with pytest.raises(LocalGPTError, match="context window"):
        llm.generate(long, schema=PLAN_LIKE, max_tokens=20)
    assert json.loads(llm.generate(POEM, schema=PLAN_LIKE, max_tokens=60))["tasks"]  # and the next call works


PLAN_LIKE = {"type": "object", "properties": {"tasks": {"type": "array", "minItems": 1, "maxItems": 2, "items": {
    "type": "object", "properties": {"task": {"enum": ["text-to-speech", "automatic-speech-recognition"]},
                                     "text": {"type": "string", "maxLength": 20}},
    "required": ["task", "text"], "additionalProperties": False}}},
    "required": ["tasks"], "additionalProperties": False}


def test_fast_forward_takes_the_forced_tokens_without_a_decoding_step_each(
        llm: LlamaCppLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    # Greedy decoding under the plan schema with the constraint's forced tokens taken in one batch
    # (fast_forward): every reply valid, a good part of each one forced (keys, punctuation, the ends of
    # task names), so llama.cpp evaluates fewer batches than the reply has tokens. The replies need not
    # equal outlines' token-by-token ones: forced text comes in the tokenizer's own split of it, where
    # greedy decoding may have split it otherwise, and a 135M model's next words follow its tokens.
    import llama_cpp

    batches = {"n": 0}
    real_eval = llama_cpp.Llama.eval

    def counted(self: Any, tokens: Any) -> None:
        batches["n"] += 1
        real_eval(self, tokens)

    monkeypatch.setattr(llama_cpp.Llama, "eval", counted)
    monkeypatch.setattr(llm, "fast_forward", True)  # (the default; set so the test holds whatever it is)
    planner = Planner(llm)
    sample = REQUESTS[::5]
    forced, generated = llm.stats.forced_tokens, 0
    for request, files in sample:
        schema = planner.schema_for(request)
        reply = llm.generate(planner.messages(request, files), schema=schema, max_tokens=planner.max_tokens())
        jsonschema.validate(json.loads(reply), schema)
        generated += llm.count_tokens(reply)
    forced = llm.stats.forced_tokens - forced
    assert forced > 10 * len(sample)
    assert batches["n"] <= generated - forced + 2 * len(sample)  # a batch per sampled token (and the prompt's)

    monkeypatch.setattr(llm, "fast_forward", False)  # token by token: no token is taken as forced
    before = llm.stats.forced_tokens
    request, files = sample[0]
    llm.generate(planner.messages(request, files), schema=planner.schema, max_tokens=planner.max_tokens())
    assert llm.stats.forced_tokens == before


def test_a_constraint_made_for_one_request_builds_no_generator_on_the_forced_path(
        llm: LlamaCppLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    # The user's files make a schema of each request's own (exact_files). The own loop takes its grammar from
    # llguidance (milliseconds), the grammar outlines would use, not a new outlines generator (about a second:
    # it builds the tokenizer again); and the files come through exactly.
    monkeypatch.setattr(llm, "fast_forward", True)
    planner = Planner(llm)
    plain = planner.schema_for("Tell me a joke", ())
    assert llm._grammar(plain)[0] == llm.constraint(plain).logits_processor.inner.grammar  # noqa: SLF001
    generators = len(llm._generators)  # noqa: SLF001 - what is built is what this test is about
    for name in ("a.jpg", "b.png", "照片 (2).jpg"):
        request = f"Describe {name}"
        schema = planner.schema_for(request, [name])
        reply = json.loads(llm.generate(planner.messages(request, [name]), schema=schema,
                                        max_tokens=planner.max_tokens()))
        jsonschema.validate(reply, schema)
        images = [v for t in reply["tasks"] for k, v in t["args"].items() if k == "image"]
        assert all(v == name or v.startswith("<resource>-") for v in images), images
    assert len(llm._generators) == generators  # noqa: SLF001
    assert len(llm._grammars) >= 4  # noqa: SLF001


def test_prompt_lookup_keeps_the_greedy_reply_and_takes_drafted_tokens(
        llm: LlamaCppLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    # Drafting by prompt lookup keeps a drafted token only where it is the argmax of its masked logits, so
    # every reply is valid and most are the token-by-token ones; not all: the logits of a token evaluated in
    # a batch of several are not bit for bit those of the same token evaluated alone, and a 135M model's
    # near ties flip (8 of 10 the same when written). Plans copy file names and keys from the prompt, so
    # drafts are kept.
    planner = Planner(llm)
    sample = REQUESTS[1::5]
    monkeypatch.setattr(llm, "fast_forward", False)
    monkeypatch.setattr(llm, "prompt_lookup", 0)
    plain = [llm.generate(planner.messages(r, f), schema=planner.schema_for(r), max_tokens=planner.max_tokens())
             for r, f in sample]
    monkeypatch.setattr(llm, "prompt_lookup", 6)
    drafted, kept = llm.stats.drafted_tokens, llm.stats.accepted_draft_tokens
    looked = [llm.generate(planner.messages(r, f), schema=planner.schema_for(r), max_tokens=planner.max_tokens())
              for r, f in sample]
    drafted, kept = llm.stats.drafted_tokens - drafted, llm.stats.accepted_draft_tokens - kept
    for (request, _), reply in zip(sample, looked, strict=True):
        jsonschema.validate(json.loads(reply), planner.schema_for(request))
    same = sum(a == b for a, b in zip(plain, looked, strict=True))
    print(f"\nprompt lookup: {same}/{len(sample)} replies as token by token; {kept} of {drafted} drafted kept")
    assert same >= len(sample) // 2
    assert kept > 5 * len(sample)


def test_constraint_is_compiled_once_per_schema(llm: LlamaCppLLM) -> None:
    # Two schemas whose JSON agrees for its first 100 characters (as selector schemas over
    # similarly named models do): each must still get its own compiled constraint and stats entry.
    prefix = "a-model-identifier-long-enough-that-two-schemas-share-their-first-hundred-characters-"
    schema = {"type": "object", "properties": {"id": {"enum": [prefix + "one"]}}, "required": ["id"]}
    other = {"type": "object", "properties": {"id": {"enum": [prefix + "two"]}}, "required": ["id"]}
    before = set(llm.stats.constraint_builds)
    first = llm.constraint(schema)
    start = time.perf_counter()
    again = llm.constraint(schema)
    assert time.perf_counter() - start < 0.010
    assert again is first
    assert llm.constraint(other) is not first
    llm.constraint(other)
    added = set(llm.stats.constraint_builds) - before
    assert len(added) == 2, added
    assert llm.constraint(None) is llm.constraint(None)
    assert schema_key(schema) != schema_key(other)


def test_constraint_cache_drops_the_least_recently_used(llm: LlamaCppLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    # per-request schemas (a task-type shortlist) must not grow the cache without end
    monkeypatch.setattr("localgpt.llm.llamacpp.CONSTRAINT_CACHE", 2)
    schemas = [{"type": "object", "properties": {"n": {"enum": [i]}}, "required": ["n"]} for i in range(3)]
    first = llm.constraint(schemas[0])
    llm.constraint(schemas[1])
    assert llm.constraint(schemas[0]) is first  # used again: now the most recent
    llm.constraint(schemas[2])  # evicts schemas[1], the least recently used
    assert llm.constraint(schemas[0]) is first
    kept = llm._generators  # noqa: SLF001 - the cache's size is what this test is about
    assert len(kept) == 2 and schema_key(schemas[1]) not in kept


def test_streamed_chunks_join_to_the_reply(llm: LlamaCppLLM) -> None:
    for schema in (None, ODD_SCHEMA):
        chunks: list[str] = []
        text = llm.generate(POEM, schema=schema, max_tokens=24, on_token=chunks.append)
        assert len(chunks) > 1
        assert "".join(chunks) == text
        if schema is not None:  # the streaming path is constrained too
            assert json.loads(text)["code"] in ("zq-alpha-7", "xv-omega-3"), text


def test_stats_count_calls_and_tokens(llm: LlamaCppLLM) -> None:
    calls, completion = llm.stats.calls, llm.stats.completion_tokens
    text = llm.generate(POEM, schema=ODD_SCHEMA, max_tokens=40)
    assert llm.stats.calls == calls + 1
    assert llm.stats.completion_tokens == completion + llm.count_tokens(text)


def test_a_completion_counts_its_prompt_and_reply_tokens(llm: LlamaCppLLM) -> None:
    reply = complete(llm, POEM, schema=ODD_SCHEMA, max_tokens=40)
    assert json.loads(reply.text)["code"] in ("zq-alpha-7", "xv-omega-3")
    assert reply.completion_tokens == llm.count_tokens(reply.text) > 0
    assert reply.prompt_tokens == llm.count_tokens(POEM[0]["content"]) + MESSAGE_OVERHEAD


def test_the_step_repair_schema_writes_the_steps_given_then_as_many_tasks() -> None:
    """llguidance decodes the step repair's schema: the steps come back exactly as fixed (CJK and quotes
    too), followed by at least as many tasks as steps (SmolLM2, on its own, writes one)."""
    model = LlamaCppLLM(model_path(), n_threads=2, prompt_state=None)
    try:
        planner = Planner(model, n_demos=0)
        steps = ["第一步：把“你好”翻译成英语", 'Step 2: read "it" aloud', "Step 3: transcribe the speech"]
        assert planner.schema is not None
        schema = steps_kept_schema(planner.schema, steps, len(steps))
        raw = model.generate(planner.messages("把“你好”翻译成英语，读出来，再转写", []), schema=schema,
                             max_tokens=planner.max_tokens())
        reply = json.loads(raw)
        jsonschema.validate(reply, schema)
        assert reply["steps"] == steps and len(reply["tasks"]) >= 3
    finally:
        model.close()


def test_the_inline_steps_schema_decodes_each_step_before_its_task(llm: LlamaCppLLM) -> None:
    """llguidance decodes the ``inline_steps`` layout (every task opening with its own step, a floor of two
    tasks for a request of two actions) into replies the schema admits and the planner reads as a plan
    with as many steps as tasks."""
    planner = Planner(llm, options=PlannerOptions(inline_steps=True))
    request = "Transcribe talk.wav, then summarize the transcript and read the summary aloud."
    schema = planner.schema_for(request)
    assert schema is not None and schema["properties"]["tasks"]["minItems"] == 2
    raw = llm.generate(planner.messages(request, ["talk.wav"]), schema=schema, max_tokens=planner.max_tokens())
    reply = json.loads(raw)
    jsonschema.validate(reply, schema)
    assert len(reply["tasks"]) >= 2 and all(t["step"] for t in reply["tasks"])
    plan = validate_plan(reply, request, ["talk.wav"])
    assert plan.steps == [t["step"] for t in reply["tasks"]] and len(plan.tasks) == len(reply["tasks"])


def test_the_gguf_is_read_into_memory_not_mapped(llm: LlamaCppLLM) -> None:
    """By default llama.cpp reads the model file (``use_mmap`` off: mapped, the pages of the weights it
    repacks would stay resident beside the repacked copy), and it plans from it as before."""
    import llama_cpp

    reply = llm.generate([{"role": "user", "content": "Say hi"}], max_tokens=4)
    assert reply and llm.use_mmap is False
    assert llm._llama.model_params.load_mode == llama_cpp.LLAMA_LOAD_MODE_NONE


def test_missing_gguf_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        LlamaCppLLM(tmp_path / "absent.gguf")


@pytest.mark.parametrize("content", [b"", b"this is not a gguf file\n" * 100, b"GGUF\x03\x00\x00\x00" + b"\x00" * 64])
def test_file_that_is_not_gguf_is_a_config_error(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_bytes(content)
    llm = LlamaCppLLM(bad)
    with pytest.raises(ConfigError, match="cannot load GGUF model"):
        llm.count_tokens("hello")


def test_prompt_prefix_is_evaluated_once_and_reused() -> None:
    """With the prompt cache, a second plan re-evaluates only what differs from the first prompt."""
    cached = LlamaCppLLM(model_path(), n_threads=2, prompt_cache_mb=256, prompt_state=None)  # RAM cache only
    planner = Planner(cached, n_demos=0)
    system_tokens = cached.count_tokens(planner.system_prompt())
    first = planner.messages("Read 'good morning' aloud", [])
    second = planner.messages("Transcribe talk.wav", ["talk.wav"])
    cached.generate(first, schema=planner.schema, max_tokens=planner.max_tokens())
    evaluated_first = cached.stats.prompt_tokens_evaluated
    cached.generate(second, schema=planner.schema, max_tokens=planner.max_tokens())
    evaluated_second = cached.stats.prompt_tokens_evaluated - evaluated_first
    assert evaluated_first > system_tokens
    assert evaluated_second < evaluated_first - system_tokens // 2, (evaluated_first, evaluated_second)
    cached.close()

    plain = LlamaCppLLM(model_path(), n_threads=2, prompt_cache_mb=0, prompt_state=None)  # no cache at all
    plain.generate(first, schema=planner.schema, max_tokens=planner.max_tokens())
    before = plain.stats.prompt_tokens_evaluated
    plain.generate(second, schema=planner.schema, max_tokens=planner.max_tokens())
    assert plain.stats.prompt_tokens_evaluated - before > system_tokens  # without it, all again
    plain.close()



def test_a_reply_continued_from_the_ram_cache_is_the_reply_evaluated_in_full() -> None:
    """The state kept after a reply (a lean one: the context's state, no logits rows) lets a repair-like
    follow-up read only its new message, and gives the same reply as evaluating everything."""
    cached = LlamaCppLLM(model_path(), n_threads=2, prompt_cache_mb=256, prompt_state=None)
    planner = Planner(cached, n_demos=1)
    first = planner.messages("Read 'good morning' aloud", [])
    reply = cached.generate(first, schema=planner.schema, max_tokens=planner.max_tokens())
    kept = list(cached._llama.cache.cache_state.values())  # noqa: SLF001 - what the cache keeps is the point
    assert len(kept) == 1 and kept[0].scores.shape[0] == 1 and kept[0].n_tokens > 0
    follow = [*first, {"role": "assistant", "content": reply}, {"role": "user", "content": "Again, please."}]
    before = cached.stats.prompt_tokens_evaluated
    again = cached.generate(follow, schema=planner.schema, max_tokens=planner.max_tokens())
    read = cached.stats.prompt_tokens_evaluated - before
    assert 0 < read < 40, read  # the new message and the template's tokens around it
    cached.close()
    plain = LlamaCppLLM(model_path(), n_threads=2, prompt_cache_mb=0, prompt_state=None)
    assert plain.generate(follow, schema=planner.schema, max_tokens=planner.max_tokens()) == again
    assert plain.stats.prompt_tokens_evaluated > cached.count_tokens(planner.system_prompt())
    plain.close()


def test_ending_logprobs_read_from_the_cache_equal_those_evaluated_in_full() -> None:
    """The odds of two endings of a reply just decoded come from the RAM cache's state and equal those of a
    model that evaluates everything; the state is left as it was (the reply decodes the same after), and the
    planner's close odds come from them."""
    cached = LlamaCppLLM(model_path(), n_threads=2, prompt_cache_mb=256, prompt_state=None)
    planner = Planner(cached, n_demos=1, options=PlannerOptions(step_close=0.5))
    msgs = planner.messages("Read 'good morning' aloud, then transcribe it", [])
    reply = cached.generate(msgs, schema=planner.schema, max_tokens=planner.max_tokens())
    prefix, endings = reply[: reply.index('],"tasks":') - 1], ['"],"tasks":[{"id":0', '","Step 9:']
    scores = cached.ending_logprobs(msgs, prefix, endings)
    assert len(scores) == 2 and all(x < 0 for x in scores) and scores[0] != scores[1]
    assert cached.generate(msgs, schema=planner.schema, max_tokens=planner.max_tokens()) == reply
    plain = LlamaCppLLM(model_path(), n_threads=2, prompt_cache_mb=0, prompt_state=None)
    # batched otherwise: the kernels round a row by its place in the batch (up to 0.15 nats apart measured
    # with llama.cpp's AVX-512 kernels, under 0.13 with its AVX2 ones)
    assert plain.ending_logprobs(msgs, prefix, endings) == pytest.approx(scores, rel=0.02, abs=0.2)
    plain.close()
    odds = planner.close_odds(reply, msgs)
    assert odds is not None and odds[0] == len(json.loads(reply)["steps"]) and 0 < odds[1] < 1
    attempt = planner.attempt("Read 'good morning' aloud, then transcribe it")
    assert attempt.plan is not None and attempt.close_odds is not None
    cached.close()


def test_prompt_cache_stays_within_its_capacity() -> None:
    """Every saved state counts in full (logits included) and the cache never exceeds its capacity."""
    capacity_mb = 64  # room for about two states of this prompt (34 task types), so eviction is exercised
    llm = LlamaCppLLM(model_path(), n_threads=2, prompt_cache_mb=capacity_mb)
    planner = Planner(llm, n_demos=1)
    for request in ("Read 'one' aloud", "Transcribe a.wav", "Summarize: cats sleep a lot.", "Draw a red boat"):
        llm.generate(planner.messages(request, []), schema=planner.schema, max_tokens=64)
        cache = llm._llama.cache
        assert cache.cache_size <= capacity_mb << 20
        assert all(state.scores.shape[0] == 1 for state in cache.cache_state.values())
    assert len(llm._llama.cache.cache_state) >= 1
    llm.close()


def test_repeat_penalty_reaches_llama_cpp_and_stops_a_loop(llm: LlamaCppLLM) -> None:
    # greedy SmolLM2 loops on this request ("Fox," line after line); with the free-text penalty the
    # same request no longer repeats the word, and without a penalty decoding is unchanged
    msgs = [{"role": "user", "content": "Write the word 'fox' thirty times, separated by spaces."}]
    plain = llm.generate(msgs, max_tokens=60)
    assert llm.generate(msgs, max_tokens=60, repeat_penalty=1.0) == plain
    penalised = llm.generate(msgs, max_tokens=60, repeat_penalty=FREE_TEXT_REPEAT_PENALTY)
    def foxes(text: str) -> int:  # the word itself, not "foxy" or "fox-a-doodle" (the penalty's way out)
        return len(re.findall(r"\bfox\b(?!-)", text.lower()))

    assert foxes(plain) >= 10, plain
    assert foxes(penalised) < foxes(plain) / 2, penalised
