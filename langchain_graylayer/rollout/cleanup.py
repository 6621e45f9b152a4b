"""What a rollback does beyond the ratio: move sessions, clean memory, list side effects.

After a rollback the candidate's pinned sessions are re-pinned to stable, registered
:class:`CleanupHook` s receive their conversation keys (built-ins clear LangChain chat-message
histories and delete LangGraph checkpointer threads), and a compensation report lists the
candidate's tool calls in the affected window — the refund issued, the ticket closed — for people
to review. A conversation key is ``conversation_key(user_id, session_id)``
(:mod:`langchain_graylayer.store.protocols`): pins are kept per user, and behind
``add_gray_routes`` it is also the conversation's LangGraph ``thread_id``.

The tool calls come from :class:`ToolCallJournal`, a callback handler the router attaches to
candidate requests when the plan names ``side_effect_tools``: it appends the candidate's calls of
those tools (``["*"]``: of every tool) to the store.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from langchain_graylayer.plan.plan import RolloutPlan, Version
from langchain_graylayer.store.protocols import SessionPin, Store, split_conversation_key

__all__ = [
    "ChatHistoryCleanup",
    "CheckpointerCleanup",
    "CleanupHook",
    "RollbackReport",
    "clean_up_after_rollback",
]

logger = logging.getLogger(__name__)


@runtime_checkable
class CleanupHook(Protocol):
    """Receives the conversation keys the candidate served, after a rollback
    (``split_conversation_key`` gives each one's user id and session id)."""

    name: str

    def __call__(self, session_ids: Sequence[str]) -> None: ...


class ChatHistoryCleanup:
    """Clears each session's LangChain chat-message history.

    Example:
        >>> from langchain_core.chat_history import InMemoryChatMessageHistory
        >>> histories = {"s1": InMemoryChatMessageHistory()}
        >>> histories["s1"].add_user_message("refund please")
        >>> ChatHistoryCleanup(lambda sid: histories[sid])(["alice:s1"])  # alice's session s1
        >>> histories["s1"].messages
        []
    """

    name = "chat_history"

    def __init__(self, factory: Callable[[str], Any]) -> None:
        """``factory(session_id)`` returns a ``BaseChatMessageHistory`` (the same factory you
        give ``RunnableWithMessageHistory``); it gets each conversation's session id."""
        self.factory = factory

    def __call__(self, session_ids: Sequence[str]) -> None:
        for key in session_ids:
            self.factory(_session_of(key)).clear()


class CheckpointerCleanup:
    """Deletes each conversation's thread from a LangGraph checkpointer (``delete_thread``).

    The thread is the conversation key, as ``add_gray_routes`` names threads; where your own code
    passes ``thread_id`` to the router, say how: ``thread_id=lambda user, session: session``.
    """

    name = "langgraph_checkpointer"

    def __init__(
        self, checkpointer: Any, thread_id: Callable[[str, str], str] | None = None
    ) -> None:
        self.checkpointer = checkpointer
        self.thread_id = thread_id

    def __call__(self, session_ids: Sequence[str]) -> None:
        for key in session_ids:
            thread = key
            if self.thread_id is not None and ":" in key:
                thread = self.thread_id(*split_conversation_key(key))
            self.checkpointer.delete_thread(thread)


def _session_of(key: str) -> str:
    """The session id of a conversation key (a pin stored before pins were kept per user was
    keyed by its bare session id: a key without ``:`` is one)."""
    return split_conversation_key(key)[1] if ":" in key else key


@dataclass(frozen=True, slots=True)
class RollbackReport:
    """What a rollback cleaned up, and what people should review."""

    sessions_moved: tuple[str, ...] = ()
    hooks: dict[str, str] = field(default_factory=dict)
    """Hook name → ``"ok"`` or the error it raised."""
    compensation: tuple[dict[str, Any], ...] = ()
    """The candidate's tool calls in the affected window (tool, arguments, session, run id,
    time, layer), oldest first."""

    def summary(self) -> str:
        failed = [name for name, result in self.hooks.items() if result != "ok"]
        text = (
            f"{len(self.sessions_moved)} candidate session(s) moved to stable; "
            f"{len(self.hooks) - len(failed)} cleanup hook(s) ran"
        )
        if failed:
            text += f", {len(failed)} failed ({', '.join(failed)})"
        return text + f"; {len(self.compensation)} candidate tool call(s) to review"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def clean_up_after_rollback(
    store: Store,
    plan: RolloutPlan,
    hooks: Iterable[CleanupHook],
    *,
    layers: Sequence[str] | None = None,
    since: float | None = None,
    now: float | None = None,
    heartbeat: Callable[[], object] | None = None,
) -> RollbackReport:
    """Move candidate sessions to stable, run the hooks, and build the compensation list.

    ``layers`` limits the sessions and tool calls to those layers (``None``: all); ``since``
    limits the tool calls to the affected window. A failing hook is logged and reported, and the
    others still run. ``heartbeat`` is called after each session moved and before each hook (the
    controller renews its write lock with it, at most once a second: a cleanup of many sessions
    outlasts the lock).
    """
    now = time.time() if now is None else now
    beat = heartbeat or (lambda: None)
    moved: list[str] = []
    for session_id, pin in store.pinned_sessions(plan.id, Version.CANDIDATE).items():
        if layers is not None and pin.layer not in layers:
            continue
        stable = SessionPin(Version.STABLE, pin.layer, now, pin.user_id)
        store.repin_session(plan.id, session_id, stable, plan.session_ttl)
        moved.append(session_id)
        beat()
    results: dict[str, str] = {}
    for hook in hooks:
        beat()
        name = getattr(hook, "name", type(hook).__name__)
        try:
            hook(moved)
            results[name] = "ok"
        except Exception as exc:
            logger.exception("cleanup hook %s failed", name)
            results[name] = f"{type(exc).__name__}: {exc}"
    calls = []
    for text in store.tool_calls(plan.id):
        call = json.loads(text)
        if since is not None and call.get("time", 0) < since:
            continue
        if layers is not None and call.get("layer") not in layers:
            continue
        calls.append(call)
    return RollbackReport(tuple(moved), results, tuple(calls))
