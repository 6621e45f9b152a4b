"""``graylayer serve`` and its client commands, as an operator would use them: real processes.

One ``python -m langchain_graylayer.cli serve`` process serves the two agents of
``_cli_agents.py`` on a free loopback port with ``examples/plan.yaml`` (in-memory store, the
controller ticking once an hour, so only its first tick runs: the first layer opens). Each
client command runs at least once as a subprocess (``python -m langchain_graylayer.cli ...``),
several at a time where their order does not matter; further calls of the same command go through
``main()`` in this process, against the same server, because every subprocess pays the package's
import time (over a second). The tests read the server's state in file order; the one that pauses
and rolls back comes last.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from _servers import ManagedProcess, free_port

from langchain_graylayer.cli import local
from langchain_graylayer.cli.main import main
from langchain_graylayer.plan.plan import RolloutPlan

HERE = Path(__file__).parent
PLAN = HERE.parent.parent / "examples" / "plan.yaml"
TOKEN = "test-admin-token-0123456789"
OPERATOR = "carol"


@dataclass(frozen=True)
class Server:
    url: str
    process: ManagedProcess


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRAYLAYER_")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def _api_status(url: str) -> dict[str, Any] | None:
    request = urllib.request.Request(f"{url}/graylayer/api/status")
    request.add_header("Authorization", f"Bearer {TOKEN}")
    try:
        with urllib.request.urlopen(request, timeout=1) as response:
            data: dict[str, Any] = json.loads(response.read())
            return data
    except (OSError, ValueError):
        return None


def _first_layer_open(url: str) -> bool:
    status = _api_status(url)  # ready, and the controller's first tick is done
    return status is not None and status["layers"][0]["phase"] == "active"


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [sys.executable, "-m", "langchain_graylayer.cli", "serve", "--plan", str(PLAN),
            "--stable", "_cli_agents:stable", "--candidate", "_cli_agents:candidate",
            "--port", str(port), "--interval", "3600", "--admin-token", TOKEN]  # fmt: skip
    process = ManagedProcess(
        args, name="graylayer serve", ready=lambda: _first_layer_open(url), timeout=30, cwd=HERE
    )
    with process:
        yield Server(url, process)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "langchain_graylayer.cli", *args]


def run_all(*commands: Sequence[str]) -> list[subprocess.CompletedProcess[str]]:
    """Run the commands at the same time; their results in the same order."""
    pipes: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    processes = [
        subprocess.Popen(_cli(*command), cwd=HERE, env=_env(), **pipes) for command in commands
    ]
    results = []
    for command, process in zip(commands, processes, strict=True):
        stdout, stderr = process.communicate(timeout=60)
        results.append(subprocess.CompletedProcess(command, process.returncode, stdout, stderr))
    return results


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return run_all(command)[0]


def client(server: Server, *extra: str) -> list[str]:
    return ["--url", server.url, "--token", TOKEN, "--operator", OPERATOR, *extra]


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.args} exited {result.returncode}:\n{result.stderr}"
    return result.stdout


def failed(result: subprocess.CompletedProcess[str]) -> str:
    """The one-line error of a command that must exit 2 without a traceback."""
    assert result.returncode == 2, f"{result.args} exited {result.returncode}:\n{result.stderr}"
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    return result.stderr.strip()


def in_process(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``graylayer ARGS`` through ``main()`` here: exit code, stdout, stderr."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def invoke(server: Server, user_id: str) -> tuple[str, str, str]:
    """What the server serves ``user_id``: the version header, the layer header, the answer."""
    response = httpx.post(
        f"{server.url}/agent/invoke",
        json={"input": {"question": "Where is my refund?"}},
        headers={"X-User-ID": user_id},
        timeout=10,
    )
    response.raise_for_status()
    headers = response.headers
    return headers["x-agent-version"], headers["x-user-layer"], response.json()["output"]


# --------------------------------------------------------------------------- tests
def test_serve_says_where_everything_is(server: Server) -> None:
    output = server.process.output()
    for where in ("/agent/invoke", "/graylayer/api/status", "/graylayer/", "/metrics"):
        assert f"{server.url}{where}" in output
    assert "no admin token" not in output
    metrics = httpx.get(f"{server.url}/metrics", timeout=5, follow_redirects=True).text
    assert 'graylayer_layer_ratio{layer="internal",plan="refund-agent-v2"} 0.5' in metrics


def test_status_as_a_table_and_as_json(
    server: Server, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = ok(run("status", *client(server))).splitlines()
    assert lines[0].startswith("plan refund-agent-v2: running")
    assert [line.split()[0] for line in lines[1:3]] == ["stable", "candidate"]  # the versions
    assert lines[3].split() == ["layer", "ratio", "step", "phase", "decision", "reason"]
    rows = {line.split()[0]: line.split() for line in lines[5:] if not line.startswith("router")}
    assert list(rows) == RolloutPlan.from_yaml(PLAN).layer_names
    assert rows["internal"][1:4] == ["50%", "1/2", "active"]
    assert rows["vip"][1:4] == ["0%", "0/5", "pending"]

    monkeypatch.setenv("GRAYLAYER_ADMIN_TOKEN", TOKEN)  # the token from the environment
    code, out, err = in_process(capsys, "status", "--url", server.url, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["status"] == "running"
    assert [(x["layer"], x["ratio"], x["phase"]) for x in data["layers"][:2]] == [
        ("internal", 0.5, "active"), ("early_adopter", 0.0, "pending"),
    ]  # fmt: skip


def test_route_with_url_says_what_invoke_serves(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    set_ratio = {"operator": OPERATOR, "layer": "vip", "ratio": 0.5, "reason": "test"}
    httpx.post(
        f"{server.url}/graylayer/api/ratio", json=set_ratio,
        headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10,
    ).raise_for_status()  # fmt: skip
    users = ["alice", "bob", "u-1001", "u-1002", "u-1003", "u-1004"]
    routed = {users[0]: json.loads(ok(run("route", users[0], *client(server), "--json")))}
    for user in users[1:]:
        code, out, err = in_process(capsys, "route", user, *client(server), "--json")
        assert code == 0, err
        routed[user] = json.loads(out)
    for user, decision in routed.items():
        version, layer, answer = invoke(server, user)
        assert (decision["version"], decision["layer"]) == (version, layer), user
        assert answer.startswith("[v2]" if version == "candidate" else "[v1]"), (user, answer)
    assert {d["version"] for d in routed.values()} == {"stable", "candidate"}
    assert {d["layer"] for d in routed.values()} == {"internal", "vip"}
    _, text, _ = in_process(capsys, "route", users[0], *client(server))
    assert text.strip() == routed[users[0]]["explanation"]


def test_errors_are_one_line_and_exit_2(
    server: Server, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    serve = ["serve", "--plan", str(PLAN), "--candidate", "_cli_agents:candidate",
             "--port", str(free_port())]  # fmt: skip
    wrong, refused, not_runnable = map(failed, run_all(
        ["status", "--url", server.url, "--token", "not-the-token"],
        ["status", "--url", down, "--token", TOKEN],
        [*serve, "--stable", "_cli_agents:NOT_A_RUNNABLE"],
    ))  # fmt: skip
    assert wrong == "graylayer: error: wrong or missing admin token " + (
        "(--token or GRAYLAYER_ADMIN_TOKEN)"
    )
    assert refused == f"graylayer: error: cannot connect to {down}: connection refused " + (
        "(is `graylayer serve` running there?)"
    )
    assert not_runnable == "graylayer: error: --stable: got '_cli_agents:NOT_A_RUNNABLE'; " + (
        "expected a Runnable (a chain, an agent, a compiled graph), not int"
    )

    monkeypatch.chdir(HERE)
    monkeypatch.setattr(sys, "path", list(sys.path))  # serve puts the directory on sys.path
    monkeypatch.delenv("GRAYLAYER_ADMIN_TOKEN", raising=False)
    errors = {}
    for name, args in {
        "missing token": ["audit", "--url", server.url],
        "unknown layer": ["promote", "no-such-layer", *client(server)],
        "no module": [*serve, "--stable", "no_such_module_xyz:agent"],
        "no attribute": [*serve, "--stable", "_cli_agents:nope"],
        "no colon": [*serve, "--stable", "stable"],
    }.items():
        code, out, err = in_process(capsys, *args)
        assert (code, out, err.count("\n")) == (2, "", 1), (name, err)
        errors[name] = err.strip()
    assert errors["missing token"] == wrong
    assert errors["unknown layer"].startswith(
        "graylayer: error: layer: got 'no-such-layer'; expected one of"
    )
    assert errors["no module"].startswith(
        "graylayer: error: --stable: got 'no_such_module_xyz:agent'; expected an importable "
        "module (no module named 'no_such_module_xyz'"
    )
    assert errors["no attribute"].endswith(
        "expected an attribute of _cli_agents (Runnables in it: candidate, stable)"
    )
    assert errors["no colon"] == (
        "graylayer: error: --stable: got 'stable'; expected module:attribute, "
        "e.g. myapp.agents:support_chain"
    )


def test_pause_resume_promote_rollback_and_the_audit_log(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    paused = ok(run("pause", *client(server), "--reason", "checking a complaint"))
    assert paused.strip() == f"pause: plan refund-agent-v2 by {OPERATOR}: checking a complaint"
    _, table, _ = in_process(capsys, "status", *client(server))
    assert table.startswith("plan refund-agent-v2: paused")

    assert in_process(capsys, "resume", *client(server))[:2] == (
        0, f"resume: plan refund-agent-v2 by {OPERATOR}: resumed\n",
    )  # fmt: skip
    promote = ["promote", "internal", *client(server), "--reason", "staff are happy"]
    assert in_process(capsys, *promote)[:2] == (
        0, f"promote: layer internal 50% → 100% by {OPERATOR}: staff are happy\n",
    )  # fmt: skip
    assert invoke(server, "alice")[0] == invoke(server, "bob")[0] == "candidate"  # 100%

    with pytest.raises(SystemExit) as no_reason:  # argparse: a rollback needs a reason
        main(["rollback", *client(server)])
    assert no_reason.value.code == 2
    assert "--reason" in capsys.readouterr().err
    ok(run("rollback", *client(server), "--reason", "wrong refund amounts"))
    _, status, _ = in_process(capsys, "status", *client(server), "--json")
    data = json.loads(status)
    assert data["status"] == "rolled_back"
    assert {layer["ratio"] for layer in data["layers"]} == {0.0}
    assert invoke(server, "alice")[0] == "stable"

    lines = ok(run("audit", *client(server))).splitlines()
    assert lines[0].split() == ["time", "(UTC)", "operator", "action", "layer", "old", "→", "new",
                                "reason"]  # fmt: skip
    actions = [line.split()[3] for line in lines[2:]]
    assert actions == ["start_layer", "set_ratio", "pause", "resume", "promote", "rollback",
                       "cleanup"]  # fmt: skip
    rollback_line = lines[2 + actions.index("rollback")]
    assert OPERATOR in rollback_line
    assert "wrong refund amounts" in rollback_line
    _, audit_json, _ = in_process(capsys, "audit", *client(server), "--json", "--limit", "3")
    entries = json.loads(audit_json)
    assert [e["action"] for e in entries] == ["promote", "rollback", "cleanup"]
    assert entries[1]["operator"] == OPERATOR
    assert entries[1]["reason"] == "wrong refund amounts"
    assert entries[1]["details"]["ratios_before"]["internal"] == 1.0
    assert entries[1]["replica"]  # which replica acted, in every entry


def test_ratio_and_restart_go_through_the_controller(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    """After the rollback above: a ratio is refused until an audited restart; then a ratio set
    here is the controller's (audited with the operator, old and new value) and status shows it."""
    code, out, err = in_process(capsys, "ratio", *client(server))
    assert code == 0, err
    assert {line.split()[1] for line in out.splitlines()[2:]} == {"0%"}
    refused = in_process(capsys, "ratio", "vip", "--set", "0.25", *client(server))
    assert refused[0] == 2
    assert "rolled back" in refused[2]
    assert "restart" in refused[2]
    for again in (["rollback", "--reason", "again"], ["pause"]):  # idempotent: nothing written
        code, out, err = in_process(capsys, *again, *client(server))
        assert (code, err) == (0, "")
        assert out.startswith("nothing to do: plan refund-agent-v2 is rolled_back (since rollback:")

    assert ok(run("restart", *client(server), "--reason", "v2.1 fixes the refunds")).startswith(
        f"restart: plan refund-agent-v2 by {OPERATOR}: v2.1 fixes the refunds"
    )
    moved = ["ratio", "vip", "--set", "0.25", "--reason", "a first look", *client(server)]
    assert in_process(capsys, *moved)[:2] == (
        0, f"set_ratio: layer vip 0% → 25% by {OPERATOR}: a first look\n",
    )  # fmt: skip
    status = json.loads(in_process(capsys, "status", *client(server), "--json")[1])
    vip = next(layer for layer in status["layers"] if layer["layer"] == "vip")
    assert (vip["ratio"], vip["manual"]) == (0.25, True)
    code, out, err = in_process(capsys, "ratio", "--set", "0.5", *client(server))
    assert (code, err.strip()) == (
        2,
        "graylayer: error: --set: got 0.5; expected a LAYER to set it on",
    )


def test_route_asks_the_server_and_local_says_it_is_local(
    capsys: pytest.CaptureFixture[str],
) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    code, out, err = in_process(capsys, "route", "u1", "--url", down)
    assert (code, out) == (2, "")
    assert err.strip().startswith(f"graylayer: error: cannot connect to {down}")

    code, out, err = in_process(capsys, "route", "u1", "--local", "--plan", str(PLAN))
    assert code == 0
    assert out.startswith("stable: layer vip (no profile)")
    assert "local: plan refund-agent-v2, an empty in-memory store" in err

    unreachable = f"redis://127.0.0.1:{free_port()}/0"
    result = run("route", "u1", "--local", "--redis-url", unreachable)
    assert failed(result).startswith("graylayer: error: Redis ping of 'graylayer' failed")


def test_an_unexpected_error_is_one_line_too(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(args: Any) -> int:
        raise RuntimeError("a bug inside a command")

    monkeypatch.setattr(local, "validate", broken)
    code, out, err = in_process(capsys, "validate", str(PLAN))
    assert (code, out) == (1, "")
    assert (
        err
        == "graylayer: error: RuntimeError: a bug inside a command (--debug for the traceback)\n"
    )
    with pytest.raises(RuntimeError):
        main(["--debug", "validate", str(PLAN)])
    with pytest.raises(SystemExit):  # argparse refuses it with a usage line
        main(["quickstart", "--users", "-5"])
    assert "a whole number of users, 1 or more" in capsys.readouterr().err


def test_serve_puts_the_profiles_it_is_given(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    plan = HERE.parents[1] / "examples" / "customer_service" / "plan.yaml"
    args = [sys.executable, "-m", "langchain_graylayer.cli", "serve", "--plan", str(plan),
            "--stable", "examples.customer_service.agents:stable",
            "--candidate", "examples.customer_service.agents:candidate",
            "--profiles", "examples.customer_service.profiles:DEMO_PROFILES",
            "--port", str(port), "--interval", "3600", "--admin-token", TOKEN]  # fmt: skip
    root = HERE.parents[1]
    with ManagedProcess(args, name="graylayer serve", ready=lambda: _api_status(url) is not None,
                        timeout=30, cwd=root):  # fmt: skip
        layers = {}
        for user in ("carol", "dave", "erin", "frank"):
            request = urllib.request.Request(f"{url}/graylayer/api/route/{user}")
            request.add_header("Authorization", f"Bearer {TOKEN}")
            with urllib.request.urlopen(request, timeout=5) as response:
                layers[user] = json.loads(response.read())["layer"]
    assert layers == {"carol": "internal", "dave": "early_adopter", "erin": "vip", "frank": None}
