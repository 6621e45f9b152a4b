"""The candidate's tool calls, journaled in the store so that a rollback can list them for
compensation (the refund issued, the ticket closed)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from typing_extensions import override

from langchain_graylayer.measuring.events import tool_name
from langchain_graylayer.measuring.labels import (
    LAYER_KEY,
    PLAN_KEY,
    REQUEST_ID_KEY,
    SESSION_KEY,
    VERSION_KEY,
)
from langchain_graylayer.plan.plan import Version
from langchain_graylayer.store.protocols import JournalStore

__all__ = ["ToolCallJournal"]

logger = logging.getLogger(__name__)


class ToolCallJournal(BaseCallbackHandler):
    """Journals the candidate's tool calls into the store, for compensation after a rollback.

    Give it the store as the request path sees it
    (:func:`~langchain_graylayer.store.cached.for_requests`): a networked store's writes then
    happen on a background thread, off the request.
    """

    run_inline = True
    raise_error = False
    # Tool starts are all it reads: LangChain then skips it for every other event.
    ignore_llm = ignore_chat_model = ignore_chain = True  # (tool events obey ignore_agent)
    ignore_retriever = ignore_retry = ignore_custom_event = True

    def __init__(
        self,
        store: JournalStore,
        tools: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``tools`` limits the journal to these tool names (side effects); empty: every tool."""
        self.store = store
        self.tools = frozenset(tools)
        self.clock = clock

    @override
    def on_tool_start(
        self,
        serialized: dict[str, Any] | None,
        input_str: str,
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            meta = metadata or {}
            if meta.get(VERSION_KEY) != Version.CANDIDATE.value or PLAN_KEY not in meta:
                return
            name = tool_name(serialized, kwargs) or "unknown"
            if self.tools and name not in self.tools:
                return
            entry = json.dumps({
                "tool": name,
                "arguments": inputs if inputs is not None else input_str,
                "session": meta.get(SESSION_KEY),
                "run_id": meta.get(REQUEST_ID_KEY),
                "tool_run_id": str(run_id),
                "layer": meta.get(LAYER_KEY),
                "time": self.clock(),
            }, default=str)  # fmt: skip
            self.store.record_tool_call(str(meta[PLAN_KEY]), entry)
        except Exception:
            logger.exception("could not journal a candidate tool call")
