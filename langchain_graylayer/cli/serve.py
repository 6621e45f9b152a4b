"""``graylayer serve``: one process that serves an agent behind a
:class:`~langchain_graylayer.routing.router.GrayRouter` with LangServe, the admin API, the
dashboard and ``/metrics``, and runs the rollout controller in a background thread."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import threading
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from langchain_graylayer.errors import ConfigurationError, GraylayerError
from langchain_graylayer.plan.plan import RolloutPlan
from langchain_graylayer.plan.profile import UserProfile
from langchain_graylayer.store.protocols import Store

__all__ = ["import_runnable", "register"]


# --------------------------------------------------------------------------- serve
def import_runnable(spec: str, option: str = "--stable") -> Any:
    """The Runnable named by ``module:attr`` (``attr`` may be dotted); the current directory is
    on ``sys.path``.

    Raises:
        ConfigurationError: a malformed spec, a module that is missing or fails to import, a
            missing attribute, or an object that is not a Runnable; naming ``option``.
    """
    from langchain_core.runnables import Runnable

    target = import_object(spec, option, Runnable, "Runnables")
    if not isinstance(target, Runnable):
        expected = f"a Runnable (a chain, an agent, a compiled graph), not {type(target).__name__}"
        raise ConfigurationError(option, spec, expected)
    return target


def import_profiles(spec: str) -> dict[str, UserProfile]:
    """The ``{user_id: UserProfile}`` mapping named by ``module:attr`` (for ``--profiles``)."""
    from collections.abc import Mapping

    target = import_object(spec, "--profiles", Mapping, "mappings")
    profiles = target if isinstance(target, Mapping) else None
    if profiles is None or not all(isinstance(p, UserProfile) for p in profiles.values()):
        raise ConfigurationError("--profiles", spec, "a mapping of user id to UserProfile")
    return {str(user_id): profile for user_id, profile in profiles.items()}


def import_object(spec: str, option: str, kind: type, kinds: str) -> Any:
    """The object named by ``module:attr``; a wrong spec names ``option`` and what would do."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigurationError(option, spec, "module:attribute, e.g. myapp.agents:support_chain")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name + ".").startswith(exc.name + "."):
            where = f"no module named {exc.name!r}; {os.getcwd()} is on sys.path"
            raise ConfigurationError(option, spec, f"an importable module ({where})") from None
        raise ConfigurationError(option, spec, f"a module that imports ({exc})") from None
    except Exception as exc:  # the user's module is broken: say how, without our traceback
        raised = f"importing {module_name} raised {type(exc).__name__}: {exc}"
        raise ConfigurationError(option, spec, f"a module that imports ({raised})") from None
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            found = sorted(k for k, v in vars(module).items() if isinstance(v, kind))
            hint = f"{kinds} in it: {', '.join(found)}" if found else f"it has no {kinds}"
            raise ConfigurationError(option, spec, f"an attribute of {module_name} ({hint})")
        target = getattr(target, part)
    return target


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def _serve(args: argparse.Namespace) -> int:
    from langchain_graylayer.measuring.prometheus import default_metrics
    from langchain_graylayer.rollout.controller import RolloutController
    from langchain_graylayer.routing.router import GrayRouter
    from langchain_graylayer.serve.app import add_gray_routes

    if args.interval <= 0:
        raise ConfigurationError("--interval", args.interval, "seconds between ticks, > 0")
    stable = import_runnable(args.stable, "--stable")
    candidate = import_runnable(args.candidate, "--candidate")
    plan = RolloutPlan.from_yaml(args.plan)
    try:
        import uvicorn
        from fastapi import FastAPI
    except ImportError as exc:
        raise GraylayerError(
            f'graylayer serve needs {exc.name}: pip install "langchain-graylayer[serve]"'
        ) from None
    store: Store
    if args.redis_url:
        from langchain_graylayer.store.redis import RedisStore

        store = redis_store = RedisStore(args.redis_url)
        redis_store.ping()  # fail now, not at the first request
    else:
        from langchain_graylayer.store.memory import MemoryStore

        store = MemoryStore()
    profiles = import_profiles(args.profiles) if args.profiles else {}
    for user_id, profile in profiles.items():
        store.put_profile(user_id, profile)
    metrics = default_metrics()
    router: GrayRouter[Any, Any] = GrayRouter(
        stable=stable, candidate=candidate, plan=plan, store=store, metrics=metrics
    )
    controller = RolloutController(plan=plan, store=store)
    token = args.admin_token or os.environ.get("GRAYLAYER_ADMIN_TOKEN") or None
    app = FastAPI(title=f"graylayer: {plan.id}")
    add_gray_routes(
        app, router, path=args.path, controller=controller, admin_prefix=args.admin_prefix,
        admin_token=token,
    )  # fmt: skip

    base = f"http://{args.host}:{args.port}"
    path, admin = "/" + args.path.strip("/"), "/" + args.admin_prefix.strip("/")
    where = _redacted(args.redis_url) if args.redis_url else "memory (lost on exit)"
    print(f"graylayer: plan {plan.id}: stable {args.stable}, candidate {args.candidate}")
    print(f"  agent       {base}{path}/invoke  (stream, batch, playground under {path}/)")
    print(f"  admin API   {base}{admin}/api/status  (Authorization: Bearer <token>)")
    print(f"  dashboard   {base}{admin}/")
    print(f"  metrics     {base}/metrics")
    print(
        f"  store       {where}; controller every {args.interval:g} s on the evidence in the store"
    )
    if profiles:
        print(f"  profiles    {len(profiles)} put into the store from {args.profiles}")
    if token is None:
        print(
            "graylayer: warning: no admin token (--admin-token or GRAYLAYER_ADMIN_TOKEN): "
            "the admin API and the dashboard are disabled (they answer 503)",
            file=sys.stderr,
        )
    sys.stdout.flush()

    thread = threading.Thread(
        target=controller.run, args=(args.interval,), name="graylayer-controller", daemon=True
    )
    thread.start()
    try:
        uvicorn.run(app, host=args.host, port=args.port)
    finally:
        controller.stop()
        thread.join(timeout=5.0)
    return 0


def register(sub: Any) -> None:
    """Add ``serve`` to the ``graylayer`` subparsers ``sub``."""
    serve = sub.add_parser("serve", help="serve an agent behind a GrayRouter, with the controller")
    serve.add_argument("--plan", required=True, help="plan YAML")
    serve.add_argument("--stable", required=True, metavar="MODULE:ATTR", help="today's Runnable")
    serve.add_argument("--candidate", required=True, metavar="MODULE:ATTR", help="the new one")
    serve.add_argument("--redis-url", help="shared state in Redis (default: in memory)")
    serve.add_argument(
        "--profiles",
        metavar="MODULE:ATTR",
        help="a {user_id: UserProfile} mapping to put into the store at start",
    )
    serve.add_argument("--host", default="127.0.0.1", help="default: %(default)s")
    serve.add_argument("--port", type=int, default=8000, help="default: %(default)s")
    serve.add_argument("--path", default="/agent", help="the agent's routes (default: /agent)")
    serve.add_argument("--admin-prefix", default="/graylayer", help="default: %(default)s")
    serve.add_argument("--interval", type=float, default=30.0, help="controller tick, seconds")
    serve.add_argument(
        "--admin-token",
        default=os.environ.get("GRAYLAYER_ADMIN_TOKEN"),
        help="bearer token of the admin API (default: $GRAYLAYER_ADMIN_TOKEN)",
    )
    serve.set_defaults(func=_serve)
