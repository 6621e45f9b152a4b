"""Gray release of the support agent on the LangGraph server: ``langgraph dev`` in this folder.

One module, named in ``langgraph.json`` as a module (``gray_support:...``) for the graph, the
auth handler and the http app, so the server imports it once and all three share one router.

* ``graph``: v1.8 (stable) and v2.1 (candidate: a person approves each refund, an
  ``interrupt()``), offline agents with scripted models, behind :func:`gray_graph`;
* ``auth``: bearer tokens of users (``GRAYLAYER_DEMO_USERS``, ``token=user,...``) and the admin
  token (``GRAYLAYER_ADMIN_TOKEN``); a user sees only the threads they created;
* ``app``: admin API and dashboard under ``/graylayer``, ``POST /graylayer/feedback``, and the
  ``X-Agent-Version`` / ``X-User-Layer`` headers on runs.

The store is Redis when ``GRAYLAYER_REDIS_URL`` is set (share it with ``graylayer`` commands),
else in memory. A rollback deletes the candidate's threads through the server's API
(``GRAYLAYER_SERVER_URL``, default http://127.0.0.1:2024).
"""

from __future__ import annotations

import hmac
import os
import time
from pathlib import Path
from typing import Any

from langchain.agents.middleware import HumanInTheLoopMiddleware
from langgraph_sdk import Auth

from langchain_graylayer import GrayRouter, MemoryStore, RolloutController, RolloutPlan
from langchain_graylayer.demo.agents import support_agent
from langchain_graylayer.demo.world import Order, Shop
from langchain_graylayer.langgraph_server import ServerThreadCleanup, gray_graph, gray_http_app

PLAN = RolloutPlan.from_yaml(Path(__file__).with_name("plan.yaml"))
ADMIN_TOKEN = os.environ.get("GRAYLAYER_ADMIN_TOKEN") or None
ADMIN = "graylayer:admin"

SHOP = Shop(orders={
    "O-1001": Order("O-1001", "kettle", 39.0, 4.9, "delivered", damaged=True),
    "O-1002": Order("O-1002", "lamp", 59.0, 5.9, "delivered", days_late=3),
    "O-1003": Order("O-1003", "mug", 9.0, 2.9, "shipped"),
})  # fmt: skip


def _store() -> Any:
    url = os.environ.get("GRAYLAYER_REDIS_URL")
    if not url:
        return MemoryStore()
    from langchain_graylayer import RedisStore

    return RedisStore(url)


STORE = _store()
router = GrayRouter(
    stable=support_agent("v1.8", SHOP, time.time),
    candidate=support_agent(
        "v2.1", SHOP, time.time, middleware=[HumanInTheLoopMiddleware({"issue_refund": True})]
    ),
    plan=PLAN,
    store=STORE,
)
controller = RolloutController(
    plan=PLAN,
    store=STORE,
    cleanup_hooks=[
        ServerThreadCleanup(
            os.environ.get("GRAYLAYER_SERVER_URL", "http://127.0.0.1:2024"),
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"} if ADMIN_TOKEN else None,
        )
    ],
)
graph = gray_graph(router, name="support")
app = gray_http_app(router, controller=controller, admin_token=ADMIN_TOKEN)

# ------------------------------------------------------------------ auth
USERS = dict(
    pair.split("=", 1)
    for pair in os.environ.get("GRAYLAYER_DEMO_USERS", "alice-token=alice,bob-token=bob").split(",")
    if "=" in pair
)
auth = Auth()


@auth.authenticate
async def authenticate(authorization: str | None) -> Auth.types.MinimalUserDict:
    """Users by their bearer token; the admin token (for the admin API and the rollback's
    thread cleanup) as an admin. The admin API checks the same token again itself."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() == "bearer" and ADMIN_TOKEN and hmac.compare_digest(token, ADMIN_TOKEN):
        return {"identity": "graylayer-admin", "permissions": [ADMIN]}
    user = USERS.get(token) if scheme.lower() == "bearer" else None
    if user is None:
        raise Auth.exceptions.HTTPException(status_code=401, detail="unknown user token")
    return {"identity": user, "permissions": []}


@auth.on.threads
async def own_threads(ctx: Auth.types.AuthContext, value: Any) -> Any:
    """A user creates threads as their owner and sees only those; the admin sees all."""
    if ADMIN in ctx.permissions:
        return True
    if isinstance(value, dict):
        value.setdefault("metadata", {})["owner"] = ctx.user.identity
    return {"owner": ctx.user.identity}
