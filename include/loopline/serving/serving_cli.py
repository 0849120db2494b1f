"""``loopline serve``: the prediction service (see ``python -m loopline.serving``)."""

from __future__ import annotations

import argparse


def cmd_serve(args: argparse.Namespace) -> int:
    from loopline.serving.__main__ import serve

    return serve(args)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from loopline.serving.__main__ import add_arguments

    p = subparsers.add_parser("serve", help="run the prediction service (POST /v1/predict)")
    add_arguments(p)
    p.set_defaults(func=cmd_serve)
