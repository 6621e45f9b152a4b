"""``gray_http_app`` without a LangGraph server: the app in front of Starlette's own
authentication middleware (which sets ``scope["user"]`` as the server's auth does), and the
rollback's SDK cleanup against a server that is not there.

The same app inside ``langgraph dev`` is tested in ``test_langgraph_server.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from langchain_core.runnables import RunnableLambda
from prometheus_client import CollectorRegistry
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware.authentication import AuthenticationMiddleware

from langchain_graylayer import GraylayerMetrics, GrayRouter, MemoryStore, RolloutPlan, Version
from langchain_graylayer.langgraph_server import ServerThreadCleanup, gray_http_app
from langchain_graylayer.routing.decision import RouteReason, RoutingDecision
from langchain_graylayer.routing.observer import labels_of

PLAN = RolloutPlan.from_dict(
    {"id": "p", "layers": [{"name": "everyone", "score_range": [0, 1]}],
     "default_layer": "everyone"}
)  # fmt: skip


class Bearer(AuthenticationBackend):
    """``Bearer <user>``: that user (a stand-in for the server's auth handler)."""

    async def authenticate(self, conn: Any) -> Any:
        _, _, user = conn.headers.get("authorization", "").partition(" ")
        return (AuthCredentials(["authenticated"]), SimpleUser(user)) if user else None


@pytest.fixture
def served() -> tuple[TestClient, GrayRouter[Any, Any]]:
    store = MemoryStore()
    store.set_ratio(PLAN.id, "everyone", 1.0)
    metrics = GraylayerMetrics(registry=CollectorRegistry())
    router = GrayRouter(stable=RunnableLambda(str), candidate=RunnableLambda(str), plan=PLAN,
                        store=store, metrics=metrics)  # fmt: skip
    app = gray_http_app(router, admin_token="t" * 20)

    @app.post("/threads/{thread_id}/runs/wait")
    def wait(thread_id: str) -> dict[str, str]:  # where the server's own route would be
        return {"thread_id": thread_id}

    outer = FastAPI()
    outer.mount("", app)
    outer.add_middleware(AuthenticationMiddleware, backend=Bearer())
    return TestClient(outer), router


def test_run_responses_name_the_version_of_the_authenticated_user(served: Any) -> None:
    client, _ = served
    response = client.post("/threads/t1/runs/wait", headers={"Authorization": "Bearer alice"})
    assert response.headers["x-agent-version"] == "candidate"
    assert response.headers["x-user-layer"] == "everyone"
    anonymous = client.post("/threads/t1/runs/wait")
    assert "x-agent-version" not in anonymous.headers


def test_feedback_needs_the_runs_own_user_and_counts_once(served: Any) -> None:
    client, router = served
    decision = router.route("alice", "t1")
    router.record_run("server-run-1", decision)
    assert labels_of(decision) is not None
    body = {"run_id": "server-run-1", "kind": "bad"}
    assert client.post("/graylayer/feedback", json=body).status_code == 401
    bob = {"Authorization": "Bearer bob"}
    assert client.post("/graylayer/feedback", json=body, headers=bob).status_code == 404
    alice = {"Authorization": "Bearer alice"}
    run = '"run_id": "server-run-1"'
    for bad in (f'{{{run}, "score": NaN}}', f'{{{run}, "score": Infinity}}',
                f'{{{run}, "kind": "meh"}}', f'{{{run}, "kind": "bad", "x": 1}}',
                f"{{{run}}}", '{"run_id": "%s", "kind": "bad"}' % ("r" * 65), "[1]", "{",
                '{"run_id": 7, "kind": "bad"}'):  # fmt: skip
        response = client.post("/graylayer/feedback", content=bad, headers={
            **alice, "Content-Type": "application/json"})  # fmt: skip
        assert response.status_code == 422, (bad, response.text)
    assert client.post("/graylayer/feedback", json=body, headers=alice).status_code == 202
    assert client.post("/graylayer/feedback", json=body, headers=alice).status_code == 409


def test_a_decision_not_routed_is_not_recorded(served: Any) -> None:
    _, router = served
    unrouted = RoutingDecision(PLAN.id, Version.STABLE, None, RouteReason.NO_USER_ID)
    assert router.record_run("r", unrouted) is None


def test_the_admin_sub_app_and_its_dashboard(served: Any) -> None:
    client, _ = served
    assert client.get("/graylayer/api/status").status_code == 401
    admin = {"Authorization": "Bearer " + "t" * 20}
    assert client.get("/graylayer/api/status", headers=admin).json()["plan"] == "p"
    page = client.get("/graylayer/", headers=admin)
    assert page.status_code == 200
    assert "/graylayer/api" in page.text  # the API where the sub-app is mounted


def test_thread_cleanup_reports_a_server_it_cannot_reach() -> None:
    from _servers import free_port

    hook = ServerThreadCleanup(f"http://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(RuntimeError, match="1 thread"):
        hook(["alice:t1"])
