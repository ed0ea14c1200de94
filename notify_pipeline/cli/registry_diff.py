"""`notify registry diff`: what a registry change grants, for the reviewer of a merge request."""

from __future__ import annotations

import argparse
import json

from notify_pipeline.errors import ConfigError
from notify_pipeline.settings import Settings


def cmd_registry_diff(args: argparse.Namespace, settings: Settings) -> int:
    """Exit 0 when no change needs attention, 1 when one does (2: a registry does not load)."""
    from notify_pipeline.registry import load_registry
    from notify_pipeline.registry_diff import RevisionError, diff_registries, registry_at_revision

    if args.git:
        if len(args.registries) > 1:
            raise ConfigError("--git", "give at most NEW (default $NOTIFY_REGISTRY) with --git REV")
        new_dir = args.registries[0] if args.registries else settings.registry
        try:
            old = registry_at_revision(new_dir, args.git)
        except RevisionError as exc:
            raise ConfigError("--git", str(exc)) from None
    elif len(args.registries) == 2:
        old, new_dir = load_registry(args.registries[0]), args.registries[1]
    else:
        raise ConfigError("OLD NEW", "give two registry folders, or --git REV [NEW]")
    changes = diff_registries(old, load_registry(new_dir))
    attention = sum(c.attention for c in changes)
    if args.json:
        print(json.dumps({"changes": [c.as_dict() for c in changes],
                          "needs_attention": attention}, indent=2))
    else:
        for change in changes:
            print(change)
        print(f"{len(changes)} change(s), {attention} needing attention")
    return 1 if attention else 0
