"""The commands that plan and run requests: run, plan, tasks, batch, serve, chat (the ``models`` commands are in
:mod:`localgpt.cli.models`, the table that joins them in :mod:`localgpt.cli.main`).

Each command is a handler ``cmd_<name>(args) -> exit status``; its options are data in the table. Everything
heavy is imported inside the handler that needs it, so ``localgpt --help`` is instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from localgpt.fileio import print_err as _err

EXAMPLE = "Say 'the quick brown fox' aloud, then transcribe the audio and tell me if the transcript matches"


class Option(NamedTuple):
    """One argparse argument as data: its flags (or name) and keywords; options sharing a ``group`` exclude
    each other."""

    flags: tuple[str, ...]
    kwargs: dict[str, Any]
    group: str | None = None


def opt(*flags: str, group: str | None = None, **kwargs: Any) -> Option:
    """An :class:`Option`: ``opt("--json", action="store_true", help=...)``."""
    return Option(flags, kwargs, group)


def add_options(parser: argparse.ArgumentParser, options: Sequence[Option]) -> None:
    """Add ``options`` to ``parser`` in order, each group of mutually exclusive ones made at its first member."""
    groups: dict[str, Any] = {}
    for option in options:
        if option.group is not None and option.group not in groups:
            groups[option.group] = parser.add_mutually_exclusive_group()
        (groups[option.group] if option.group else parser).add_argument(*option.flags, **option.kwargs)


def settings_from(args: argparse.Namespace) -> Any:
    """The settings, with the command-line options given (the shared ones and ``--runs-dir``) over the rest."""
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
    if getattr(args, "no_substitutes", None):
        overrides["substitutes"] = False
    return Settings.load(**overrides)


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


# --- the commands ---


def open_pipeline(args: argparse.Namespace, settings: Any, quiet: bool = False) -> Any:
    """The pipeline a request runs on: a running localgpt server's when one answers (unless ``--local``,
    ``--planner``, ``--store`` or ``--demos`` is given, or the command was handed a pipeline factory), else
    one loaded in this process."""
    factory = getattr(args, "pipeline_factory", None)  # tests inject a FakeLLM pipeline
    # --planner, --store and --demos describe a pipeline in this process; a server has its own
    own = any(getattr(args, name, None) for name in ("planner", "store", "demos"))
    if not getattr(args, "local", False) and factory is None and not own:
        from localgpt.cli.remote import connect

        say = (lambda _: None) if quiet else _err
        remote = connect(settings, say)
        if remote is not None:
            say(f"Using the localgpt server at {remote.url} (--local runs here instead)")
            return remote
    from localgpt.pipeline import Pipeline

    if not quiet:
        _err(f"Loading planner {settings.planner} ...")
    return (factory or Pipeline.from_settings)(settings)


def cmd_run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    pipe = open_pipeline(args, settings, quiet=args.json)
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
    settings = settings_from(args)
    pipe = open_pipeline(args, settings, quiet=True)
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


def cmd_tasks(args: argparse.Namespace) -> int:
    from localgpt import tasks as registry
    from localgpt.errors import ConfigError
    from localgpt.pipeline import controller_name
    from localgpt.store.catalog import Catalog

    settings = settings_from(args)
    # The controller serves text tasks only when it is really there; a --planner given explicitly must be.
    try:
        controller: str | None = controller_name(settings)
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
                     "produces": [k.value for k in spec.produces], "models": models,
                     "substitutes": [{"task": s.task, "gives": s.gives, "then": s.then} for s in spec.substitutes],
                     "no_substitute": spec.no_substitute or None})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        ins = ", ".join(f"{k}: {v}" for k, v in row["inputs"].items())
        served = ", ".join(row["models"]) or "none installed (see: python download_models.py --list)"
        print(f"{row['task']:30} ({ins}) -> {'+'.join(row['produces'])}\n{'':30} models: {served}")
        if row["substitutes"]:
            off = " (off)" if not settings.substitutes else ""
            subs = "; ".join(f"{s['task']}{' + ' + s['then'] if s['then'] else ''}" for s in row["substitutes"])
            print(f"{'':30} stand-in{off}: {subs}")
        elif row["no_substitute"]:
            print(f"{'':30} stand-in: none ({row['no_substitute']})")
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    from localgpt.batch.inputs import folder_items, load_plan, read_items
    from localgpt.batch.runner import run_batch
    from localgpt.errors import InputError

    settings = settings_from(args)
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

    settings = settings_from(args)
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

    settings = settings_from(args)
    pipe = open_pipeline(args, settings)
    try:
        return ChatSession(pipe, args.file).loop(sys.stdin, _err, ProgressPrinter)
    finally:
        pipe.close()
