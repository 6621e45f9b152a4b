"""Behind ``add_gray_routes`` a session belongs to its user: LangGraph threads and pins.

The app is the one of ``test_serve.py`` (the customer-service example's ``create_agent`` agents,
here with LangGraph checkpointers), driven over HTTP. Two users who send the same
``X-Session-ID`` each get a conversation of their own: the LangGraph ``thread_id`` is
``conversation_key(user_id, session_id)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
import test_serve
from langgraph.checkpoint.memory import InMemorySaver
from test_serve import MODES, PLAN, PREFIX, Served, answer_of, text_of

from examples.customer_service.agents import build_candidate, build_stable
from langchain_graylayer import Version
from langchain_graylayer.store.protocols import conversation_key

# test_serve.py's fixtures, registered here under these names: the app factory, and its autouse
serve_app = test_serve.serve
fresh_sse_exit_event = test_serve._fresh_sse_exit_event

FOLLOW_UP = {"input": {"messages": [{"type": "human", "content": "And where is order A-1002?"}]}}
FIRST_QUESTION = "Please refund order A-1001."


def texts(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [text_of(message) for message in response.json()["output"]["messages"]]


def checkpointed(
    serve_app: Callable[..., Served], langserve: bool, **options: Any
) -> tuple[Served, InMemorySaver]:
    saver = InMemorySaver()  # one checkpointer for both versions, as a deployment might have
    agents = (build_stable(checkpointer=saver), build_candidate(checkpointer=saver))
    return serve_app(langserve=langserve, agents=agents, **options), saver


@pytest.mark.parametrize("langserve", MODES)
def test_two_users_with_one_session_id_never_share_a_checkpointer_thread(
    serve_app: Callable[..., Served], langserve: bool
) -> None:
    app, saver = checkpointed(serve_app, langserve)

    alice = app.post("invoke", "alice", session="chat-1")
    bob = app.post("invoke", "bob", session="chat-1", body=FOLLOW_UP)
    alice_again = app.post("invoke", "alice", session="chat-1", body=FOLLOW_UP)

    assert texts(alice)[0] == FIRST_QUESTION
    assert FIRST_QUESTION not in texts(bob)  # bob starts a thread of his own
    assert texts(bob)[0] == "And where is order A-1002?"
    assert texts(alice_again)[0] == FIRST_QUESTION  # alice continues hers
    for user in ("alice", "bob"):
        thread = {"configurable": {"thread_id": conversation_key(user, "chat-1")}}
        assert saver.get_tuple(thread) is not None
    assert saver.get_tuple({"configurable": {"thread_id": "chat-1"}}) is None


@pytest.mark.parametrize("langserve", MODES)
def test_another_users_session_id_neither_serves_nor_moves_a_pinned_conversation(
    serve_app: Callable[..., Served], langserve: bool
) -> None:
    app, _ = checkpointed(serve_app, langserve)
    app.set_vip_ratio(0.5)
    alice = app.user_on(Version.CANDIDATE)
    mallory = app.user_on(Version.STABLE)
    first = app.post("invoke", mallory, session="alices-chat")  # sent first, on purpose
    app.set_vip_ratio(1.0)
    hers = app.post("invoke", alice, session="alices-chat")
    app.set_vip_ratio(0.0)  # both conversations stay where they started
    hers_again = app.post("invoke", alice, session="alices-chat", body=FOLLOW_UP)
    mallorys_again = app.post("invoke", mallory, session="alices-chat", body=FOLLOW_UP)

    assert answer_of(first).startswith(PREFIX[Version.STABLE])
    assert answer_of(hers).startswith(PREFIX[Version.CANDIDATE])
    assert answer_of(hers_again).startswith(PREFIX[Version.CANDIDATE])
    assert hers_again.headers["X-Route-Reason"] == "pinned"
    assert answer_of(mallorys_again).startswith(PREFIX[Version.STABLE])
    pin = app.store.get_pin(PLAN.id, conversation_key(alice, "alices-chat"))
    assert pin is not None
    assert (pin.user_id, pin.version) == (alice, Version.CANDIDATE)


@pytest.mark.parametrize("langserve", MODES)
def test_a_trusted_clients_thread_id_is_scoped_to_its_user_too(
    serve_app: Callable[..., Served], langserve: bool
) -> None:
    app, saver = checkpointed(serve_app, langserve, trust_client_user_id=True)
    for user in ("alice", "bob"):
        configurable = {"user_id": user, "session_id": "t-1"}
        response = app.post("invoke", configurable=configurable)
        assert texts(response)[0] == FIRST_QUESTION
        assert len(texts(response)) > 1
        thread = {"configurable": {"thread_id": conversation_key(user, "t-1")}}
        assert saver.get_tuple(thread) is not None
    assert saver.get_tuple({"configurable": {"thread_id": "t-1"}}) is None


@pytest.mark.parametrize("langserve", MODES)
@pytest.mark.parametrize("user", ["alice", None])
def test_a_checkpointed_agent_without_a_session_is_a_clear_400_not_a_500(
    serve_app: Callable[..., Served], langserve: bool, user: str | None
) -> None:
    app, saver = checkpointed(serve_app, langserve)

    response = app.post("invoke", user)

    assert response.status_code == 400, response.text
    assert "X-Session-ID" in response.json()["detail"]
    assert "X-Agent-Version" not in response.headers  # nothing ran
    assert list(saver.list(None)) == []
    assert texts(app.post("invoke", user, session="chat-1"))[0] == FIRST_QUESTION
