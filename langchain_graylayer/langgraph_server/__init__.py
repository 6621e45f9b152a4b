"""The LangGraph server (``langgraph dev``, LangGraph Platform): gray release as a graph.

* :func:`gray_graph` — the router as a graph the server loads (``langgraph.json``'s ``graphs``);
* :func:`gray_http_app` — the app for ``langgraph.json``'s ``http.app``: admin API, dashboard,
  feedback by the server's run id, and the ``X-Agent-Version`` / ``X-User-Layer`` headers;
* :class:`ServerThreadCleanup` — a rollback's cleanup of the candidate's threads through the
  LangGraph SDK.

Needs the ``langgraph-server`` extra. Importing this package imports no server code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langchain_graylayer.langgraph_server.app import gray_http_app
    from langchain_graylayer.langgraph_server.cleanup import ServerThreadCleanup
    from langchain_graylayer.langgraph_server.graph import gray_graph

__all__ = ["ServerThreadCleanup", "gray_graph", "gray_http_app"]

_WHERE = {
    "gray_graph": "graph",
    "gray_http_app": "app",
    "ServerThreadCleanup": "cleanup",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
