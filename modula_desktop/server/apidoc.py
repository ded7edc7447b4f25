"""``python -m modula_desktop.server.apidoc [--markdown]``: print the admin API's OpenAPI document, or
docs/ADMIN_API.md rendered from it."""
from __future__ import annotations

import argparse
import json
import sys

from .openapi import document, markdown


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m modula_desktop.server.apidoc",
                                 description="Print the admin API's OpenAPI document (or its Markdown).")
    ap.add_argument("--markdown", action="store_true", help="docs/ADMIN_API.md instead of the JSON document")
    args = ap.parse_args(argv)
    sys.stdout.write(markdown() if args.markdown else json.dumps(document(), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
