"""Offline site commands: build, publish, media. They read the site folder and site.db directly."""
from __future__ import annotations

import sys
from pathlib import Path

from ..core.site import Site, default_site_dir
from .main import CliError

LISTED = 20  # paths printed before "... and N more" (--verbose prints all)


def _open(args):
    from ..core.service import SiteService

    site = Site(args.site if args.site else default_site_dir())
    if not site.db_path.is_file():
        raise CliError(f"there is no site in {site.root} (no site.db)")
    return SiteService(site)


def _paths(prefix: str, paths, verbose: bool):
    shown = paths if verbose else paths[:LISTED]
    for p in shown:
        print(f"  {prefix} {p}")
    if len(paths) > len(shown):
        print(f"  ... and {len(paths) - len(shown)} more (--verbose lists them all)")


def cmd_build(args) -> int:
    from ..core.build import build_site

    with _open(args) as service:
        service.start(hot_reload=False)  # the approved plugins' render hooks take part
        result = build_site(service, args.out, clean=args.clean)
        result.wait_for_plugins(service.settings.plugins.after_hook_timeout_ms / 1000.0)
    print(result.summary())
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.verbose:
        _paths("+", result.written, True)
        _paths("-", result.removed, True)
    return 0


def cmd_publish(args) -> int:
    from ..core.build import default_output
    from ..core.build.publish import publish

    with _open(args) as service:
        targets = service.settings.publish
        root = service.site.root
    if not targets:
        raise CliError("no publish target is configured: add a [publish.NAME] table to modula.toml "
                       "(type = \"folder\" with a path, or type = \"git\" with a remote)")
    if args.target is not None and args.target not in targets:
        raise CliError(f"there is no publish target '{args.target}' (configured: {', '.join(sorted(targets))})")
    chosen = [targets[args.target]] if args.target else [targets[n] for n in sorted(targets)]
    build_dir = Path(args.out).resolve() if args.out else default_output(root)
    for target in chosen:
        result = publish(root, build_dir, target)
        print(result.summary())
        _paths("+", result.sent, args.verbose)
        _paths("-", result.deleted, args.verbose)
    return 0


def cmd_media(args) -> int:
    from ..core.build import media

    with _open(args) as service:
        root, db = service.site.root, service.db
        if args.media_command == "add":
            for path in args.files:
                if not Path(path).is_file():
                    raise CliError(f"{path} is not a file")
                print(media.add_media(root, Path(path), alt=Path(path).stem))
            return 0
        names = media.remove_unused_media(root, db) if args.remove else media.unused_media(root, db)
    verb = "removed" if args.remove else "unused"
    for name in names:
        print(f"{verb} media/{name}")
    if not names:
        print("no unused media")
    return 0
