"""The client commands of ``graylayer``, registered by :mod:`.main`.

* ``status``, ``audit``, ``pause``, ``resume``, ``rollback``, ``promote``, ``restart``, ``ratio``
  and ``route``: talk to a running server's admin API. They use the standard library only
  (``urllib``), so the client needs no extra.

Client errors are one line and exit code 2 (through :func:`.cli.main`): the server cannot be
reached, the admin token is wrong or missing (401), or the server refused the action (its detail,
for 409, 422 and 503).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from langchain_graylayer._tables import table
from langchain_graylayer.errors import AdminAPIError, ConfigurationError

__all__ = ["DEFAULT_URL", "AdminClient", "add_client_options", "register"]

DEFAULT_URL = "http://127.0.0.1:8000"


# --------------------------------------------------------------------------- the client
class AdminClient:
    """A small client of the admin API (:mod:`~langchain_graylayer.serve.admin`), stdlib only.

    Example:
        >>> client = AdminClient("http://127.0.0.1:8000", token="s3cret")
        >>> client.get("/status")["status"]  # doctest: +SKIP
        'running'
    """

    def __init__(
        self, url: str, token: str | None, *, prefix: str = "/graylayer", timeout: float = 10.0
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError("--url", url, "the server's base URL, e.g. " + DEFAULT_URL)
        self.url = url.rstrip("/")
        prefix = prefix.strip("/")
        self.api = f"{self.url}/{prefix}/api" if prefix else f"{self.url}/api"
        self.token = token
        self.timeout = timeout

    def get(self, path: str, **query: str | int | None) -> Any:
        """``GET {api}{path}?query`` (``None`` values left out); the decoded JSON reply."""
        params = urlencode({k: v for k, v in query.items() if v is not None})
        return self._request("GET", path + (f"?{params}" if params else ""), None)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        """``POST {api}{path}`` with a JSON body; the decoded JSON reply."""
        return self._request("POST", path, body)

    def _request(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.api + path, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with (
                _waiting(f"waiting for server at {self.url}…"),
                urllib.request.urlopen(request, timeout=self.timeout) as response,
            ):
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise self._refused(exc) from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, ConnectionRefusedError):
                message = f"cannot connect to {self.url}: connection refused"
                message += " (is `graylayer serve` running there?)"
            elif isinstance(reason, TimeoutError):
                message = f"no answer from {self.url} after {self.timeout:g} s"
            else:
                message = f"cannot reach {self.url}: {reason}"
            raise AdminAPIError(message) from None
        except TimeoutError:
            raise AdminAPIError(f"no answer from {self.url} after {self.timeout:g} s") from None
        except OSError as exc:
            raise AdminAPIError(f"cannot reach {self.url}: {exc}") from None
        try:
            return json.loads(raw)
        except ValueError:
            raise AdminAPIError(f"{self.api + path} did not answer JSON") from None

    def _refused(self, exc: urllib.error.HTTPError) -> AdminAPIError:
        try:
            detail = _detail(json.loads(exc.read()).get("detail"))
        except (ValueError, AttributeError, OSError):
            detail = exc.reason
        if exc.code == 401:
            return AdminAPIError("wrong or missing admin token (--token or GRAYLAYER_ADMIN_TOKEN)")
        if exc.code == 404 and detail == "Not Found":
            return AdminAPIError(f"{exc.url}: not found (is --admin-prefix right?)")
        if exc.code in (409, 422, 503):
            return AdminAPIError(str(detail))
        return AdminAPIError(f"{exc.url}: HTTP {exc.code}: {detail}")


def _detail(detail: Any) -> str:
    """FastAPI's ``detail``: a string, or a list of validation errors."""
    if isinstance(detail, list):
        return "; ".join(
            f"{'.'.join(str(p) for p in item.get('loc', [])[1:])}: {item.get('msg')}"
            for item in detail
        )
    return str(detail)


@contextmanager
def _waiting(message: str, after: float = 1.0) -> Iterator[None]:
    """Print ``message`` on stderr only if the block is still running after ``after`` seconds."""
    timer = threading.Timer(after, lambda: print(message, file=sys.stderr, flush=True))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _client(args: argparse.Namespace) -> AdminClient:
    return AdminClient(args.url, args.token, prefix=args.admin_prefix, timeout=args.timeout)


def _operator(args: argparse.Namespace) -> str:
    if args.operator:
        return str(args.operator)
    try:
        return getpass.getuser()  # $USER when set, else the login name of the process
    except (OSError, KeyError):
        raise ConfigurationError("--operator", None, "your name (or set USER)") from None


def _percent(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio * 100:g}%"


def _clip(text: str | None, width: int = 60) -> str:
    text = text or "-"
    return text if len(text) <= width else text[: width - 1] + "…"


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


# --------------------------------------------------------------------------- client commands
def _status(args: argparse.Namespace) -> int:
    data = _client(args).get("/status")
    if args.json:
        _print_json(data)
        return 0
    leader = f" (controller leader: {data['leader']})" if data.get("leader") else ""
    print(f"plan {data.get('plan')}: {data.get('status')}{leader}")
    if data.get("alert"):
        print(f"  ALERT: {data['alert']}")
    for name, version in (data.get("versions") or {}).items():
        model = f" ({version['model_name']})" if version.get("model_name") else ""
        about = f": {version['changelog']}" if version.get("changelog") else ""
        print(f"  {name:<9} {version.get('code')}{model}{about}")
    rows = []
    for layer in data.get("layers", []):
        steps = layer.get("steps")
        step = "-" if steps is None else f"{layer.get('step', -1) + 1}/{len(steps)}"
        manual = " (manual)" if layer.get("manual") else ""
        served = _percent(layer.get("ratio"))
        if layer.get("moved_outside"):  # served, not what the controller set (reverted soon)
            served += f" (controller: {_percent(layer.get('controller_ratio'))})"
        rows.append((
            layer["layer"], served, step, layer.get("phase", "-") + manual,
            layer.get("last_action") or "-", _clip(layer.get("last_reason")),
        ))  # fmt: skip
    print(table(rows, ["layer", "ratio", "step", "phase", "decision", "reason"]))
    health = data.get("health") or {}
    recent = health.get("recent")
    if recent:
        minutes = f"{health.get('window_seconds', 300) / 60:g}"
        counts = ", ".join(f"{k} {v}" for k, v in recent.items())
        print(f"router of the replica that answered, last {minutes} min: {counts}")
    return 0


def _ratios(entry: dict[str, Any]) -> str:
    old, new = entry.get("old_ratio"), entry.get("new_ratio")
    return "-" if old is None and new is None else f"{_percent(old)} → {_percent(new)}"


def _audit(args: argparse.Namespace) -> int:
    entries = _client(args).get("/audit", limit=args.limit)
    if args.json:
        _print_json(entries)
        return 0
    rows = [
        (
            datetime.fromtimestamp(e["time"], timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
            e.get("operator"), e.get("action"), e.get("layer") or "-", _ratios(e),
            _clip(e.get("reason"), 70),
        )
        for e in entries
    ]  # fmt: skip
    print(table(rows, ["time (UTC)", "operator", "action", "layer", "old → new", "reason"]))
    return 0


def _act(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"operator": _operator(args), "reason": args.reason or ""}
    if args.command == "promote":
        body["layer"] = args.layer
    _print_entry(args, _client(args).post(f"/{args.command}", body))
    return 0


def _ratio(args: argparse.Namespace) -> int:
    """``graylayer ratio [LAYER] [--set R]``: read the served ratios, or move one through the
    controller (audited with your name; the controller will not roll that layer back on its
    own)."""
    client = _client(args)
    if args.set is None:
        layers = client.get("/status").get("layers", [])
        rows = [(row["layer"], _percent(row.get("ratio")), row.get("phase", "-"))
                for row in layers if args.layer in (None, row["layer"])]  # fmt: skip
        if args.json:
            _print_json([dict(zip(("layer", "ratio", "phase"), row, strict=True)) for row in rows])
        else:
            print(table(rows, ["layer", "ratio", "phase"]))
        return 0
    if args.layer is None:
        raise ConfigurationError("--set", args.set, "a LAYER to set it on")
    body = {"operator": _operator(args), "layer": args.layer, "ratio": args.set,
            "reason": args.reason or ""}  # fmt: skip
    _print_entry(args, client.post("/ratio", body))
    return 0


def _print_entry(args: argparse.Namespace, entry: dict[str, Any]) -> None:
    if args.json:
        _print_json(entry)
        return
    where = f"layer {entry['layer']}" if entry.get("layer") else f"plan {entry.get('plan')}"
    ratios = _ratios(entry)
    change = "" if ratios == "-" else f" {ratios}"
    done = f"{entry.get('action')}: {where}{change} by {entry.get('operator')}: {entry['reason']}"
    if entry.get("changed") is False:  # pausing a paused plan, rolling a rolled-back one back
        print(f"nothing to do: plan {entry.get('plan')} is {entry.get('status')} (since {done})")
        return
    print(done)


def _route(args: argparse.Namespace) -> int:
    """``graylayer route USER_ID``: ask the server (``--local``: compute here)."""
    if args.local:
        from langchain_graylayer.cli.local import route

        return route(args)
    data = _client(args).get(f"/route/{quote(args.user_id, safe='')}", session_id=args.session)
    if args.json:
        _print_json(data)
    else:
        print(data.get("explanation"))
    return 0


# --------------------------------------------------------------------------- registration
def add_client_options(
    parser: argparse.ArgumentParser, *, url: str | None = None, json_flag: bool = True
) -> None:
    """The options every client command takes (``url=None``: ``--url`` has no default)."""
    help_url = "the server, e.g. " + DEFAULT_URL
    if url is not None:
        help_url += " (default: $GRAYLAYER_URL or %(default)s)"
    parser.add_argument("--url", default=url, help=help_url)
    parser.add_argument(
        "--token",
        default=os.environ.get("GRAYLAYER_ADMIN_TOKEN"),
        help="admin token (default: $GRAYLAYER_ADMIN_TOKEN)",
    )
    parser.add_argument(
        "--operator", default=os.environ.get("USER"), help="your name in the audit log ($USER)"
    )
    parser.add_argument("--admin-prefix", default="/graylayer", help="default: %(default)s")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds (default: 10)")
    if json_flag:
        parser.add_argument("--json", action="store_true", help="machine-readable output")


def register(sub: Any) -> None:
    """Add the client commands to the ``graylayer`` subparsers ``sub``."""
    url = os.environ.get("GRAYLAYER_URL") or DEFAULT_URL
    status = sub.add_parser("status", help="a running server's layers: ratio, step, verdict")
    status.set_defaults(func=_status)
    audit = sub.add_parser("audit", help="a running server's audit log, oldest first")
    audit.add_argument("--limit", type=int, default=50, help="newest N entries (default: 50)")
    audit.set_defaults(func=_audit)
    route = sub.add_parser("route", help="which version a user gets, and why")
    route.add_argument("user_id")
    route.add_argument("--session", help="a session id, to see its pin")
    route.add_argument(
        "--local",
        action="store_true",
        help="compute here from --plan and --redis-url instead of asking the server",
    )
    route.add_argument("--plan", help="with --local: plan YAML (default: the four default layers)")
    route.add_argument("--plan-id", default="default", help="with --local: plan id without --plan")
    route.add_argument("--redis-url", help="with --local: live state (default: an empty store)")
    route.set_defaults(func=_route)
    ratio = sub.add_parser(
        "ratio", help="a running server's layer ratios, or move one (--set) through its controller"
    )
    ratio.add_argument("layer", nargs="?", help="one layer (default: all)")
    ratio.add_argument("--set", type=float, metavar="RATIO", help="set LAYER's ratio (audited)")
    ratio.add_argument("--reason", help="why, for the audit log")
    ratio.set_defaults(func=_ratio)
    actions = {
        "pause": "stop automatic actions (ratios stay)",
        "resume": "resume a paused plan",
        "rollback": "send every user of the plan back to stable",
        "promote": "move LAYER to its next step now",
        "restart": "start a rolled-back (or any) plan again from its first layer",
    }
    for name, help_text in actions.items():
        cmd = sub.add_parser(name, help=help_text)
        if name == "promote":
            cmd.add_argument("layer")
        required = name in ("rollback", "restart")
        cmd.add_argument("--reason", required=required, help="why, for the audit log")
        cmd.set_defaults(func=_act)
    for cmd in (status, audit, route, ratio, *(sub.choices[name] for name in actions)):
        add_client_options(cmd, url=url)
