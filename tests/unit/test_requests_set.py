"""localgpt's own evaluation set (bench/requests/): what it promises, its fixed split, and the scorer's metrics."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from bench import requests as rq
from localgpt import tasks as registry
from localgpt.planning.validate import validate_plan

ITEMS = rq.load_requests()
LANGS = {"en", "zh", "de", "fr", "es", "ja", "ar"}


def test_the_set_is_large_and_multilingual() -> None:
    assert len(ITEMS) >= 260
    foreign = [i for i in ITEMS if i["lang"] != "en"]
    assert len(foreign) >= 80
    assert {i["lang"] for i in ITEMS} >= LANGS
    assert len({i["lang"] for i in foreign}) >= 6
    for lang in LANGS - {"en"}:  # spread over the languages, not all in one
        assert sum(i["lang"] == lang for i in ITEMS) >= 10, lang


def test_ids_are_unique_and_name_their_language() -> None:
    ids = [i["id"] for i in ITEMS]
    assert len(ids) == len(set(ids))
    assert all(i["id"].startswith(i["lang"] + "-") for i in ITEMS)


def test_every_gold_plan_is_valid() -> None:
    for item in ITEMS:
        if item["shape"] == "llm-only":
            assert item["tasks"] == [] and item["files"] == [], item["id"]
            continue
        plan = validate_plan({"tasks": item["tasks"]}, item["request"], item["files"], max_tasks=32)
        assert [t["id"] for t in item["tasks"]] == list(range(len(item["tasks"]))), item["id"]
        # the deps written are those the references give ([-1]: none), as localgpt's plans write them
        assert [t.dep or [-1] for t in plan.tasks] == [t["dep"] for t in item["tasks"]], item["id"]


def test_every_task_type_is_used_three_times_or_more() -> None:
    used = Counter(name for i in ITEMS for name in {t["task"] for t in i["tasks"]})
    assert {n: used[n] for n in registry.names() if used[n] < 3} == {}
    assert set(used) <= set(registry.names())


def test_each_language_has_every_shape_and_labels_match_the_graphs() -> None:
    for lang in {i["lang"] for i in ITEMS}:
        assert {i["shape"] for i in ITEMS if i["lang"] == lang} == set(rq.SHAPES), lang
    for item in ITEMS:
        assert rq.shape_of(item["tasks"]) == item["shape"], item["id"]


def test_chains_short_and_long_and_joins() -> None:
    chains = [len(i["tasks"]) for i in ITEMS if i["shape"] == "chain"]
    assert sum(2 <= n <= 3 for n in chains) >= 20 and sum(4 <= n <= 6 for n in chains) >= 15
    joins = [i for i in ITEMS if any(len([d for d in t["dep"] if d != -1]) >= 2 for t in i["tasks"])]
    assert len(joins) >= 5  # branches that join into one task
    foreign_long = {i["lang"] for i in ITEMS if i["lang"] != "en" and i["shape"] == "chain" and len(i["tasks"]) >= 4}
    assert len(foreign_long) >= 6


def test_multi_file_requests_process_every_file_once_per_task() -> None:
    multi = [i for i in ITEMS if i["shape"] == "multi-file"]
    assert len(multi) >= 30
    assert {len(i["files"]) for i in multi} >= {2, 3, 4}
    for item in ITEMS:  # the files given are exactly those the gold plan takes
        assert {f for _, f in rq.file_args(item["tasks"])} == set(item["files"]), item["id"]
    assert any(not f.isascii() for i in ITEMS for f in i["files"])


def test_quoted_text_is_kept_verbatim_in_the_gold() -> None:
    quoted = [i for i in ITEMS if i["tasks"] and rq.quotes(i["request"], i["files"])]
    assert len(quoted) >= 25
    assert len({i["lang"] for i in quoted}) >= 6
    for item in quoted:
        values = [v for t in item["tasks"] for v in t["args"].values()]
        for q in rq.quotes(item["request"], item["files"]):
            assert any(q in v for v in values), (item["id"], q)


def test_quotes_are_found_in_every_script() -> None:
    assert rq.quotes("Read 'hello there' aloud, don't shout") == ["hello there"]
    assert rq.quotes("Lies „Guten Tag“ vor und « Bonjour » aussi") == ["Guten Tag", "Bonjour"]
    assert rq.quotes("把“你好”和「さようなら」翻译") == ["你好", "さようなら"]
    assert rq.quotes("the kids' toys and Sam's bike") == []
    assert rq.quotes('Describe "photo.jpg"', ["photo.jpg"]) == []


def test_the_split_is_fixed_by_the_id_and_both_halves_hold_everything() -> None:
    assert rq.half_of("en-001") == rq.half_of("en-001")
    assert {rq.half_of(f"x-{n}") for n in range(20)} == {"tuning", "locked"}
    tuning, locked = rq.choose(ITEMS, "tuning"), rq.choose(ITEMS, "locked")
    assert len(tuning) + len(locked) == len(ITEMS) and not {i["id"] for i in tuning} & {i["id"] for i in locked}
    for half in (tuning, locked):
        assert {i["lang"] for i in half} == {i["lang"] for i in ITEMS}
        assert {i["shape"] for i in half} == set(rq.SHAPES)
        assert abs(len(half) - len(ITEMS) / 2) < len(ITEMS) / 6


def test_a_limited_sample_takes_every_shape() -> None:
    sample = rq.choose(ITEMS, "tuning", limit=5)
    assert len(sample) == 5 and {i["shape"] for i in sample} == set(rq.SHAPES)
    assert {i["lang"] for i in rq.choose(ITEMS, "all", lang="ja")} == {"ja"}
    assert {i["lang"] for i in rq.choose(ITEMS, "all", lang="ja,zh")} == {"ja", "zh"}


# ---------------------------------------------------------------- the metrics on hand-made cases

def task(i: int, name: str, deps: tuple[int, ...] = (), **args: str) -> dict:
    return {"id": i, "task": name, "dep": list(deps) or [-1], "args": args}


CHAIN = {"id": "t-1", "lang": "en", "shape": "chain", "files": ["photo.jpg"],
         "request": "Describe photo.jpg, translate it into German with the words 'bitte schön', and read it aloud",
         "tasks": [task(0, "image-to-text", image="photo.jpg"),
                   task(1, "translation", (0,), text="<resource>-0 bitte schön", target_language="German"),
                   task(2, "text-to-speech", (1,), text="<resource>-1")]}
JOKE = {"id": "t-2", "lang": "en", "shape": "llm-only", "files": [], "request": "tell me a joke", "tasks": []}


def test_a_perfect_plan_scores_full_marks() -> None:
    j = rq.judge(CHAIN, CHAIN["tasks"])
    assert j.nodes == (3, 0, 0) and j.edges == (2, 0, 0) and j.exact_graph and j.exact_set and j.valid
    assert j.files == (1, 1) and j.quotes == (1, 1)
    m = rq.score([CHAIN], {"t-1": CHAIN["tasks"]})
    assert m["all"]["node_f1"] == m["all"]["edge_f1"] == m["all"]["exact_graph"] == 100.0
    assert m["by_shape"]["chain"]["requests"] == 1 and m["by_lang"]["en"]["valid_rate"] == 100.0


def test_a_missing_task_loses_its_node_and_edges() -> None:
    pred = [CHAIN["tasks"][0], task(1, "text-to-speech", (0,), text="<resource>-0")]
    j = rq.judge(CHAIN, pred)
    assert j.nodes == (2, 0, 1)  # translation missed
    assert j.edges == (0, 1, 2)  # image-to-text -> text-to-speech is not a gold edge
    assert not j.exact_set and not j.exact_graph
    assert j.quotes == (0, 1)  # the quoted words went with the translation
    m = rq.score([CHAIN], {"t-1": pred})["all"]
    assert m["node_f1"] == pytest.approx(100 * 4 / 5) and m["edge_f1"] == 0.0


def test_a_wrong_edge_keeps_the_task_set_but_not_the_graph() -> None:
    # both later tasks hang off the caption: same types, one edge wrong
    pred = [CHAIN["tasks"][0], CHAIN["tasks"][1], task(2, "text-to-speech", (0,), text="<resource>-0")]
    j = rq.judge(CHAIN, pred)
    assert j.nodes == (3, 0, 0) and j.edges == (1, 1, 1)
    assert j.exact_set and not j.exact_graph


def test_the_wrong_file_counts_against_file_fidelity() -> None:
    pred = [task(0, "image-to-text", image="other.jpg"), *CHAIN["tasks"][1:]]
    assert rq.judge(CHAIN, pred).files == (0, 1)


def test_multiset_types_count_a_task_per_file() -> None:
    gold = {"id": "t-3", "lang": "en", "shape": "multi-file", "files": ["a.jpg", "b.jpg", "c.jpg"],
            "request": "how many dogs in a.jpg, b.jpg, c.jpg",
            "tasks": [task(n, "object-detection", image=f) for n, f in enumerate(["a.jpg", "b.jpg", "c.jpg"])]}
    j = rq.judge(gold, [task(0, "object-detection", image="a.jpg")])
    assert j.nodes == (1, 0, 2) and not j.exact_set
    assert j.files == (1, 1)  # of the one task matched by type, it took a gold file


def test_an_llm_only_request_is_right_with_no_task_or_one_text_task() -> None:
    for pred in ([], [task(0, "text-generation", text="a joke")], [task(0, "conversational", text="tell me a joke")]):
        j = rq.judge(JOKE, pred)
        assert j.exact_graph and j.exact_set and j.nodes == (1, 0, 0) and j.edges == (0, 0, 0), pred
    tools = [task(0, "text-generation", text="a joke"), task(1, "text-to-speech", (0,), text="<resource>-0")]
    j = rq.judge(JOKE, tools)
    assert not j.exact_set and j.nodes == (0, 2, 1) and j.edges == (0, 1, 0)
    failed = rq.judge(JOKE, None)  # no plan came back: never right
    assert not failed.exact_set and not failed.valid and failed.nodes == (0, 0, 1)
    m = rq.score([JOKE, CHAIN], {"t-2": [task(0, "text-generation", text="a joke")], "t-1": None})
    assert m["by_shape"]["llm-only"]["exact_set"] == 100.0 and m["by_shape"]["chain"]["exact_set"] == 0.0
    assert m["all"]["valid_rate"] == 50.0


def test_paired_comparison_counts_better_and_worse() -> None:
    items = [CHAIN, JOKE]
    a = {"t-1": CHAIN["tasks"], "t-2": [task(0, "text-to-image", text="a joke")]}
    b = {"t-1": CHAIN["tasks"][:1], "t-2": []}
    meta_a = {"t-1": {"seconds": 10.0}, "t-2": {"seconds": 4.0}}
    meta_b = {"t-1": {"seconds": 8.0}, "t-2": {"seconds": 5.0}}
    out = rq.paired(items, a, b, meta_a, meta_b, reps=200)
    assert out["requests"] == 2 and out["better"] == 1 and out["worse"] == 1
    assert out["a"]["exact_set"] == out["b"]["exact_set"] == 50.0
    assert out["median_seconds"] == {"a": 7.0, "b": 6.5, "paired_diff": -0.5}
    lo, hi = out["exact_set_diff_ci95"]
    assert lo <= 0 <= hi


def test_a_variant_changes_one_setting_and_shares_the_rest() -> None:
    from localgpt.planning.planner import Planner
    from localgpt.testing import FakeLLM

    base = Planner(FakeLLM([]))
    fewer = rq.variant(base, "n_demos=2")
    assert fewer.n_demos == 2 and base.n_demos == 3 and fewer.options == base.options
    assert fewer.schema is base.schema and fewer.llm is base.llm
    rewrite = rq.variant(base, "rewrite=1")
    assert rewrite.options.rewrite and not base.options.rewrite and rewrite.n_demos == 3
    assert rq.variant(base, "demo-diversity=0.3").options.demo_diversity == 0.3
    inline = rq.variant(base, "inline_steps=1")  # a setting that shapes the schema builds it again
    assert list(inline.schema["properties"]) == ["tasks"] and list(base.schema["properties"]) == ["steps", "tasks"]
    assert rewrite.schema == base.schema
    base.llm.fast_forward = True  # (an in-process LLM's setting)
    plain = rq.variant(base, "fast_forward=0")
    assert plain.llm.fast_forward is False and base.llm.fast_forward is True and plain.llm.calls is base.llm.calls
    for bad in ("n_demos", "colour=2", "rewrite=maybe", "n_demos=two", "passes=1"):
        with pytest.raises(rq.SetError):
            rq.variant(base, bad)


def test_a_load_setting_gives_a_second_llm_of_the_same_file(tmp_path: Path) -> None:
    from localgpt.config import N_BATCH_DEFAULT, N_UBATCH_DEFAULT
    from localgpt.llm.llamacpp import LlamaCppLLM
    from localgpt.planning.planner import Planner
    from localgpt.testing import FakeLLM

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")  # never loaded here
    base = Planner(LlamaCppLLM(gguf, n_threads=1, prompt_cache_mb=7, prompt_state=None))
    both = rq.variant(rq.variant(base, "n_batch=256"), "n_ubatch=256")
    assert (both.llm.n_batch, both.llm.n_ubatch) == (256, 256) and both.llm is not base.llm
    assert (base.llm.n_batch, base.llm.n_ubatch) == (N_BATCH_DEFAULT, N_UBATCH_DEFAULT) and base.llm._llama is None
    assert (both.llm.path, both.llm.n_threads, both.llm.prompt_cache_mb) == (gguf, 1, 7)
    assert both.options == base.options and both.n_demos == base.n_demos
    assert rq.variant(base, "flash_attn=1").llm.flash_attn is True
    import inspect

    keywords = {n for n, p in inspect.signature(LlamaCppLLM.__init__).parameters.items() if p.kind == p.KEYWORD_ONLY}
    assert set(rq.LLM_ARGS) == keywords  # every setting the copy is built with, none missed
    with pytest.raises(rq.SetError):  # an LLM that is not loaded here (a fake, an engine)
        rq.variant(Planner(FakeLLM([])), "n_batch=1024")


def test_paired_plans_start_from_an_empty_ram_cache() -> None:
    from types import SimpleNamespace

    states = {(1, 2, 3): "a state"}
    rq._forget_replies(SimpleNamespace(_llama=SimpleNamespace(cache=SimpleNamespace(cache_state=states))))
    assert states == {}
    rq._forget_replies(object())  # an engine, a fake: nothing to empty


# ---------------------------------------------------------------- the command line without a model

def test_stats_count_the_set(capsys: pytest.CaptureFixture[str]) -> None:
    assert rq.main(["--stats"]) == 0
    out = capsys.readouterr().out
    assert f"{len(ITEMS)} requests" in out and "| zh |" in out and "| tuning |" in out
    s = rq.stats(ITEMS)
    assert s["halves"]["tuning"]["requests"] + s["halves"]["locked"]["requests"] == len(ITEMS)


def test_the_locked_half_needs_report(capsys: pytest.CaptureFixture[str]) -> None:
    for half in ("locked", "all"):
        assert rq.main(["--half", half, "--planner", "/nonexistent.gguf"]) == 1
        assert "--report" in capsys.readouterr().err


def test_rescoring_a_locked_run_needs_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    locked = next(i for i in ITEMS if rq.half_of(i["id"]) == "locked")
    (tmp_path / "r.predictions.jsonl").write_text(json.dumps({"id": locked["id"], "tasks": None}) + "\n")
    (tmp_path / "r.meta.jsonl").write_text(json.dumps({"id": locked["id"], "raw": [], "valid": False}) + "\n")
    assert rq.main(["--rescore", "r", "--out-dir", str(tmp_path)]) == 1
    assert "--report" in capsys.readouterr().err


def test_rescore_replays_stored_replies_without_a_model(tmp_path: Path) -> None:
    item = next(i for i in ITEMS if rq.half_of(i["id"]) == "tuning" and i["shape"] == "chain")
    reply = json.dumps({"steps": [f"Step {n + 1}" for n in range(len(item["tasks"]))], "tasks": item["tasks"]},
                       ensure_ascii=False)
    (tmp_path / "r.predictions.jsonl").write_text(json.dumps({"id": item["id"], "tasks": None}) + "\n")
    rewrite = json.dumps({"english": "the request in English"})  # --rewrite's first reply: skipped, not a plan
    (tmp_path / "r.meta.jsonl").write_text(json.dumps({"id": item["id"], "raw": [rewrite, "not json", reply],
                                                       "valid": False, "seconds": 3.0}) + "\n")
    assert rq.main(["--rescore", "r", "--out-dir", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "r-rescored.json").read_text())
    assert doc["changed"] == [item["id"]] and doc["metrics"]["all"]["valid_rate"] == 100.0
    assert doc["metrics"]["all"]["median_seconds"] == 3.0


def test_a_broken_request_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "xx.jsonl").write_text('{"id": "xx-1", "lang": "yy", "shape": "single", "request": "r", '
                                       '"files": [], "tasks": []}\n')
    with pytest.raises(rq.SetError, match=r"xx.jsonl:1 \(xx-1\): lang 'yy'"):
        rq.load_requests(tmp_path)
    assert rq.main(["--stats", "--data", str(tmp_path)]) == 1


def test_runs_are_named_after_the_planner() -> None:
    assert rq.planner_label("qwen2.5-coder-1.5b-instruct") == "qwen2.5-coder-1.5b-instruct"
    assert rq.planner_label("model_store/smollm2-135m-instruct/model.gguf") == "smollm2-135m-instruct"
    assert rq.planner_label("/models/tiny-q4.gguf") == "tiny-q4"


def test_text_generation_and_conversational_count_as_one_type_inside_a_plan() -> None:
    # "tell a joke and draw a cat": the joke is the LLM's text either way (experts/llm_text.py runs both alike)
    gold = {"id": "t-4", "lang": "en", "shape": "dag", "files": [], "request": "tell a joke and draw a cat",
            "tasks": [task(0, "text-generation", text="a joke"), task(1, "text-to-image", text="a cat"),
                      task(2, "text-to-speech", (0,), text="<resource>-0")]}
    pred = [task(0, "conversational", text="tell a joke"), task(1, "text-to-image", text="a cat"),
            task(2, "text-to-speech", (0,), text="<resource>-0")]
    j = rq.judge(gold, pred)
    assert j.nodes == (3, 0, 0) and j.edges == (1, 0, 0) and j.exact_set and j.exact_graph
    other = [task(0, "summarization", text="a joke"), *pred[1:]]  # a type that is not the LLM's answer
    assert rq.judge(gold, other).nodes == (2, 1, 1)
