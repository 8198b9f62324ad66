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
    try:
        plan = pipe.plan(args.request, args.file)
    finally:
        pipe.close()
    if args.json:
        print(plan.model_dump_json(indent=2))
    else:
        for t in plan.tasks:
            deps = f" after {', '.join(map(str, t.dep))}" if t.dep else ""
            print(f"[{t.id}] {t.task}{deps}  {json.dumps(t.args, ensure_ascii=False)}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from localgpt.catalog import Catalog, format_table

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
        from localgpt.store import dry_run, install_profile

        if args.dry_run:
            total = 0
            for item in dry_run(args.profile):
                print(f"{item[0]}: {', '.join(item[1])}  ({item[2] / 1e6:.0f} MB)")
                total += item[2]
            print(f"total disk needed: {total / 1e6:.0f} MB")
            return 0
        cards = install_profile(args.profile, settings.store)
        print(f"{len(cards)} model(s) ready in {settings.store}: {', '.join(c.id for c in cards)}")
        return 0
    raise AssertionError(args.models_cmd)


def cmd_tasks(args: argparse.Namespace) -> int:
    from localgpt import tasks as registry
    from localgpt.catalog import Catalog
    from localgpt.errors import ConfigError
    from localgpt.pipeline import resolve_planner

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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``localgpt`` command."""
    def common_options(default: Any) -> argparse.ArgumentParser:
        # given before or after the command; after it, SUPPRESS keeps a value given before
        common = argparse.ArgumentParser(add_help=False)
        common.add_argument("--planner", default=default,
                            help="controller LLM: a model id from the store or a .gguf path")
        common.add_argument("--store", default=default,
                            help="model store folder (default: LOCALGPT_STORE or ./model_store)")
        common.add_argument("--threads", type=int, default=default,
                            help="CPU threads for the LLM (default: free cores)")
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
    plan.add_argument("--json", action="store_true", help="print the validated plan as JSON")
    plan.set_defaults(func=cmd_plan)

    models = sub.add_parser("models", parents=[common], help="list, verify, pull or remove installed models")
    msub = models.add_subparsers(dest="models_cmd", required=True)
    mlist = msub.add_parser("list", parents=[common], help="the installed models")
    mlist.add_argument("--json", action="store_true")
    mverify = msub.add_parser("verify", parents=[common], help="re-hash model files; non-zero exit on problems")
    mverify.add_argument("ids", nargs="*")
    mremove = msub.add_parser("remove", parents=[common], help="delete an installed model")
    mremove.add_argument("id")
    mpull = msub.add_parser("pull", parents=[common], help="install a profile of models")
    mpull.add_argument("--profile", default="starter", help="starter | test | all")
    mpull.add_argument("--dry-run", action="store_true", help="show what would be fetched and the disk needed")
    models.set_defaults(func=cmd_models)

    tasks = sub.add_parser("tasks", parents=[common], help="every task type, its inputs and installed models")
    tasks.add_argument("--json", action="store_true")
    tasks.set_defaults(func=cmd_tasks)
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


if __name__ == "__main__":
    sys.exit(main())
