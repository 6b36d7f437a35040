"""The ``grin-ui`` command line (SPEC §10).

    grin-ui serve [--host H] [--port P]
    grin-ui run --model M --forget F [--retain F] [--holdout F] --out DIR [...]
    grin-ui teach --model M --data F --out DIR

Exit status: 0 success, 2 bad input (one line on stderr), 1 internal failure.
"""

from __future__ import annotations

import argparse
import sys

from grin_ui.errors import GrinError


def _serve(args) -> int:
    from grin_ui.ui.app import launch

    launch(host=args.host, port=args.port, model=args.model)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="grin-ui",
        description="Explore and audit machine unlearning in LLMs (GRIN masks, masked unlearning, quantization probes).",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("serve", help="start the dashboard")
    s.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    s.add_argument("--model", default="default", help="model loaded at start: default, a hub id or a directory")
    s.set_defaults(func=_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except GrinError as e:
        print(f"grin-ui: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("grin-ui: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # internal failure: keep it to one line unless debugging
        if "--debug" in sys.argv or __import__("os").environ.get("GRIN_UI_DEBUG"):
            raise
        print(f"grin-ui: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
