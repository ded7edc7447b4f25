"""The `modula` command. Offline plugin commands work on the site folder; online ones talk to the
running instance through the admin API. Errors are one line on stderr and a non-zero exit."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .. import __version__

EXIT_OK, EXIT_ERROR, EXIT_USAGE_OR_OFFLINE = 0, 1, 2


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_ERROR):
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one clear line, exit 2, no usage dump
        self.exit(EXIT_USAGE_OR_OFFLINE, f"modula: {message} (see 'modula --help')\n")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: a number from 0 to 65535") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {port}: a number from 0 to 65535")
    return port


def _site_arg(p):
    p.add_argument("--site", metavar="DIR", type=Path, help="site folder (default: your user data folder)")


def _online(p):
    _site_arg(p)
    p.add_argument("--token", metavar="T", help="admin token (default: the site's token file)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="modula", description="Modula Desktop: a desktop CMS with sandboxed Lua plugins.")
    parser.add_argument("--version", action="version", version=f"modula {__version__}")
    # `modula --site DIR` opens the window on DIR; before any command it is the site of that command
    parser.add_argument("--site", dest="top_site", metavar="DIR", type=Path, default=None,
                        help="site folder for the command (default: the site folder you are in, else your "
                             "user data folder)")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    run = sub.add_parser("run", help="open the desktop window (the default)")
    _site_arg(run)

    serve = sub.add_parser("serve", help="run the site headless: plugin runtime and HTTP server")
    _site_arg(serve)
    serve.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=None, help="port (default 8642; 0 picks a free one)")

    b = sub.add_parser("build", help="build the static site (offline)")
    _site_arg(b)
    b.add_argument("--out", metavar="DIR", type=Path, default=None, help="output folder (default: <site>/build)")
    b.add_argument("--clean", action="store_true", help="build everything again, ignoring the last build")
    b.add_argument("-v", "--verbose", action="store_true", help="list the files written and removed")

    b = sub.add_parser("publish", help="send the last build to the targets in modula.toml (offline)")
    _site_arg(b)
    b.add_argument("--target", metavar="NAME", default=None, help="one [publish.NAME] target (default: all)")
    b.add_argument("--out", metavar="DIR", type=Path, default=None, help="the build folder (default: <site>/build)")
    b.add_argument("-v", "--verbose", action="store_true", help="list every file sent and deleted")

    media = sub.add_parser("media", help="the site's media folder (offline)")
    msub = media.add_subparsers(dest="media_command", parser_class=_Parser, required=True)
    m = msub.add_parser("add", help="copy images into media/ and print their Markdown")
    _site_arg(m)
    m.add_argument("files", nargs="+", type=Path)
    m = msub.add_parser("unused", help="list media no entry or revision uses")
    _site_arg(m)
    m.add_argument("--remove", action="store_true", help="delete them")

    plugin = sub.add_parser("plugin", help="manage plugins")
    psub = plugin.add_subparsers(dest="plugin_command", parser_class=_Parser, required=True)

    p = psub.add_parser("list", help="plugins in the site (offline)")
    _site_arg(p)
    p.add_argument("--json", action="store_true")

    p = psub.add_parser("init", help="scaffold a new plugin (offline)")
    _site_arg(p)
    p.add_argument("name")
    p.add_argument("--version", dest="plugin_version", default="0.1.0")
    p.add_argument("--description", default="")
    p.add_argument("--author", default="")
    p.add_argument("--license", default="MIT")

    p = psub.add_parser("validate", help="check a plugin's syntax and manifest (offline)")
    p.add_argument("path", type=Path)

    p = psub.add_parser("test", help="run a plugin's test/*.test.lua (offline)")
    p.add_argument("path", type=Path)
    p.add_argument("--filter", default=None)
    p.add_argument("--json", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--timeout", type=float, default=None, help="seconds per test (default: the handler timeout)")

    p = psub.add_parser("info", help="state, routes, hooks, breaker, VM pool, last errors (online)")
    _online(p)
    p.add_argument("name")
    p.add_argument("--json", action="store_true")

    for name, helptext in (("reload", "blue-green reload (online)"), ("enable", "enable (online)"),
                           ("disable", "disable (online)")):
        p = psub.add_parser(name, help=helptext)
        _online(p)
        p.add_argument("name")

    for name in ("approve", "revoke"):
        p = psub.add_parser(name, help=f"{name} routes, hooks, outbound domains and content access (online)")
        _online(p)
        p.add_argument("name")
        p.add_argument("--route", action="append", default=[], metavar='"METHOD /path"')
        p.add_argument("--hook", action="append", default=[], metavar='"event:table"')
        p.add_argument("--all-routes", action="store_true")
        p.add_argument("--all-hooks", action="store_true")
        p.add_argument("--domain", action="append", default=[], metavar="DOMAIN",
                       help="an outbound domain of the request module")
        p.add_argument("--all-domains", action="store_true")
        p.add_argument("--core", nargs="?", const="all", default=None, choices=("read", "write", "all"),
                       help="content access of the core module: read, write, or (no value) all it declares")
        p.add_argument("--screen", action="append", default=[], metavar="NAME",
                       help="a screen (SPEC 3.12), by its name; repeatable")
        p.add_argument("--interface", action="append", default=[], metavar="NAME",
                       help="a field interface, by its name; repeatable")
        p.add_argument("--all-screens", action="store_true", help="every screen and field interface")
        p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    return parser


def find_site_around(start: Path) -> Path | None:
    """The site folder that start is in (itself or a parent): one holding its admin token."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / ".modula" / "token").is_file():
            return folder
    return None


def _resolve_site(args):
    """--site after the command wins, then --site before it, then the site folder the shell is in."""
    if not hasattr(args, "site"):
        if args.command is None:  # `modula` or `modula --site DIR`: the window
            args.site = None
        else:
            return  # plugin validate/test take a plugin path, not a site
    if args.site is None:
        args.site = getattr(args, "top_site", None)
    if args.site is None:
        try:
            args.site = find_site_around(Path.cwd())
        except OSError:  # the working folder was removed
            args.site = None


def _dispatch(args) -> int:
    cmd = args.command or "run"
    _resolve_site(args)
    if cmd == "run":
        from ..gui.display import display_problem

        problem = display_problem()
        if problem is not None:
            print(f"modula: {problem}", file=sys.stderr)
            return 2
        from ..gui.app import run_gui

        return run_gui(getattr(args, "site", None))
    if cmd == "serve":
        from ..server.runner import serve_forever

        return serve_forever(args.site, host=args.host, port=args.port)
    if cmd in ("build", "publish", "media"):
        from . import site_build

        return getattr(site_build, f"cmd_{cmd}")(args)
    pc = args.plugin_command
    if pc in ("list", "init", "validate", "test"):
        from . import offline

        return getattr(offline, f"cmd_{pc}")(args)
    from . import online

    return getattr(online, f"cmd_{pc}")(args)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    from ..core.errors import ModulaError

    try:
        return _dispatch(args)
    except CliError as exc:
        print(f"modula: {exc}", file=sys.stderr)
        return exc.code
    except ModulaError as exc:
        print(f"modula: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_ERROR


def gui_main() -> int:
    return main(["run"] + sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
