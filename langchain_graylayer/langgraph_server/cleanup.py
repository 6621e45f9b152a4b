"""A rollback's cleanup on the LangGraph server: the candidate's threads, through the SDK.

On the server the threads live in the server's checkpointer, which only the server's API
reaches: :class:`ServerThreadCleanup` deletes each thread the candidate served
(``threads.delete``), as :class:`~langchain_graylayer.rollout.cleanup.CheckpointerCleanup` does
for a local checkpointer. Give it to the controller's ``cleanup_hooks``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_graylayer.store.protocols import split_conversation_key

__all__ = ["ServerThreadCleanup"]

logger = logging.getLogger(__name__)


class ServerThreadCleanup:
    """Deletes the candidate's threads from a LangGraph server after a rollback.

    The conversation key of a thread served by :func:`~.graph.gray_graph` is
    ``conversation_key(user_id, thread_id)``; its thread is the session part. A thread already
    gone counts as cleaned. The SDK's sync client is used: the controller runs hooks in its
    own thread, never on an event loop.

    Example:
        >>> hook = ServerThreadCleanup("http://127.0.0.1:2024",
        ...                            headers={"Authorization": "Bearer admin-token"})
        >>> hook.name
        'langgraph_server_threads'
    """

    name = "langgraph_server_threads"

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        client: Any = None,
    ) -> None:
        """``url``: the server's; ``headers``: what its auth handler accepts as an admin (the
        admin token); ``client``: an SDK sync client of your own instead."""
        self.url = url
        self.headers = dict(headers or {})
        self.timeout = timeout
        self._client = client

    def _sdk(self) -> Any:
        if self._client is None:
            from langgraph_sdk import get_sync_client

            self._client = get_sync_client(url=self.url, headers=self.headers,
                                           timeout=self.timeout)  # fmt: skip
        return self._client

    def __call__(self, session_ids: Sequence[str]) -> None:
        failed: list[str] = []
        for key in session_ids:
            thread = split_conversation_key(key)[1] if ":" in key else key
            try:
                self._sdk().threads.delete(thread)
            except Exception as exc:  # the SDK's errors, a server that is down
                status = getattr(getattr(exc, "response", None), "status_code", None)
                if status != 404:  # gone already: clean
                    failed.append(f"{thread} ({type(exc).__name__}: {status or exc})")
        if failed:
            raise RuntimeError(f"{len(failed)} thread(s) not deleted: {', '.join(failed)}")
