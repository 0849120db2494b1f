"""The ``loopline`` command."""

from loopline.cli.main import main

__all__ = ["main"]
