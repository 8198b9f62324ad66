"""The TaskBench metric code on hand-made cases, the conversions, and a smoke run of the benchmark."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import taskbench as tb
from localgpt.errors import PlanError
from localgpt.planning.demo_file import as_reference
from localgpt.planning.planner import Planner
from localgpt.planning.validate import validate_plan
from localgpt.testing import FakeLLM
from tests.helpers import missing

REPO = Path(__file__).resolve().parents[2]


def rec(rid: str, nodes: list[dict], kind: str = "chain") -> dict:
    return {"id": rid, "user_request": "r", "task_nodes": nodes, "type": kind}


CHAIN = [
    {"task": "Image-to-Text", "arguments": ["example.jpg"]},
    {"task": "Translation", "arguments": ["<node-0>"]},
    {"task": "Text-to-Speech", "arguments": ["<node-1>"]},
]


def test_perfect_prediction_scores_100():
    records = [rec("a", CHAIN), rec("b", CHAIN[:1], "single")]
    preds = {r["id"]: {"task_nodes": r["task_nodes"]} for r in records}
    m = tb.score(records, preds)
    assert m["all"]["node_f1"] == 100.0 and m["all"]["edge_f1"] == 100.0
    assert m["all"]["exact_match"] == 100.0


def test_missing_or_empty_prediction_scores_0():
    records = [rec("a", CHAIN)]
    assert tb.score(records, {})["all"]["node_f1"] == 0.0
    assert tb.score(records, {"a": {"task_nodes": []}})["all"]["edge_f1"] == 0.0


def test_partial_case_computed_by_hand():
    # gold: 3 nodes, 2 edges.  pred: Image-to-Text -> Summarization -> Text-to-Speech
    # nodes: tp 2 (I2T, TTS), fp 1 (Summ), fn 1 (Translation) -> F1 = 2*2/(4+1+1) = 66.67
    # edges: gold {(I2T,Tr),(Tr,TTS)}; pred {(I2T,Summ),(Summ,TTS)} -> tp 0 -> F1 0
    pred = [{"task": "Image-to-Text", "arguments": ["example.jpg"]},
            {"task": "Summarization", "arguments": ["<node-0>"]},
            {"task": "Text-to-Speech", "arguments": ["<node-1>"]}]
    m = tb.score([rec("a", CHAIN)], {"a": {"task_nodes": pred}})
    assert m["all"]["node_f1"] == pytest.approx(66.67, abs=0.01)
    assert m["all"]["edge_f1"] == 0.0
    # pooled over records: add a perfect single record (1 node, 0 edges): nodes tp 3 fp 1 fn 1 -> 75.0
    m2 = tb.score([rec("a", CHAIN), rec("b", CHAIN[:1], "single")],
                  {"a": {"task_nodes": pred}, "b": {"task_nodes": CHAIN[:1]}})
    assert m2["all"]["node_f1"] == pytest.approx(75.0)
    assert m2["single"]["node_f1"] == 100.0 and m2["chain"]["node_f1"] == pytest.approx(66.67, abs=0.01)


def test_forward_references_count_as_edges():
    # alphabetical order in the gold data: node 0 uses node 1's output
    nodes = [{"task": "Translation", "arguments": ["<node-1>"]}, {"task": "Image-to-Text", "arguments": ["x.jpg"]}]
    assert tb.edge_set(nodes) == {("Image-to-Text", "Translation")}


def test_self_references_and_unknown_names_are_ignored():
    nodes = [{"task": "Translation", "arguments": ["<node-0>"]},
             {"task": "Made Up Tool", "arguments": ["<node-0>"]},
             {"task": "Text_Generation", "arguments": ["<node-0>", "<node-9>"]}]
    assert tb.node_set(nodes) == {"Translation", "Text Generation"}
    assert tb.edge_set(nodes) == {("Translation", "Text Generation")}


def test_other_reference_forms_are_literals():
    nodes = [{"task": "Image Classification", "arguments": ["example.jpg"]},
             {"task": "Text Generation", "arguments": ["Image_Classification", {"from": 0}]}]
    assert tb.edge_set(nodes) == set()


def test_gold_records_convert_to_valid_localgpt_plans_and_back():
    if not tb.DEFAULT_DATA.exists():
        missing(f"TaskBench data not found at {tb.DEFAULT_DATA}")
    records = tb.load_records(tb.DEFAULT_DATA)
    preds = {}
    for r in records:
        demo = tb.record_to_demo(r)
        if demo is not None:
            validate_plan(list(demo.plan), demo.request, demo.files, 8)
            preds[str(r["id"])] = tb.to_taskbench(str(r["id"]), list(demo.plan))
    assert len(preds) >= 250
    # the few gold records that name an output another way ("<output of X>") gain an edge as demos
    other = {str(r["id"]) for r in records if any(as_reference(a, r["task_nodes"]) != a
                                                  for n in r["task_nodes"] for a in n["arguments"])}
    assert 0 < len(other) <= 3
    converted = [r for r in records if str(r["id"]) in preds and str(r["id"]) not in other]
    m = tb.score(converted, preds)["all"]
    assert m["node_f1"] == 100.0 and m["edge_f1"] == 100.0


def test_other_reference_forms_become_references_in_demos():
    rec = {"id": 1, "user_request": "classify the table in example.jpg, write about it and answer from it",
           "task_nodes": [{"task": "Document Question Answering",
                           "arguments": ["example.jpg", "<output of Text Generation>"]},
                          {"task": "Tabular Classification", "arguments": ["example.jpg"]},
                          {"task": "Text Generation", "arguments": ["Tabular_Classification"]}]}
    demo = tb.record_to_demo(rec)
    assert demo is not None
    assert [(t["task"], t["args"]) for t in demo.plan] == [
        ("tabular-classification", {"image": "example.jpg"}), ("text-generation", {"text": "<resource>-0"}),
        ("document-question-answering", {"image": "example.jpg", "text": "<resource>-1"})]
    # a name of no node of the record, or of two, stays a literal
    nodes = [{"task": "Text Generation", "arguments": ["x"]}, {"task": "Text Generation", "arguments": ["y"]}]
    assert as_reference("<output of Text Generation>", nodes) == "<output of Text Generation>"
    assert as_reference("<output of Summarization>", nodes[:1]) == "<output of Summarization>"


def test_to_taskbench_maps_references_to_node_indices():
    plan = [{"id": 3, "task": "automatic-speech-recognition", "args": {"audio": "a.wav"}},
            {"id": 7, "task": "summarization", "args": {"text": "<resource>-3"}}]
    out = tb.to_taskbench("x", plan)
    assert out["task_nodes"] == [{"task": "Automatic Speech Recognition", "arguments": ["a.wav"]},
                                 {"task": "Summarization", "arguments": ["<node-0>"]}]


def test_offered_tasks_are_taskbench_s_or_all_of_localgpt_s():
    from localgpt import tasks

    assert [s.name for s in tb.bench_specs()] == list(tb.TB_TO_LOCAL.values())
    assert tb.bench_specs("all") == list(tasks.TASKS) and len(tasks.TASKS) > len(tb.TB_TO_LOCAL)
    # a type TaskBench does not know keeps localgpt's name, which scoring ignores as an unknown tool
    pred = tb.to_taskbench("x", [{"id": 0, "task": "text-classification", "dep": [-1], "args": {"text": "t"}}])
    assert pred["task_nodes"] == [{"task": "text-classification", "arguments": ["t"]}]
    assert tb.node_set(pred["task_nodes"]) == set()


def test_offered_tasks_can_be_those_the_demos_use_and_a_stored_run_says_which_it_offered():
    from localgpt import tasks
    from localgpt.planning.demos import Demo

    demos = [Demo("read it", (), ({"id": 0, "task": "text-to-speech", "dep": [-1], "args": {"text": "a"}},)),
             Demo("caption a.jpg", ("a.jpg",), ({"id": 0, "task": "image-to-text", "dep": [-1],
                                                 "args": {"image": "a.jpg"}},))]
    offered = tb.bench_specs("demos", demos)
    # the demos' types, in the registry's order (as LOCALGPT_PLAN_TASKS=demos offers them)
    assert [s.name for s in offered] == [s.name for s in tasks.TASKS if s.name in {"text-to-speech", "image-to-text"}]
    assert tb.stored_specs({"tasks": "demos", "offered": [s.name for s in offered]}) == offered
    # runs stored before the list was kept: what their --tasks offered; a demos run must say which
    assert tb.stored_specs({"tasks": "all"}) == list(tasks.TASKS) and tb.stored_specs({}) == tb.bench_specs()
    with pytest.raises(tb.DataError, match="do not list them"):
        tb.stored_specs({"tasks": "demos"})
    # the bank: the dev records' types are offered, and a built-in demo using another type is not shown
    own = [Demo("draw a cat", (), ({"id": 0, "task": "text-to-image", "dep": [-1], "args": {"text": "a cat"}},)),
           Demo("say hi", (), ({"id": 0, "task": "text-to-speech", "dep": [-1], "args": {"text": "hi"}},))]
    bank = [(None, own[0]), (None, own[1]), ("7", demos[0]), ("8", demos[1])]
    specs, shown = tb.offered_and_bank("demos", bank)
    assert specs == offered and shown == [(None, own[1]), ("7", demos[0]), ("8", demos[1])]
    assert tb.offered_and_bank("all", bank) == (list(tasks.TASKS), bank)


def test_tasks_of_the_demos_without_demo_records_is_a_clear_error(capsys):
    assert tb.main(["--tasks", "demos", "--demo-source", "localgpt"]) == 1
    assert "--tasks demos offers the types of the --demo-data records" in capsys.readouterr().err


def test_every_taskbench_tool_maps_to_a_registered_task():
    from localgpt import tasks

    if not tb.DEFAULT_DATA.exists():
        missing(f"TaskBench data not found at {tb.DEFAULT_DATA}")
    tools = json.loads((tb.DEFAULT_DATA.parent / "tool_desc.json").read_text())["nodes"]
    assert len(tools) == 23
    for tool in tools:
        assert tasks.is_known(tb.TB_TO_LOCAL[tool["id"]])
    assert all(tasks.is_known(t) for t in tb.TB_TO_LOCAL.values())


@pytest.mark.slow
def test_smoke_run_with_smollm2(tmp_path, real_card):
    card = real_card("smollm2-135m-instruct")
    if not tb.DEFAULT_DATA.exists():
        missing(f"TaskBench data not found at {tb.DEFAULT_DATA}")
    name = "smoke-test-taskbench"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.taskbench", "--model", str(card.file("model.gguf")),
         "--limit", "3", "--name", name, "--threads", "2", "--out-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((tmp_path / f"{name}.json").read_text())
    assert doc["metrics"]["all"]["records"] == 3
    assert doc["metrics"]["all"]["parse_rate"] == 100.0  # constrained decoding always parses
    lines = (tmp_path / f"{name}.predictions.jsonl").read_text().splitlines()
    assert len(lines) == 3 and all("task_nodes" in json.loads(x) for x in lines)
    assert "node_f1" in proc.stdout
    again = subprocess.run(proc.args + ["--resume"], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert again.returncode == 0 and "resuming: 3 record(s)" in again.stderr
    assert "[1/3]" not in again.stderr  # nothing planned twice
    assert json.loads((tmp_path / f"{name}.json").read_text())["metrics"] == doc["metrics"]
    assert doc["failed"] == []
    assert doc["settings"]["n_gpu_layers"] == 0  # the CPU unless asked
    # a record the LLM itself fails on (here its prompt cannot fit a 512-token context) is kept as an
    # empty plan with the reason, and the run goes on to the next one; a CPU build of llama.cpp takes
    # --n-gpu-layers and ignores it
    small = subprocess.run(
        [sys.executable, "-m", "bench.taskbench", "--model", str(card.file("model.gguf")),
         "--limit", "2", "--name", "small", "--n-ctx", "512", "--n-gpu-layers", "-1", "--out-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=REPO)
    assert small.returncode == 0, small.stderr[-2000:]
    assert small.stderr.count(" ERR ") == 2 and "2 record(s) got no reply from the LLM" in small.stderr
    failed = json.loads((tmp_path / "small.json").read_text())
    assert len(failed["failed"]) == 2 and failed["metrics"]["all"]["node_f1"] == 0.0
    assert failed["settings"]["n_gpu_layers"] == -1
    metas = [json.loads(x) for x in (tmp_path / "small.meta.jsonl").read_text().splitlines()]
    assert all("context window" in m["error"] for m in metas)


def test_partial_run_is_read_back_without_a_cut_last_line(tmp_path):
    preds = tmp_path / "x.predictions.jsonl"
    meta = tmp_path / "x.meta.jsonl"
    preds.write_text('{"id": "1", "task_nodes": []}\n{"id": "2", "task_nodes": []}\n{"id": "3", "task_no')
    meta.write_text('{"id": "1", "parsed": true, "valid": true, "seconds": 1.0, "tokens": 5}\n')
    got_preds, got_meta = tb.load_partial(preds, meta)
    assert list(got_preds) == ["1"]  # 2 has no figures, 3 was cut by a kill
    assert got_meta == {"1": {"parsed": True, "valid": True, "seconds": 1.0, "tokens": 5}}


def test_gold_record_becomes_a_demo_with_its_steps():
    record = {"id": "7", "user_request": "Describe example.jpg, then translate it.", "type": "chain",
              "task_steps": ["Step 1: Describe the image.", "Step 2: Translate the description."],
              "task_nodes": [{"task": "Translation", "arguments": ["<node-1>"]},
                             {"task": "Image-to-Text", "arguments": ["example.jpg"]}]}
    demo = tb.record_to_demo(record)
    assert demo.steps == ("Step 1: Describe the image.", "Step 2: Translate the description.")
    assert [x["task"] for x in demo.plan] == ["image-to-text", "translation"]  # dependency order
    assert demo.plan[1]["args"]["text"] == "<resource>-0" and demo.files == ("example.jpg",)


def test_demo_retrieval_never_returns_the_record_being_planned():
    if not tb.DEFAULT_DATA.exists():
        missing(f"TaskBench data not found at {tb.DEFAULT_DATA}")
    records = tb.load_records(tb.DEFAULT_DATA)
    bank = [(str(r["id"]), d) for r in records if (d := tb.record_to_demo(r)) is not None]
    planner = Planner(FakeLLM(), specs=tb.bench_specs(), n_demos=3)  # word-overlap similarity: no model needed
    for rec in records[:80]:
        planner.demos = tb.leave_one_out(bank, rec)
        assert len(planner.demos) >= len(bank) - 1
        chosen = planner.choose_demos(rec["user_request"])
        assert len(chosen) == 3
        assert all(d.request.strip() != rec["user_request"].strip() for d in chosen)
    # with the record's own demo in the bank, word overlap would pick it first: the filter is what stops it
    rec = records[0]
    own = next(d for src, d in bank if src == str(rec["id"]))
    planner.demos = [d for _, d in bank]
    assert planner.choose_demos(rec["user_request"])[-1] is own
    # a record of another file with the same request is left out as well
    twin = dict(rec, id="elsewhere-1")
    assert own not in tb.leave_one_out(bank, twin)


def test_rescore_replays_stored_replies_through_todays_mending(tmp_path):
    request = "Translate the text in 'example.txt' into French and read it aloud."
    record = {"id": "r1", "user_request": request, "type": "chain",
              "task_nodes": [{"task": "Translation", "arguments": ["example.txt"]},
                             {"task": "Text-to-Speech", "arguments": ["<node-0>"]}]}
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps(record) + "\n")
    # the stored first reply refers to itself; say an older planner could not keep anything of it
    first = json.dumps({"steps": ["Step 1: Translate.", "Step 2: Read aloud."], "tasks": [
        {"id": 0, "task": "translation", "dep": [-1], "args": {"text": "<resource>-0"}},
        {"id": 1, "task": "text-to-speech", "dep": [0], "args": {"text": "<resource>-0"}}]})
    (tmp_path / "old.predictions.jsonl").write_text(json.dumps({"id": "r1", "task_nodes": []}) + "\n")
    (tmp_path / "old.meta.jsonl").write_text(json.dumps(
        {"id": "r1", "parsed": True, "valid": False, "salvaged": False, "seconds": 3.0, "raw": [first, first]}) + "\n")
    doc = tb.rescore("old", data, tmp_path)
    assert doc["changed"] == ["r1"]
    assert doc["metrics"]["all"]["node_f1"] == 100.0 and doc["metrics"]["all"]["edge_f1"] == 100.0
    assert doc["metrics"]["all"]["valid_rate"] == 100.0 and doc["metrics"]["all"]["salvaged_rate"] == 100.0
    lines = (tmp_path / "old-rescored.predictions.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["task_nodes"][0] == {"task": "Translation", "arguments": ["example.txt"]}
    # a run that sampled plans cannot be replayed
    (tmp_path / "old.json").write_text(json.dumps({"settings": {"samples": 2}}))
    with pytest.raises(SystemExit, match="cannot be replayed"):
        tb.rescore("old", data, tmp_path)


def test_gold_question_answering_keeps_its_question_and_context_apart():
    # TaskBench writes the context first: as a demo, the question must still land in "question"
    record = {"id": "8", "user_request": "Describe example.jpg and answer 'What colour is the car?'", "type": "chain",
              "task_nodes": [{"task": "Image-to-Text", "arguments": ["example.jpg"]},
                             {"task": "Question Answering", "arguments": ["<node-0>", "What colour is the car?"]}]}
    qa = tb.record_to_demo(record).plan[1]
    assert qa["args"] == {"question": "What colour is the car?", "context": "<resource>-0"}
    # written question first, it stays where it is
    record["task_nodes"][1]["arguments"] = ["When was it built?", "The bridge was built in 1932."]
    qa = tb.record_to_demo(record).plan[1]
    assert qa["args"] == {"question": "When was it built?", "context": "The bridge was built in 1932."}


def test_files_named_by_the_request_are_given_to_the_planner_only_when_asked():
    request = "Transcribe 'example.wav', then compare it with example.txt and example.wav."
    assert tb.request_files(request, "named") == ["example.wav", "example.txt"]
    assert tb.request_files(request, "none") == []
    assert tb.request_files(request, "unnamed") == []  # it names its files


def test_a_users_own_unnamed_file_is_attached_under_taskbenchs_name():
    """'I have an image of a room' names no file: the default mode attaches example.jpg, as a user of
    `localgpt run --file` would attach theirs; and the planner then accepts a plan that takes it."""
    request = "I have an image of a room with chairs. Please edit the image to have blue walls."
    assert tb.request_files(request, "unnamed") == ["example.jpg"]
    assert tb.request_files(request, "none") == []
    assert tb.request_files("Here is my recording and my photo; transcribe the recording.",
                            "unnamed") == ["example.wav", "example.jpg"]
    # a named file of that kind, or an image the request asks to be made, attaches nothing
    assert tb.request_files("I have an image 'cat.png'; classify it.", "unnamed") == []
    assert tb.request_files("Create an image of a cat, then describe this image.", "unnamed") == []
    plan = [{"id": 0, "task": "image-editing", "dep": [-1], "args": {"image": "example.jpg", "text": "blue walls"}}]
    with pytest.raises(PlanError, match="did not give"):
        validate_plan(plan, request, tb.request_files(request, "none"), 8)
    assert validate_plan(plan, request, tb.request_files(request, "unnamed"), 8).tasks[0].args["image"] == "example.jpg"


def test_demo_diversity_out_of_range_is_a_clear_error(capsys):
    assert tb.main(["--demo-diversity", "1.5"]) == 1
    assert "--demo-diversity must lie between 0 and 1, not 1.5" in capsys.readouterr().err


def test_negative_type_shortlist_is_a_clear_error(capsys):
    assert tb.main(["--type-shortlist", "-3"]) == 1
    assert "--type-shortlist must be 0 (off) or a number of demos, not -3" in capsys.readouterr().err


def test_tidy_ablation_replays_the_stored_run(tmp_path: Path) -> None:
    if not tb.DEFAULT_DATA.exists():
        missing(f"TaskBench data not found at {tb.DEFAULT_DATA}")
    from bench import tidy_ablation
    out = tmp_path / "ablation.json"
    assert tidy_ablation.main(["--runs", "full-dev-positional", "--out", str(out)]) == 0
    rows = {r["configuration"]: r for r in json.loads(out.read_text())["rows"]}
    stored = json.loads((tb.RESULTS / "full-dev-positional-rescored.json").read_text())["metrics"]["all"]
    # everything on: the stored rescore; tidying off: fewer edges right
    assert rows["all of it"]["node_f1"] == stored["node_f1"] and rows["all of it"]["edge_f1"] == stored["edge_f1"]
    assert rows["no tidying at all"]["edge_f1"] < rows["all of it"]["edge_f1"]
    # record by record: tidying changes some plans, more of them for the better, on both halves
    worth = rows["no tidying at all"]["against_all"]
    assert worth["changed"] >= worth["better"] + worth["worse"] and worth["better"] > worth["worse"]
    assert sum(h["records"] for h in worth["halves"]) == 290
    assert all(h["edge_f1_gain"] > 0 for h in worth["halves"])
    assert "against_all" not in rows["all of it"]
    assert tidy_ablation.main(["--runs", "no-such-run", "--out", str(out)]) == 1
    # the sign test, by hand: 11 better against 3 worse of 14 is 2 * (1 + 14 + 91 + 364) / 2**14
    assert tidy_ablation.sign_test(11, 3) == pytest.approx(2 * 470 / 2 ** 14)
    assert tidy_ablation.sign_test(0, 0) == 1.0 and tidy_ablation.sign_test(5, 5) == 1.0


def test_a_record_file_that_cannot_be_read_is_a_clear_error_naming_its_line(tmp_path, capsys):
    good = {"id": "1", "user_request": "Caption example.jpg.", "type": "single",
            "task_nodes": [{"task": "Image-to-Text", "arguments": ["example.jpg"]}]}
    cases = {
        '{"id": "2", "user_request": "x", "task_nodes": [}': "line 2: not JSON",
        json.dumps([good]): "line 2: a record is a JSON object, not list",
        json.dumps({**good, "id": None}): "line 2: the record has no id",
        json.dumps(good): "line 2: id 1 was already used on line 1",
        json.dumps({**good, "id": "3", "user_request": "  "}): "line 2 (id 3): no user_request text",
        json.dumps({**good, "id": "4", "task_nodes": ["Image-to-Text"]}): "line 2 (id 4): task_nodes is not a list",
    }
    for line, message in cases.items():
        path = tmp_path / "bad.jsonl"
        path.write_text(json.dumps(good) + "\n" + line + "\n")
        with pytest.raises(tb.DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
            tb.load_records(path)
    # the command line says so and stops, with no traceback
    assert tb.main(["--data", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "line 2 (id 4)" in err and "Traceback" not in err


def test_a_record_without_a_type_gets_the_type_of_its_gold_graph(tmp_path):
    nodes = {
        "single": [{"task": "Image-to-Text", "arguments": ["example.jpg"]}],
        # references point forward, as TaskBench's alphabetical node order often makes them
        "chain": [{"task": "Translation", "arguments": ["<node-1>"]},
                  {"task": "Image-to-Text", "arguments": ["example.jpg"]}],
        "dag": [{"task": "Image-to-Text", "arguments": ["example.jpg"]},
                {"task": "Object Detection", "arguments": ["example.jpg"]},
                {"task": "Text Generation", "arguments": ["<node-0> <node-1>"]}],
    }
    # two tools with no reference between them are not a chain either
    nodes["dag, unlinked"] = nodes["dag"][:2]
    lines = [json.dumps({"id": str(i), "user_request": "r", "task_nodes": n}) for i, n in enumerate(nodes.values())]
    path = tmp_path / "untyped.jsonl"
    path.write_text("\ufeff" + "\n\n".join(lines) + "\n")  # a byte-order mark and blank lines are fine
    got = [r["type"] for r in tb.load_records(path)]
    assert got == ["single", "chain", "dag", "dag"]
    # where the record has task_links, they decide (TaskBench draws its type from them): here they
    # wire the two unlinked tools one after the other
    linked = {"id": "8", "user_request": "r", "task_nodes": nodes["dag, unlinked"],
              "task_links": [{"source": "Image-to-Text", "target": "Object Detection"}]}
    assert tb.graph_type(linked) == "chain"
    assert tb.graph_type({**linked, "task_links": linked["task_links"] * 2 + [
        {"source": "Object Detection", "target": "Image-to-Text"}]}) == "dag"  # a cycle is no chain
    if tb.DEFAULT_DATA.exists():  # on the dev file the type read off the graph is the type given, every time
        assert all(tb.graph_type(r) == r["type"] for r in tb.load_records(tb.DEFAULT_DATA))
    # a type the record gives is kept
    path.write_text(json.dumps({"id": "9", "user_request": "r", "task_nodes": nodes["dag"], "type": "chain"}) + "\n")
    assert tb.load_records(path)[0]["type"] == "chain"


def test_rescore_against_the_wrong_data_file_is_a_clear_error(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"id": "a", "user_request": "r", "task_nodes": []}) + "\n")
    (tmp_path / "old.predictions.jsonl").write_text(json.dumps({"id": "zz", "task_nodes": []}) + "\n")
    (tmp_path / "old.meta.jsonl").write_text(json.dumps({"id": "zz", "parsed": False, "raw": []}) + "\n")
    with pytest.raises(tb.DataError, match="planned record zz, which .*data.jsonl does not hold"):
        tb.rescore("old", data, tmp_path)
