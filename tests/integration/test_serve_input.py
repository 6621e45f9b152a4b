"""Bad and unusual input to a real app: refused clearly, and nothing runs or counts for it.

The app is the one ``test_serve.py`` builds (its ``serve`` fixture: the customer-service agents
behind ``add_gray_routes``, LangServe or plain FastAPI), and once a real uvicorn process on a
loopback port for what only a socket shows (a chunked body).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import test_serve
from _servers import serve_app_process
from test_serve import (  # the app under test, shared with the serving tests
    ADMIN_TOKEN,
    MODES,
    PLAN,
    QUESTION,
    SECRET,
    Served,
    sse_events,
)

from langchain_graylayer import Version
from langchain_graylayer.measuring.feedback import FeedbackSigner
from langchain_graylayer.measuring.labels import RunLabels
from langchain_graylayer.serve.inputs import MAX_ID_LENGTH

API = "/graylayer/api"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ANNOUNCING = ("X-Agent-Version", "X-User-Layer", "X-Route-Reason", "X-Run-ID", "X-Feedback-Token")


# test_serve.py's fixtures: the app builder ``serve(langserve=, store=, ..., **add_gray_routes)``,
# and the reset of sse-starlette's exit event around each test.
serve = test_serve.serve
_fresh_sse_exit_event = test_serve._fresh_sse_exit_event


def _runs_measured(app: Served) -> float:
    """Requests the router measured, under any labels."""
    return sum(
        sample.value
        for family in app.registry.collect()
        for sample in family.samples
        if sample.name == "graylayer_requests_total"
    )


def _no_announcement(response: httpx.Response) -> None:
    present = [name for name in ANNOUNCING if name in response.headers]
    assert present == [], f"{response.status_code} announces {present}"


# --------------------------------------------------------------------------- item 2: tokens
REFUSED_BODIES: dict[str, dict[str, Any]] = {
    "no input": {"config": {}},
    "input not an object": {"input": 42},
    "messages not a list": {"input": {"messages": 5}},
}


@pytest.mark.parametrize("langserve", MODES)
@pytest.mark.parametrize("endpoint", ["invoke", "stream", "batch"])
@pytest.mark.parametrize("case", REFUSED_BODIES)
def test_a_refused_request_announces_no_version_and_carries_no_token(
    serve: Callable[..., Served], langserve: bool, endpoint: str, case: str
) -> None:
    """BUG: a 422 carried ``X-Agent-Version: candidate`` and a valid feedback token."""
    app = serve(langserve=langserve, raise_server_exceptions=False)
    app.set_vip_ratio(1.0)
    user = app.user_on(Version.CANDIDATE)
    body = REFUSED_BODIES[case]
    if endpoint == "batch":
        body = {"inputs": [body["input"]]} if "input" in body else {}

    response = app.post(endpoint, user, body=body)

    assert response.status_code in (404, 422), response.text  # plain FastAPI has no batch
    _no_announcement(response)
    assert _runs_measured(app) == 0  # nothing ran


@pytest.mark.parametrize("langserve", MODES)
@pytest.mark.parametrize("endpoint", ["invoke", "stream"])
def test_the_token_of_a_run_that_ran_is_accepted_once(
    serve: Callable[..., Served], langserve: bool, endpoint: str
) -> None:
    app = serve(langserve=langserve)
    app.set_vip_ratio(1.0)

    response = app.post(endpoint, app.user_on(Version.CANDIDATE))

    assert response.status_code == 200, response.text
    run_id = response.headers["X-Run-ID"]
    if endpoint == "stream":
        events = sse_events(response.text)
        assert events[0][0] == "metadata"
        assert events[0][1]["run_id"] == run_id
    body = {"run_id": run_id, "kind": "complaint", "token": response.headers["X-Feedback-Token"]}
    first = app.client.post("/agent/feedback", json=body)
    again = app.client.post("/agent/feedback", json=body)
    assert (first.status_code, again.status_code) == (202, 409), (first.text, again.text)
    assert first.json()["version"] == "candidate"


def _complain(app: Served, run_id: str, token: str) -> httpx.Response:
    return app.client.post(
        "/agent/feedback", json={"run_id": run_id, "kind": "complaint", "token": token}
    )


def test_a_token_for_a_run_the_router_never_recorded_is_refused(
    serve: Callable[..., Served],
) -> None:
    """Signed with the app's own secret, for a run id nothing ran under: counted nowhere."""
    app = serve()
    index = app.router.feedback_recorder.index
    labels = RunLabels(PLAN.id, "candidate", "vip")
    never_ran = "01a20a4a-0000-7000-8000-00000000c0de"

    unnamed = _complain(app, never_ran, FeedbackSigner(SECRET).sign(never_ran, labels))
    named = _complain(
        app, never_ran, FeedbackSigner(SECRET).sign(never_ran, labels, recorded_by=index.id)
    )

    assert unnamed.status_code == 401, unnamed.text
    assert "not issued for a run that ran" in unnamed.json()["detail"]
    assert named.status_code == 404, named.text
    assert "not a run this router recorded" in named.json()["detail"]
    assert app.feedback_counted() == 0


def test_a_token_from_another_replica_counts_here(serve: Callable[..., Served]) -> None:
    """Two replicas share the secret and the store: feedback may land on either."""
    first = serve()
    second = serve(store=first.store)
    first.set_vip_ratio(1.0)
    served = first.post("invoke", first.user_on(Version.CANDIDATE))
    assert served.status_code == 200, served.text

    response = _complain(second, served.headers["X-Run-ID"], served.headers["X-Feedback-Token"])

    assert response.status_code == 202, response.text
    assert second.feedback_counted() == 1
    replay = _complain(first, served.headers["X-Run-ID"], served.headers["X-Feedback-Token"])
    assert replay.status_code == 409, replay.text  # one store: the token counts once


# LangServe lets these escape its validation as a 500 (found by tests/integration/test_fuzz_http.py)
LANGSERVE_500S: dict[str, tuple[str, bytes]] = {
    "config null": ("invoke", b'{"input": {"messages": []}, "config": null}'),
    "message a list": ("invoke", b'{"input": {"messages": [[null, null]]}}'),
    "batch inputs a number": ("batch", b'{"inputs": 5}'),
    "batch input not an object": ("batch", b'{"inputs": [42]}'),
    "body not UTF-8": ("invoke", b'{"input": "\xca\xfe"}'),
    "integer over 64 bits": (
        "invoke",
        b'{"input": {"messages": [{"type": "human", "content": "hi", "id": null,'
        b' "additional_kwargs": {"n": 3711180097207670931456}}]}}',
    ),
}


@pytest.mark.parametrize("case", LANGSERVE_500S)
def test_input_langserve_would_answer_with_a_500_is_a_422(
    serve: Callable[..., Served], case: str
) -> None:
    app = serve(raise_server_exceptions=False)
    endpoint, body = LANGSERVE_500S[case]

    headers = {"Content-Type": "application/json", "X-User-ID": "u"}

    response = app.client.post(f"/agent/{endpoint}", content=body, headers=headers)

    assert response.status_code == 422, response.text
    _no_announcement(response)
    assert _runs_measured(app) == 0


# --------------------------------------------------------------------------- item 8: encodings
IDS = {
    "latin": "jörg",
    "cyrillic": "дмитрий",
    "cjk": "王小明",
    "arabic": "محمد",
    "emoji": "🦊-fox",
    "mixed": "Zoë Ünal 李",
}


@pytest.mark.parametrize("langserve", MODES)
@pytest.mark.parametrize("script", IDS)
def test_an_admin_opt_out_applies_to_the_same_user_in_the_header(
    serve: Callable[..., Served], langserve: bool, script: str
) -> None:
    """BUG: headers were read as latin-1 and paths as UTF-8: jörg's opt-out was ignored."""
    app = serve(langserve=langserve)
    app.set_vip_ratio(1.0)  # without the opt-out, every vip user gets the candidate
    user = IDS[script]
    assert app.router.route(user).version is Version.CANDIDATE

    consent = app.client.post(f"{API}/consent/{user}", json={"allow_gray": False}, headers=ADMIN)
    response = app.post("invoke", headers={"X-User-ID": user.encode()})  # type: ignore[dict-item]

    assert consent.status_code == 200, consent.text
    assert consent.json()["user_id"] == user
    assert response.status_code == 200, response.text
    assert response.headers["X-Agent-Version"] == "stable"
    assert response.headers["X-Route-Reason"] == "opt_out"
    route = app.client.get(f"{API}/route/{user}", headers=ADMIN).json()
    assert route["reason"] == "opt_out"


@pytest.mark.parametrize("script", IDS)
def test_an_admin_profile_places_the_same_user_in_the_header(
    serve: Callable[..., Served], script: str
) -> None:
    app = serve()
    user = IDS[script]

    put = app.client.put(f"{API}/profiles/{user}", json={"tags": {"group": "staff"}}, headers=ADMIN)
    response = app.post("invoke", headers={"X-User-ID": user.encode()})  # type: ignore[dict-item]

    assert put.status_code == 200, put.text
    assert response.status_code == 200, response.text
    assert response.headers["X-User-Layer"] == "internal"  # the rule group == "staff"


@pytest.mark.parametrize(
    ("header", "value", "fragment"),
    [
        ("X-User-ID", ("u" * (MAX_ID_LENGTH + 1)).encode(), f"at most {MAX_ID_LENGTH}"),
        ("X-Session-ID", ("s" * 10_000).encode(), f"at most {MAX_ID_LENGTH}"),
        ("X-User-ID", ("é" * (MAX_ID_LENGTH + 1)).encode(), f"at most {MAX_ID_LENGTH}"),
    ],
)
def test_a_too_long_identity_header_is_a_400(
    serve: Callable[..., Served], header: str, value: bytes, fragment: str
) -> None:
    app = serve()

    response = app.post("invoke", "ok-user" if header != "X-User-ID" else None,
                        headers={header: value})  # type: ignore[dict-item]  # fmt: skip

    assert response.status_code == 400, response.text
    assert header in response.json()["detail"]
    assert fragment in response.json()["detail"]
    _no_announcement(response)
    assert app.router.counts()["requests"] == 0  # refused before routing


def test_the_longest_accepted_id_is_served(serve: Callable[..., Served]) -> None:
    app = serve()
    user = "é" * MAX_ID_LENGTH  # characters, not bytes

    response = app.post("invoke", headers={"X-User-ID": user.encode()})  # type: ignore[dict-item]

    assert response.status_code == 200, response.text
    assert response.headers["X-User-Layer"] == "vip"


def test_a_trusted_body_user_id_that_is_too_long_is_a_400(serve: Callable[..., Served]) -> None:
    app = serve(trust_client_user_id=True)

    response = app.post("invoke", configurable={"user_id": "u" * (MAX_ID_LENGTH + 1)})

    assert response.status_code == 400, response.text
    assert "configurable.user_id" in response.json()["detail"]
    _no_announcement(response)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/profiles/{id}", {"tags": {}}),
        ("POST", "/consent/{id}", {"allow_gray": False}),
        ("GET", "/route/{id}", None),
        ("GET", "/route/alice?session_id={id}", None),
    ],
)
def test_an_admin_id_too_long_for_any_request_is_a_400(
    serve: Callable[..., Served], method: str, path: str, body: dict[str, Any] | None
) -> None:
    """An id no header may carry could never match a request: set it and nothing applies."""
    app = serve()
    long_id = "u" * (MAX_ID_LENGTH + 1)

    response = app.client.request(method, API + path.format(id=long_id), json=body, headers=ADMIN)

    assert response.status_code == 400, response.text
    assert f"at most {MAX_ID_LENGTH}" in response.json()["detail"]
    assert app.store.get_profile(long_id) is None


# --------------------------------------------------------------------------- item 9: NaN
@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("langserve", MODES)
def test_a_non_finite_score_is_a_422_not_a_500(
    serve: Callable[..., Served], langserve: bool, number: str
) -> None:
    """BUG: FastAPI's 422 quoted the NaN, could not render it as JSON, and answered 500."""
    app = serve(langserve=langserve, raise_server_exceptions=False)
    body = f'{{"run_id": "r-1", "kind": "bad", "score": {number}, "token": "t"}}'

    response = app.client.post(
        "/agent/feedback", content=body, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "score"]
    assert app.feedback_counted() == 0


def test_nan_in_an_agent_body_is_a_422_or_runs_not_a_500(serve: Callable[..., Served]) -> None:
    app = serve(langserve=False, raise_server_exceptions=False)
    body = '{"input": NaN}'

    response = app.client.post(
        "/agent/invoke",
        content=body,
        headers={"Content-Type": "application/json", "X-User-ID": "u"},
    )

    assert response.status_code == 422, response.text


# --------------------------------------------------------------------------- item 10: sizes
def _big_question(size: int) -> dict[str, Any]:
    return {"input": {"messages": [{"type": "human", "content": "x" * size}]}}


@pytest.mark.parametrize("langserve", MODES)
@pytest.mark.parametrize("endpoint", ["invoke", "stream", "batch", "feedback"])
def test_a_body_over_the_default_limit_is_a_413_and_nothing_runs(
    serve: Callable[..., Served], langserve: bool, endpoint: str
) -> None:
    """BUG: a 5 MB message was accepted and run."""
    app = serve(langserve=langserve)
    app.set_vip_ratio(1.0)

    response = app.post(endpoint, app.user_on(Version.CANDIDATE), body=_big_question(5_000_000))

    assert response.status_code == 413, response.text
    assert response.headers["content-type"] == "application/json"
    assert "at most 1048576" in response.json()["detail"]
    _no_announcement(response)
    assert app.router.counts()["requests"] == 0  # refused before routing
    assert _runs_measured(app) == 0


@pytest.mark.parametrize("langserve", MODES)
def test_the_body_limit_is_configurable_and_holds_for_chunked_bodies(
    serve: Callable[..., Served], langserve: bool
) -> None:
    app = serve(langserve=langserve, max_body_bytes=2_000)
    small = httpx.Request("POST", "http://x", json=_big_question(100)).content
    large = httpx.Request("POST", "http://x", json=_big_question(3_000)).content

    def chunked(data: bytes) -> Iterator[bytes]:  # no Content-Length: Transfer-Encoding chunked
        yield from (data[i : i + 500] for i in range(0, len(data), 500))

    headers = {"Content-Type": "application/json", "X-User-ID": "someone"}
    fits = app.client.post("/agent/invoke", content=chunked(small), headers=headers)
    too_big = app.client.post("/agent/invoke", content=chunked(large), headers=headers)
    admin = app.client.put(f"{API}/profiles/carol", content=b"{" + b" " * 3000 + b"}",
                           headers={**ADMIN, "Content-Type": "application/json"})  # fmt: skip

    assert fits.status_code == 200, fits.text
    assert too_big.status_code == 413, too_big.text
    assert "at most 2000" in too_big.json()["detail"]
    assert admin.status_code == 413, admin.text
    assert app.store.get_profile("carol") is None


def test_a_limit_that_is_not_a_positive_number_is_refused_at_startup(
    serve: Callable[..., Served], monkeypatch: pytest.MonkeyPatch
) -> None:
    from langchain_graylayer.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="max_body_bytes"):
        serve(max_body_bytes=0)
    monkeypatch.setenv("GRAYLAYER_MAX_BODY_BYTES", "1MB")
    with pytest.raises(ConfigurationError, match="GRAYLAYER_MAX_BODY_BYTES"):
        serve()


@pytest.fixture(scope="module")
def small_limit_server() -> Iterator[str]:
    """``_serve_app.py`` under a real uvicorn, with a 4 kB body limit from the environment."""
    settings = {
        "GRAYLAYER_ADMIN_TOKEN": ADMIN_TOKEN,
        "GRAYLAYER_FEEDBACK_SECRET": SECRET.decode(),
        "GRAYLAYER_MAX_BODY_BYTES": "4096",
    }
    url, process = serve_app_process(settings, timeout=60)
    with process:
        yield url


def test_a_real_server_refuses_a_large_chunked_body_and_serves_utf8_ids(
    small_limit_server: str,
) -> None:
    """Over a socket: raw header bytes, and a chunked body without Content-Length (the
    TestClient re-encodes header values as UTF-8 and buffers bodies)."""
    url = small_limit_server

    def chunked(data: bytes) -> Iterator[bytes]:
        yield from (data[i : i + 1000] for i in range(0, len(data), 1000))

    large = httpx.Request("POST", url, json=_big_question(100_000)).content
    user = "王小明"
    with httpx.Client(base_url=url, timeout=30) as client:
        opted = client.post(f"{API}/consent/{user}", json={"allow_gray": False}, headers=ADMIN)
        json_headers = {"Content-Type": "application/json", "X-User-ID": "u"}
        too_big = client.post("/agent/invoke", content=chunked(large), headers=json_headers)
        served = client.post("/agent/invoke", json={"input": QUESTION},
                             headers={"X-User-ID": user.encode()})  # type: ignore[dict-item]  # fmt: skip

    assert opted.status_code == 200, opted.text
    assert too_big.status_code == 413, too_big.text
    assert "at most 4096" in too_big.json()["detail"]
    assert served.status_code == 200, served.text
    assert served.headers["X-Route-Reason"] == "opt_out"


@pytest.mark.parametrize(
    ("header", "value"),
    [("X-User-ID", "jörg".encode("latin-1")), ("X-Session-ID", b"\xff\xfe")],
)
def test_a_real_server_refuses_an_identity_header_that_is_not_utf8(
    small_limit_server: str, header: str, value: bytes
) -> None:
    headers = {"X-User-ID": b"ok-user", header: value}

    response = httpx.post(f"{small_limit_server}/agent/invoke", json={"input": QUESTION},
                          headers=headers, timeout=30)  # type: ignore[arg-type]  # fmt: skip

    assert response.status_code == 400, response.text
    assert (
        response.json()["detail"] == f"{header}: not valid UTF-8; send identity ids as UTF-8 bytes"
    )
    _no_announcement(response)


@pytest.mark.parametrize(
    "body",
    [
        b'{"user_value": Infinity}',
        b'{"user_value": NaN}',
        b'{"user_value": "inf"}',
        b'{"accept_score": -Infinity}',
    ],
)
def test_a_profile_with_a_number_that_is_not_finite_is_refused(
    serve: Callable[..., Served], body: bytes
) -> None:
    app = serve()
    put = app.client.put(
        f"{API}/profiles/dana", content=body, headers={**ADMIN, "Content-Type": "application/json"}
    )
    assert put.status_code == 422, put.text
    assert app.store.get_profile("dana") is None
