"""The ``graylayer`` command."""

from __future__ import annotations

from langchain_graylayer.cli.main import main

__all__ = ["main"]
