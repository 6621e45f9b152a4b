"""The controller and the admin API when the store fails them (issue #15, items 3, 5, 6, 7, 9).

Real parts only: a real ``redis-server`` (the session's, emptied with FLUSHALL, or one of this
module's own that is stopped and restarted without persistence), real ``GrayRouter`` s reading
it through their ``CachedStore``, real FastAPI apps on ``TestClient``. What is checked is what an
operator would see: who is served what, what ``status`` says, what the audit log holds.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from _servers import ManagedProcess, can_ping_redis, free_port
from fastapi import FastAPI
from fastapi.testclient import TestClient
from langchain_core.runnables import RunnableLambda

from langchain_graylayer import GrayRouter, RolloutController, RolloutPlan, Version
from langchain_graylayer.errors import PlanStateError
from langchain_graylayer.rollout.state import PlanStatus
from langchain_graylayer.serve.app import add_gray_routes
from langchain_graylayer.store.redis import RedisStore

ROOT = Path(__file__).resolve().parents[2]
PLAN = RolloutPlan.from_yaml(ROOT / "examples" / "customer_service" / "plan.yaml")
TOKEN = "admin-token-of-the-tests"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
API = "/graylayer/api"
STAFF = [f"staff-{i}" for i in range(200)]
"""Users of the ``internal`` layer (the plan's rule ``group == "staff"``), whose first step is
50 %: about half of them get the candidate while the layer is open."""


def controller(store: RedisStore, holder: str) -> RolloutController:
    return RolloutController(plan=PLAN, store=store, holder=holder, lease_ttl=60)


def router(store: RedisStore) -> GrayRouter[str, str]:
    """A replica's router: its own ``CachedStore`` in front of ``store``, ratios re-read at
    every request (``ratio_refresh=0``), staff profiles in the store."""
    from langchain_graylayer import UserProfile

    for user in STAFF:
        store.put_profile(user, UserProfile(tags={"group": "staff"}))
    return GrayRouter(
        stable=RunnableLambda(lambda q: "v1"),
        candidate=RunnableLambda(lambda q: "v2"),
        plan=PLAN,
        store=store,
        ratio_refresh_interval=0.0,
    )


def served_candidate(gray: GrayRouter[str, str]) -> int:
    """How many of the staff get the candidate now, asked through the router's own run."""
    answers = [gray.invoke("hi", {"configurable": {"user_id": user}}) for user in STAFF]
    return answers.count("v2")


def actions(ctl: RolloutController) -> list[str]:
    return [entry.action.value for entry in ctl.audit()]


def flushall(url: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        client.flushall()
    finally:
        client.close()


# --------------------------------------------------------------------------- item 3: lost state
def test_a_human_rollback_survives_the_store_losing_everything(
    make_redis_store: Callable[..., RedisStore], redis_url: str
) -> None:
    """BUG (#15, 3): after a FLUSHALL the controller started the plan again: the rolled-back
    candidate served 50 % of ``internal`` six seconds later."""
    leader = controller(make_redis_store(), "replica-a")
    gray = router(make_redis_store())
    assert actions(leader) == []
    assert leader.step()[0].action == "start_layer"
    assert 60 < served_candidate(gray) < 140  # about half of the staff
    leader.rollback("wrong refund rule", operator="carol")
    assert served_candidate(gray) == 0

    flushall(redis_url)  # what a restart without persistence leaves
    gray = router(make_redis_store())  # profiles are gone too: put them back
    restored = leader.step()
    for _ in range(5):
        restored += leader.step()

    assert [entry.action.value for entry in restored] == ["restore"]
    assert "lost this plan's state" in restored[0].reason
    assert restored[0].replica == "replica-a"
    status = leader.status()
    assert status["status"] == PlanStatus.ROLLED_BACK.value
    assert status["alert"] is None  # written back: nothing is lost any more
    assert {layer["ratio"] for layer in status["layers"]} == {0.0}
    assert served_candidate(gray) == 0
    assert actions(leader) == ["restore"]  # the history before the loss is gone with Redis
    with pytest.raises(PlanStateError, match="restart"):
        leader.set_ratio("internal", 0.5, operator="mallory")


def test_a_refused_command_on_a_lost_state_still_writes_it_back(
    make_redis_store: Callable[..., RedisStore], redis_url: str
) -> None:
    ctl = controller(make_redis_store(), "replica-a")
    ctl.step()
    ctl.rollback("wrong refund rule", operator="carol")
    flushall(redis_url)

    with pytest.raises(PlanStateError, match="restart"):
        ctl.set_ratio("internal", 0.5, operator="mallory")

    assert actions(ctl) == ["restore"]
    assert ctl.status()["status"] == PlanStatus.ROLLED_BACK.value
    assert ctl.step() == []


def test_a_running_plan_whose_state_is_lost_is_held_not_restarted(
    make_redis_store: Callable[..., RedisStore], redis_url: str
) -> None:
    leader = controller(make_redis_store(), "replica-a")
    leader.step()
    leader.promote("internal", operator="dave")  # internal at 100 %, by a human
    before = leader.status()

    flushall(redis_url)
    lost = controller(make_redis_store(), "replica-a").status()  # a replica that never saw it
    held = leader.status()  # the one that did: it says so before it writes anything
    entries = [e.action.value for e in leader.step()]

    assert lost["status"] == "running"
    assert lost["alert"] is None
    assert held["alert"] is not None
    assert "lost this plan's state" in held["alert"]
    assert [layer["ratio"] for layer in held["layers"]] == [0.0] * len(PLAN.layer_names)
    assert entries == ["restore"]
    after = leader.status()
    assert after["status"] == PlanStatus.PAUSED.value  # its evidence is gone: a human decides
    assert [(layer["phase"], layer["ratio"]) for layer in after["layers"]] == [
        (layer["phase"], layer["ratio"]) for layer in before["layers"]
    ]
    assert (after["epoch"], after["version"]) == (before["epoch"], before["version"])
    assert leader.step() == []
    assert leader.step() == []
    leader.resume(operator="dave", reason="checked after the Redis incident")
    assert leader.status()["status"] == PlanStatus.RUNNING.value


def test_the_replica_that_saw_the_latest_state_wins(
    make_redis_store: Callable[..., RedisStore], redis_url: str
) -> None:
    """The leader saw the plan running; a human rolled it back through another replica; then
    the store lost everything. The leader restores what it saw (paused, at 50 %), the other
    replica finds that older than the rollback it wrote and restores the rollback."""
    leader = controller(make_redis_store(), "replica-a")
    admin = controller(make_redis_store(), "replica-b")
    gray = router(make_redis_store())
    leader.step()
    admin.rollback("customer reports", operator="carol")

    flushall(redis_url)
    gray = router(make_redis_store())
    first = leader.step()  # the lease is free again: the stale replica acts first
    assert [e.action.value for e in first] == ["restore"]
    assert leader.status()["status"] == PlanStatus.PAUSED.value
    second = admin.step()  # not the leader: it watches, finds an older state, writes its own
    assert [e.action.value for e in second] == ["restore"]

    for ctl in (leader, admin):
        assert ctl.status()["status"] == PlanStatus.ROLLED_BACK.value
    assert leader.step() == []
    assert admin.step() == []
    assert served_candidate(gray) == 0
    assert actions(leader) == ["restore", "restore"]


def test_a_plan_started_afresh_by_a_replica_that_saw_nothing_is_replaced(
    make_redis_store: Callable[..., RedisStore], redis_url: str
) -> None:
    old = controller(make_redis_store(), "replica-a")
    old.step()
    old.rollback("customer reports", operator="carol")
    old.store.release_lease(f"controller:{PLAN.id}", "replica-a")

    flushall(redis_url)
    new = controller(make_redis_store(), "replica-new")  # started after the loss
    assert [e.action.value for e in new.step()] == ["start_layer"]  # a plan, as far as it knows
    assert [e.action.value for e in old.step()] == ["restore"]  # another epoch: not ours
    assert new.step() == []
    assert old.step() == []
    assert new.status()["status"] == PlanStatus.ROLLED_BACK.value
    assert new.store.get_ratios(PLAN.id)["internal"] == 0.0


def test_a_state_key_lost_alone_is_held_from_the_audit_log_until_a_memory_overrides_it(
    make_redis_store: Callable[..., RedisStore], redis_url: str
) -> None:
    """Only the state key is gone (evicted, say): a replica that never saw the plan finds its
    audit log and holds the rollback it records; the replica that saw the state writes its own."""
    old = controller(make_redis_store(), "replica-a")
    old.step()
    old.rollback("wrong refund rule", operator="carol")
    client = redis.Redis.from_url(redis_url)
    try:
        client.delete(f"graylayer:{{{PLAN.id}}}:state", f"graylayer:lease:controller:{PLAN.id}")
    finally:
        client.close()

    new = controller(make_redis_store(), "replica-new")
    recovered = new.step()
    assert [e.action.value for e in recovered] == ["restore"]
    assert "audit log but not its state" in recovered[0].reason
    assert new.status()["status"] == PlanStatus.ROLLED_BACK.value
    assert [e.action.value for e in old.step()] == ["restore"]  # it remembers the layers too
    assert new.step() == []
    assert old.step() == []
    internal = new.status()["layers"][0]
    assert (internal["phase"], internal["ratio"]) == ("rolled_back", 0.0)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Callable[[], ManagedProcess]]:
    """A ``redis-server`` of this test on a fixed port, without persistence; calling the
    fixture's value (re)starts it, and a stopped one is restarted empty."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not found; install it with: apt-get install -y redis-server")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    args += ["no", "--dir", str(tmp_path)]
    running: list[ManagedProcess] = []

    def start() -> ManagedProcess:
        ready = functools.partial(can_ping_redis, url)
        server = ManagedProcess(args, name="redis-server", ready=ready, cwd=tmp_path)
        running.append(server.__enter__())
        server.url = url  # type: ignore[attr-defined]
        return server

    yield start
    for server in running:
        server.stop()


def test_a_real_redis_restart_without_persistence_keeps_the_rollback(
    own_redis: Callable[[], ManagedProcess],
) -> None:
    server = own_redis()
    url = server.url  # type: ignore[attr-defined]
    stores = [RedisStore(url, socket_timeout=0.5) for _ in range(3)]
    try:
        leader, admin = controller(stores[0], "replica-a"), controller(stores[1], "replica-b")
        gray = router(stores[2])
        leader.step()
        assert served_candidate(gray) > 0
        admin.rollback("wrong refund rule", operator="carol")
        assert served_candidate(gray) == 0
        assert leader.step() == []  # the leader's tick: it sees the rollback

        server.stop()
        assert leader.step() == []  # the store is down: nothing is done (and nothing raises)
        own_redis()  # the same port, empty
        router(stores[2])  # the profiles of the staff, again
        entries = leader.step() + admin.step() + leader.step() + admin.step()

        assert [e.action.value for e in entries] == ["restore"]
        for ctl in (leader, admin):
            assert ctl.status()["status"] == PlanStatus.ROLLED_BACK.value
        assert served_candidate(gray) == 0
    finally:
        for store in stores:
            store.close()


# --------------------------------------------------------------------------- item 5: one way
def test_a_ratio_written_to_the_store_is_put_back_and_audited(
    make_redis_store: Callable[..., RedisStore],
) -> None:
    """BUG (#15, 5): a ratio written to Redis directly was served with no audit entry while
    status said "pending", and the controller's first step audited it as 0.0."""
    store = make_redis_store()
    ctl = controller(store, "replica-a")
    gray = router(make_redis_store())
    store.set_ratio(PLAN.id, "internal", 0.9)  # before the controller ever ran
    store.set_ratio(PLAN.id, "vip", 0.25)

    status = ctl.status()
    vip = next(layer for layer in status["layers"] if layer["layer"] == "vip")
    assert (vip["phase"], vip["ratio"], vip["controller_ratio"], vip["moved_outside"]) == (
        "pending", 0.25, 0.0, True,
    )  # fmt: skip
    reverted = ctl.step()
    assert [(e.action.value, e.layer, e.old_ratio, e.new_ratio) for e in reverted] == [
        ("revert", "internal", 0.9, 0.0),
        ("revert", "vip", 0.25, 0.0),
    ]
    assert all("outside the controller" in e.reason for e in reverted)
    assert served_candidate(gray) == 0
    opened = ctl.step()
    assert [(e.action.value, e.old_ratio, e.new_ratio) for e in opened] == [
        ("start_layer", 0.0, 0.5)
    ]

    store.set_ratio(PLAN.id, "internal", 1.0)  # while the layer is open
    assert [(e.action.value, e.old_ratio, e.new_ratio) for e in ctl.step()] == [
        ("revert", 1.0, 0.5)
    ]
    entry = ctl.set_ratio("internal", 1.0, operator="dave", reason="staff only, go")
    assert (entry.action.value, entry.operator, entry.old_ratio, entry.new_ratio) == (
        "set_ratio", "dave", 0.5, 1.0,
    )  # fmt: skip
    assert store.get_ratio(PLAN.id, "internal") == 1.0
    assert not any(layer["moved_outside"] for layer in ctl.status()["layers"])


def test_a_ratio_written_to_the_store_after_a_rollback_is_put_back_to_zero(
    make_redis_store: Callable[..., RedisStore],
) -> None:
    store = make_redis_store()
    ctl = controller(store, "replica-a")
    ctl.step()
    ctl.rollback("wrong refund rule", operator="carol")
    store.set_ratio(PLAN.id, "internal", 0.5)

    assert [(e.action.value, e.new_ratio) for e in ctl.step()] == [("revert", 0.0)]
    assert store.get_ratio(PLAN.id, "internal") == 0.0
    assert ctl.status()["status"] == PlanStatus.ROLLED_BACK.value


# --------------------------------------------------------------------------- the admin API
def app_on(store: Any, *, with_controller: bool = True) -> TestClient:
    gray: GrayRouter[str, str] = GrayRouter(
        stable=RunnableLambda(lambda q: "v1"),
        candidate=RunnableLambda(lambda q: "v2"),
        plan=PLAN,
        store=store,
    )
    ctl = controller(store, "replica-api") if with_controller else None
    app = FastAPI()
    add_gray_routes(app, gray, controller=ctl, admin_token=TOKEN, feedback_secret=b"s" * 32)
    return TestClient(app, raise_server_exceptions=False)


def test_after_a_rollback_ratio_and_promote_are_409_until_an_audited_restart(
    make_redis_store: Callable[..., RedisStore],
) -> None:
    store = make_redis_store()
    client = app_on(store)
    post = lambda path, body: client.post(f"{API}{path}", json=body, headers=ADMIN)  # noqa: E731
    assert post("/promote", {"operator": "dave", "layer": "internal"}).status_code == 200
    rolled = post("/rollback", {"operator": "carol", "reason": "wrong refund rule"})
    assert (rolled.status_code, rolled.json()["changed"]) == (200, True)
    audited = len(store.read_audit(PLAN.id))

    refused = [
        post("/ratio", {"operator": "dave", "layer": "internal", "ratio": 0.5}),
        post("/promote", {"operator": "dave", "layer": "internal"}),
        post("/resume", {"operator": "dave"}),
    ]
    again = [
        post("/rollback", {"operator": "carol", "reason": "again"}),
        post("/pause", {"operator": "carol"}),
    ]

    assert [r.status_code for r in refused] == [409, 409, 409]
    assert all("restart" in r.json()["detail"] for r in refused)
    assert [r.status_code for r in again] == [200, 200]
    for response in again:  # idempotent: nothing written, the entry that rolled it back
        body = response.json()
        assert (body["changed"], body["status"], body["action"], body["operator"]) == (
            False, "rolled_back", "rollback", "carol",
        )  # fmt: skip
    assert len(store.read_audit(PLAN.id)) == audited
    assert set(store.get_ratios(PLAN.id).values()) == {0.0}

    restarted = post("/restart", {"operator": "carol", "reason": "fixed the refund rule"})
    assert (restarted.status_code, restarted.json()["status"]) == (200, "running")
    assert (
        post("/ratio", {"operator": "dave", "layer": "internal", "ratio": 0.5}).status_code == 200
    )
    status = client.get(f"{API}/status", headers=ADMIN).json()
    assert status["status"] == "running"
    assert status["layers"][0]["ratio"] == 0.5
    assert [entry["action"] for entry in client.get(f"{API}/audit", headers=ADMIN).json()][-2:] == [
        "restart", "set_ratio",
    ]  # fmt: skip


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_nan_and_infinity_in_a_ratio_are_a_422(
    make_redis_store: Callable[..., RedisStore], number: str
) -> None:
    """BUG (#15, 9): FastAPI's 422 echoes the input, which JSON cannot carry: a 500."""
    store = make_redis_store()
    client = app_on(store)
    body = f'{{"operator": "ops", "layer": "vip", "ratio": {number}}}'
    headers = {**ADMIN, "Content-Type": "application/json"}

    response = client.post(f"{API}/ratio", content=body, headers=headers)

    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "ratio"]
    assert store.get_ratios(PLAN.id) == {}
    assert store.read_audit(PLAN.id) == []


def test_nan_in_a_profile_is_a_422(make_redis_store: Callable[..., RedisStore]) -> None:
    store = make_redis_store()
    client = app_on(store)
    headers = {**ADMIN, "Content-Type": "application/json"}

    response = client.put(f"{API}/profiles/carol", content='{"accept_score": NaN}', headers=headers)

    assert response.status_code == 422, response.text
    assert "accept_score" in response.text
    assert store.get_profile("carol") is None


def test_with_the_redis_server_stopped_the_admin_api_answers_503(
    own_redis: Callable[[], ManagedProcess],
) -> None:
    server = own_redis()
    store = RedisStore(server.url, socket_timeout=0.3)  # type: ignore[attr-defined]
    try:
        client = app_on(store)
        assert client.get(f"{API}/status", headers=ADMIN).status_code == 200
        server.stop()

        calls = [
            client.get(f"{API}/status", headers=ADMIN),
            client.get(f"{API}/audit", headers=ADMIN),
            client.post(f"{API}/pause", json={"operator": "ops"}, headers=ADMIN),
            client.post(f"{API}/rollback", json={"operator": "ops", "reason": "r"}, headers=ADMIN),
            client.post(f"{API}/restart", json={"operator": "ops", "reason": "r"}, headers=ADMIN),
            client.post(
                f"{API}/ratio",
                json={"operator": "ops", "layer": "vip", "ratio": 0.1},
                headers=ADMIN,
            ),
        ]

        for response in calls:
            assert response.status_code == 503, (response.request.url, response.text)
            body = response.json()
            assert body["store"] == "unavailable"
            assert body["detail"].startswith("the store is unavailable")
        agent = app_on(store, with_controller=False).get(f"{API}/status", headers=ADMIN)
        assert (agent.status_code, agent.json()["store"]) == (503, "unavailable")
    finally:
        store.close()


def test_status_health_says_since_when_it_counts(
    make_redis_store: Callable[..., RedisStore],
) -> None:
    client = app_on(make_redis_store())

    health = client.get(f"{API}/status", headers=ADMIN).json()["health"]

    assert set(health) >= {"recent", "since_start", "started_at", "uptime_seconds"}
    assert health["uptime_seconds"] >= 0
    assert set(health["recent"]) == {"requests", "unrouted", "degraded", "stale", "fallback"}
    assert Version.CANDIDATE.value == "candidate"


# --------------------------------------------------------------------------- the run
def test_two_graylayer_serve_replicas_keep_a_rollback_through_a_redis_restart(
    own_redis: Callable[[], ManagedProcess],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reproduction of #15, item 3, as it was reported: two ``graylayer serve`` replicas on
    one redis-server, a human rollback, Redis restarted without persistence; six seconds later
    the old code served the rolled-back candidate to half of ``internal`` again."""
    import json
    import sys
    import time

    import httpx
    from _servers import wait_until

    from langchain_graylayer.cli.main import main

    server = own_redis()
    here = Path(__file__).parent
    plan = ROOT / "examples" / "plan.yaml"
    replicas = []
    for name in ("replica-1", "replica-2"):  # the audit names them ($GRAYLAYER_REPLICA)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        args = [sys.executable, "-m", "langchain_graylayer.cli", "serve", "--plan", str(plan),
                "--stable", "_cli_agents:stable", "--candidate", "_cli_agents:candidate",
                "--port", str(port), "--interval", "1", "--admin-token", TOKEN,
                "--redis-url", server.url]  # type: ignore[attr-defined]  # fmt: skip
        process = ManagedProcess(
            args, name=f"graylayer serve ({name})", timeout=30, cwd=here,
            ready=lambda url=url: _status_of(url) is not None,
        )  # fmt: skip
        replicas.append((url, process))
    cli = ["--token", TOKEN, "--operator", "carol"]
    try:
        for index, (_, process) in enumerate(replicas, 1):
            monkeypatch.setenv("GRAYLAYER_REPLICA", f"replica-{index}")
            process.__enter__()
        first, second = (url for url, _ in replicas)
        wait_until(lambda: _phase(first, "internal") == "active", 15, "the first layer opens")
        assert main(["rollback", "--url", second, "--reason", "wrong refunds", *cli]) == 0
        assert _status_of(first)["status"] == "rolled_back"  # type: ignore[index]
        time.sleep(1.5)  # a tick of each replica: both have seen the rollback

        server.stop()
        time.sleep(1.0)  # both replicas' ticks fail meanwhile, and change nothing
        own_redis()  # the same port, empty
        wait_until(lambda: _restored(first), 15, "a replica restores the plan's state")
        time.sleep(6.0)  # what the issue waited

        for url in (first, second):
            status = _status_of(url)
            assert status is not None
            assert status["status"] == "rolled_back", status
            assert {layer["ratio"] for layer in status["layers"]} == {0.0}
        capsys.readouterr()
        assert main(["audit", "--url", first, "--json", *cli]) == 0
        actions = [entry["action"] for entry in json.loads(capsys.readouterr().out)]
        assert "start_layer" not in actions
        assert actions.count("restore") == 1, actions
        for user in ("alice", "bob"):  # members of internal: routed without a profile
            response = httpx.post(
                f"{first}/agent/invoke", json={"input": {"question": "refund?"}},
                headers={"X-User-ID": user}, timeout=10,
            )  # fmt: skip
            assert response.headers["x-agent-version"] == "stable"
    finally:
        for _, process in replicas:
            process.stop()


def _status_of(url: str) -> dict[str, Any] | None:
    import httpx

    try:
        response = httpx.get(f"{url}{API}/status", headers=ADMIN, timeout=2)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None  # type: ignore[no-any-return]


def _phase(url: str, layer: str) -> str | None:
    status = _status_of(url)
    if status is None:
        return None
    return next(row["phase"] for row in status["layers"] if row["layer"] == layer)


def _restored(url: str) -> bool:
    import httpx

    try:
        response = httpx.get(f"{url}{API}/audit", headers=ADMIN, timeout=2)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and any(e["action"] == "restore" for e in response.json())
