"""A rollback cleans the candidate's conversations kept in Redis by LangChain's own Redis
packages: ``langgraph-checkpoint-redis`` (``RedisSaver``, the agent's checkpointer) and
``langchain-redis`` (``RedisChatMessageHistory``).

Both need the RediSearch and RedisJSON modules (Redis Stack, or Redis 8 with its modules);
Debian's ``redis-server`` (7.0) has neither, and ``FT.INFO`` fails on it. So these tests run
against ``GRAYLAYER_REDIS_STACK_URL`` or a session Redis that has the modules, and are skipped
otherwise, saying why. On a plain Redis, the server deployment's cleanup (through the SDK) is
tested in ``test_langgraph_server.py`` and the in-memory hooks in ``test_controller*.py``.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest

pytest.importorskip("langgraph.checkpoint.redis", reason='pip install "langchain-graylayer[all]"')

from langchain.agents import create_agent
from langchain_core.tools import tool

from langchain_graylayer import (
    ChatHistoryCleanup,
    CheckpointerCleanup,
    GrayRouter,
    MemoryStore,
    RolloutController,
    RolloutPlan,
)
from langchain_graylayer.store.protocols import conversation_key
from langchain_graylayer.testing import ScriptedChatModel, calls_then_answers

PLAN = RolloutPlan.from_dict(
    {"id": "memory-v2", "layers": [{"name": "everyone", "score_range": [0, 1]}],
     "default_layer": "everyone"}
)  # fmt: skip


def _modules(url: str) -> set[str]:
    import redis

    client = redis.Redis.from_url(url)
    try:
        return {str(m[b"name"].decode()).lower() for m in client.module_list()}
    except redis.RedisError:
        return set()
    finally:
        client.close()


@pytest.fixture
def stack_url(redis_server: str) -> str:
    """A Redis with RediSearch and RedisJSON, emptied, or a skip that says why not."""
    url = os.environ.get("GRAYLAYER_REDIS_STACK_URL") or redis_server
    if not {"search", "rejson"} <= _modules(url):
        pytest.skip(
            "langgraph-checkpoint-redis and langchain-redis need RediSearch and RedisJSON "
            f"(Redis Stack); the Redis at {url} has neither: set GRAYLAYER_REDIS_STACK_URL"
        )
    import redis

    redis.Redis.from_url(url).flushdb()
    return url


@tool
def lookup(order_id: str) -> str:
    """Look an order up."""
    return f"order {order_id} shipped"


def test_a_rollback_deletes_the_candidates_redis_checkpoints_and_histories(stack_url: str) -> None:
    from langchain_redis import RedisChatMessageHistory
    from langgraph.checkpoint.redis import RedisSaver

    with RedisSaver.from_conn_string(stack_url) as saver:
        saver.setup()

        def version(tag: str) -> Any:
            model = ScriptedChatModel(script=calls_then_answers(["lookup"], f"[{tag}] ok"))
            return create_agent(model=model, tools=[lookup], checkpointer=saver, name=tag)

        store = MemoryStore()
        router = GrayRouter(stable=version("v1"), candidate=version("v2"), plan=PLAN, store=store)

        def history(session_id: str) -> Any:
            return RedisChatMessageHistory(session_id, redis_url=stack_url)

        threads: dict[str, str] = {}
        for user, ratio in (("cand", 1.0), ("stab", 0.0)):
            store.set_ratio(PLAN.id, "everyone", ratio)
            session = f"s-{uuid.uuid4().hex[:8]}"
            thread = conversation_key(user, session)  # as add_gray_routes names threads
            config = {"configurable": {"user_id": user, "session_id": session,
                                       "thread_id": thread}}  # fmt: skip
            router.invoke({"messages": [("user", "where is O-1?")]}, config)
            history(session).add_user_message("where is O-1?")
            threads[user] = thread
        assert saver.get_tuple({"configurable": {"thread_id": threads["cand"]}}) is not None

        controller = RolloutController(
            plan=PLAN, store=store,
            cleanup_hooks=[CheckpointerCleanup(saver), ChatHistoryCleanup(history)],
        )  # fmt: skip
        controller.act("rollback", operator="test", reason="bad v2")

        cand_session = threads["cand"].split(":", 1)[1]
        stab_session = threads["stab"].split(":", 1)[1]
        assert saver.get_tuple({"configurable": {"thread_id": threads["cand"]}}) is None
        assert history(cand_session).messages == []
        # the stable user's conversation is left alone
        assert saver.get_tuple({"configurable": {"thread_id": threads["stab"]}}) is not None
        assert [m.content for m in history(stab_session).messages] == ["where is O-1?"]
