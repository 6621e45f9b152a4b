"""Serving: LangServe / FastAPI routes, version headers, signed feedback, admin API, /metrics.

``add_gray_routes(app, router, ...)`` is the one call (see :mod:`.app`).
"""

from __future__ import annotations

from langchain_graylayer.serve.app import add_gray_routes

__all__ = ["add_gray_routes"]
