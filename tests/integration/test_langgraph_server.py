"""Gray release on a real LangGraph server: ``langgraph dev`` (in-memory runtime) serving
``examples/langgraph_server`` with a RedisStore, driven with ``langgraph_sdk`` as two users.

One server for the module (started once, always terminated). The tests run in file order and
share it: the rollback comes last.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _servers import ManagedProcess, free_port, wait_until

pytest.importorskip("langgraph_api", reason='pip install "langchain-graylayer[langgraph-server]"')

from langgraph_sdk import get_sync_client

from langchain_graylayer import RolloutPlan
from langchain_graylayer.plan.bucketing import bucket

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "examples" / "langgraph_server"
PLAN = RolloutPlan.from_yaml(EXAMPLE / "plan.yaml")
ADMIN = {"Authorization": "Bearer test-admin-token-0123456789"}
TRACK = {"messages": [{"role": "user", "content": "Where is O-1003?"}]}
REFUND = {"messages": [{"role": "user", "content": "Order O-1001 is damaged."}]}
APPROVE = {"decisions": [{"type": "approve"}]}

# Two users on either side of a ratio: the one with the lower bucket gets the candidate first.
_BUCKETS = sorted((bucket(PLAN.effective_salt, name), name) for name in ("alice", "bob"))
CANDIDATE_USER, STABLE_USER = _BUCKETS[0][1], _BUCKETS[1][1]
RATIO = (_BUCKETS[0][0] + _BUCKETS[1][0] + 1) / 2 / 10_000  # between the two buckets


class Server:
    def __init__(self, url: str, process: ManagedProcess) -> None:
        self.url, self.process = url, process
        self.http = httpx.Client(base_url=url, timeout=30)

    def sdk(self, user: str) -> Any:
        return get_sync_client(url=self.url, headers=bearer(user), timeout=30)

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.request(method, f"/graylayer/api{path}", headers=ADMIN, **kwargs)

    def set_ratio(self, ratio: float) -> None:
        """Through the admin API (the controller), then until the server's router sees it."""
        body = {"operator": "test", "layer": "everyone", "ratio": ratio, "reason": "test"}
        response = self.admin("POST", "/ratio", json=body)
        assert response.status_code == 200, response.text
        want = "candidate" if ratio >= RATIO else "stable"
        wait_until(
            lambda: self.admin("GET", f"/route/{CANDIDATE_USER}").json()["version"] == want,
            5,
            f"ratio {ratio} on the server",
        )

    def metric(self, prefix: str) -> float:
        text = self.http.get("/metrics").text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(prefix))  # fmt: skip


def bearer(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {user}-token"}


@pytest.fixture(scope="module")
def server(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``langgraph dev`` on a loopback port, the example copied to a temporary folder (the
    in-memory runtime keeps its state there), a Redis database of its own."""
    folder = tmp_path_factory.mktemp("langgraph_server")
    for name in ("langgraph.json", "gray_support.py", "plan.yaml"):
        shutil.copy(EXAMPLE / name, folder / name)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    redis_url = redis_server.rsplit("/", 1)[0] + "/7"
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "GRAYLAYER_ADMIN_TOKEN": ADMIN["Authorization"].split(" ")[1],
        "GRAYLAYER_DEMO_USERS": "alice-token=alice,bob-token=bob",
        "GRAYLAYER_REDIS_URL": redis_url,
        "GRAYLAYER_SERVER_URL": url,
        "LANGSMITH_TRACING": "false",
        "LANGGRAPH_NO_VERSION_CHECK": "true",
    }
    langgraph = str(Path(sys.executable).with_name("langgraph"))
    args = [langgraph, "dev", "--host", "127.0.0.1", "--port", str(port), "--no-browser",
            "--no-reload"]  # fmt: skip

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/ok", timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False

    with ManagedProcess(args, name="langgraph dev", ready=ready, timeout=60, cwd=folder,
                        env=env) as process:  # fmt: skip
        served = Server(url, process)
        yield served
        served.http.close()
        log = process.output()
    # The server's blocking-I/O detector raises into the request path: nothing may trip it.
    assert "BlockingError" not in log, log[-3000:]


def run(server: Server, user: str, thread_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A streamed run: its run id, its first event after the metadata, and the thread's
    ``graylayer`` state afterwards."""
    payload = {"config": {"configurable": {"user_id": "someone-else"}}, **payload}
    parts = list(
        server.sdk(user).runs.stream(
            thread_id, "support", **payload, stream_mode=["custom", "updates"],
            stream_subgraphs=True,
        )
    )  # fmt: skip
    metadata = next(p.data for p in parts if p.event == "metadata")
    first = next(p for p in parts if p.event != "metadata")
    state = server.sdk(user).threads.get_state(thread_id)
    return {"run_id": metadata["run_id"], "first": (first.event, first.data), "state": state}


def test_each_user_gets_their_version_and_a_client_user_id_never_wins(server: Server) -> None:
    server.set_ratio(RATIO)
    for user, version in ((CANDIDATE_USER, "candidate"), (STABLE_USER, "stable")):
        thread = server.sdk(user).threads.create()["thread_id"]
        # The client says it is the other user: the server's authenticated user decides.
        other = STABLE_USER if user == CANDIDATE_USER else CANDIDATE_USER
        body = {"input": TRACK, "config": {"configurable": {"user_id": other}}}
        seen = run(server, user, thread, body)
        # The custom event names the version first, before any step of the agent.
        event, data = seen["first"]
        assert event == "custom"
        assert data["graylayer"]["version"] == version
        assert data["graylayer"]["layer"] == "everyone"
        assert seen["state"]["values"]["graylayer"]["version"] == version
        assert seen["state"]["values"]["graylayer"]["user_id"] == user
        answer = seen["state"]["values"]["messages"][-1]
        assert answer["response_metadata"]["model_name"] == (
            "demo-llm" if version == "candidate" else "demo-rules"
        )
        # The headers of /runs/wait name it too.
        response = server.http.post(
            f"/threads/{thread}/runs/wait", headers=bearer(user),
            json={"assistant_id": "support", "input": TRACK,
                  "config": {"configurable": {"user_id": other}}},
        )  # fmt: skip
        assert response.status_code == 200, response.text
        assert response.headers["x-agent-version"] == version
        assert response.headers["x-user-layer"] == "everyone"


def test_a_thread_stays_on_its_version_after_the_ratio_drops(server: Server) -> None:
    server.set_ratio(RATIO)
    sdk = server.sdk(CANDIDATE_USER)
    thread = sdk.threads.create()["thread_id"]
    assert run(server, CANDIDATE_USER, thread, {"input": TRACK})["state"]["values"][
        "graylayer"]["version"] == "candidate"  # fmt: skip
    server.set_ratio(0.0)
    again = run(server, CANDIDATE_USER, thread, {"input": TRACK})
    assert again["state"]["values"]["graylayer"]["version"] == "candidate"
    assert again["state"]["values"]["graylayer"]["reason"] == "pinned"
    fresh = sdk.threads.create()["thread_id"]
    assert run(server, CANDIDATE_USER, fresh, {"input": TRACK})["state"]["values"][
        "graylayer"]["version"] == "stable"  # fmt: skip


def test_an_interrupt_in_the_candidate_resumes_on_the_candidate(server: Server) -> None:
    server.set_ratio(RATIO)
    sdk = server.sdk(CANDIDATE_USER)
    thread = sdk.threads.create()["thread_id"]
    paused = run(server, CANDIDATE_USER, thread, {"input": REFUND})
    assert paused["state"]["values"]["graylayer"]["version"] == "candidate"
    assert paused["state"]["interrupts"] or any(t["interrupts"] for t in paused["state"]["tasks"])
    server.set_ratio(0.0)  # meanwhile, the candidate is closed to new conversations
    resumed = run(server, CANDIDATE_USER, thread, {"command": {"resume": APPROVE}})
    values = resumed["state"]["values"]
    assert values["graylayer"]["version"] == "candidate"
    assert values["messages"][-1]["content"] == "I have refunded EUR 39.00 for order O-1001."
    assert values["messages"][-1]["response_metadata"]["model_name"] == "demo-llm"
    # the resumed run gave the answer: feedback by its run id counts under the candidate
    body = {"run_id": resumed["run_id"], "kind": "good"}
    feedback = server.http.post("/graylayer/feedback", json=body, headers=bearer(CANDIDATE_USER))
    assert feedback.status_code == 202, feedback.text
    assert feedback.json()["version"] == "candidate"


def test_feedback_by_the_server_run_id_counts_once_and_only_for_its_user(server: Server) -> None:
    server.set_ratio(RATIO)
    thread = server.sdk(CANDIDATE_USER).threads.create()["thread_id"]
    run_id = run(server, CANDIDATE_USER, thread, {"input": TRACK})["run_id"]
    counted = 'graylayer_feedback_total{kind="bad",layer="everyone"'
    before = server.metric(counted)
    body = {"run_id": run_id, "kind": "bad"}
    other = server.http.post("/graylayer/feedback", json=body, headers=bearer(STABLE_USER))
    assert other.status_code == 404, other.text  # not their run: as unknown as a made-up id
    made_up = {**body, "run_id": "00000000-0000-0000-0000-000000000000"}
    unknown = server.http.post("/graylayer/feedback", json=made_up, headers=bearer(CANDIDATE_USER))
    assert unknown.status_code == 404
    first = server.http.post("/graylayer/feedback", json=body, headers=bearer(CANDIDATE_USER))
    assert first.status_code == 202, first.text
    assert first.json()["version"] == "candidate"
    again = server.http.post("/graylayer/feedback", json=body, headers=bearer(CANDIDATE_USER))
    assert again.status_code == 409
    assert server.metric(counted) == before + 1
    bad = server.http.post("/graylayer/feedback", json={**body, "score": 11},
                           headers=bearer(CANDIDATE_USER))  # fmt: skip
    assert bad.status_code == 422
    anonymous = server.http.post("/graylayer/feedback", json=body)
    assert anonymous.status_code in (401, 403)


def test_the_admin_api_needs_the_admin_token(server: Server) -> None:
    assert server.http.get("/graylayer/api/status", headers=bearer(CANDIDATE_USER)).status_code \
        == 401  # fmt: skip
    assert server.admin("GET", "/status").json()["plan"] == PLAN.id
    page = server.http.get("/graylayer/", headers=ADMIN)
    assert page.status_code == 200
    assert "/graylayer/api" in page.text


def test_a_rollback_moves_and_deletes_the_candidates_threads(server: Server) -> None:
    server.set_ratio(RATIO)
    candidate_thread = server.sdk(CANDIDATE_USER).threads.create()["thread_id"]
    stable_thread = server.sdk(STABLE_USER).threads.create()["thread_id"]
    run(server, CANDIDATE_USER, candidate_thread, {"input": TRACK})
    run(server, STABLE_USER, stable_thread, {"input": TRACK})
    rolled = server.admin("POST", "/rollback", json={"operator": "test", "reason": "bad v2"})
    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["status"] == "rolled_back"
    # The cleanup ran inside the rollback, through the server's API, as the admin.
    with pytest.raises(httpx.HTTPStatusError) as gone:
        server.sdk(CANDIDATE_USER).threads.get(candidate_thread)
    assert gone.value.response.status_code == 404
    assert server.sdk(STABLE_USER).threads.get(stable_thread)["thread_id"] == stable_thread
    route = server.admin("GET", f"/route/{CANDIDATE_USER}", params={"session_id": candidate_thread})
    assert route.json()["version"] == "stable"
