"""The customer-service agent served with gray release: LangServe routes, admin API, /metrics.

Run it from the repository root::

    GRAYLAYER_ADMIN_TOKEN=change-me GRAYLAYER_FEEDBACK_SECRET=$(openssl rand -hex 32) \\
        uvicorn examples.customer_service.app:app --port 8000

Environment:

* ``GRAYLAYER_ADMIN_TOKEN`` — bearer token of the admin API (without it the API answers 503);
* ``GRAYLAYER_FEEDBACK_SECRET`` — signs feedback tokens; give every replica the same one (without
  it each process makes its own, and tokens only verify on the replica that issued them);
* ``REDIS_URL`` (optional) — share ratios, pins, profiles and the audit log between replicas
  through a :class:`~langchain_graylayer.RedisStore`; default: in memory, this process only;
* ``GRAYLAYER_CONTROLLER_INTERVAL`` (optional) — seconds between controller ticks (default 30).

The rollout controller runs in a background thread for the app's lifetime (FastAPI lifespan): it
opens the ``internal`` layer at 50% on its first tick, then judges and moves the ratios.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from langchain_core.runnables import Runnable

from examples.customer_service.agents import candidate, stable
from examples.customer_service.profiles import DEMO_PROFILES
from langchain_graylayer import (
    GraylayerMetrics,
    GrayRouter,
    MemoryStore,
    RolloutController,
    RolloutPlan,
)
from langchain_graylayer.measuring.prometheus import default_metrics
from langchain_graylayer.serve.app import add_gray_routes
from langchain_graylayer.store import Store

__all__ = ["DEMO_PROFILES", "PLAN", "app", "create_app"]

logger = logging.getLogger("examples.customer_service")

PLAN = RolloutPlan.from_yaml(Path(__file__).with_name("plan.yaml"))


def _store_from_env() -> Store:
    url = os.environ.get("REDIS_URL")
    if url:
        from langchain_graylayer.store.redis import RedisStore

        return RedisStore(url)
    store = MemoryStore()
    for user_id, profile in DEMO_PROFILES.items():
        store.put_profile(user_id, profile)
    return store


def create_app(
    *,
    store: Store | None = None,
    metrics: GraylayerMetrics | None = None,
    controller_interval: float | None = None,
    agents: tuple[Runnable[Any, Any], Runnable[Any, Any]] = (stable, candidate),
) -> FastAPI:
    """The demo app.

    Args:
        store: default: Redis at ``REDIS_URL``, else in memory with :data:`DEMO_PROFILES`.
        metrics: default: the process-wide metrics on Prometheus' global registry.
        controller_interval: seconds between controller ticks; default
            ``GRAYLAYER_CONTROLLER_INTERVAL`` or 30.
        agents: the stable and the candidate agent.
    """
    store = store if store is not None else _store_from_env()
    metrics = metrics if metrics is not None else default_metrics()
    if controller_interval is None:
        controller_interval = float(os.environ.get("GRAYLAYER_CONTROLLER_INTERVAL", "30"))
    router = GrayRouter(
        stable=agents[0], candidate=agents[1], plan=PLAN, store=store, metrics=metrics
    )
    controller = RolloutController(plan=PLAN, store=store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        thread = threading.Thread(
            target=controller.run,
            args=(controller_interval,),
            name="graylayer-controller",
            daemon=True,
        )
        thread.start()
        logger.info("rollout controller of plan %s started", PLAN.id)
        try:
            yield
        finally:
            controller.stop()  # wakes the thread up and gives the leader lease back
            thread.join(timeout=10)

    app = FastAPI(
        title="Acme customer service",
        description="A create_agent agent in gray release: v1 (stable) and v2 (candidate).",
        lifespan=lifespan,
    )
    app.state.router, app.state.controller, app.state.store = router, controller, store
    add_gray_routes(app, router, path="/agent", controller=controller)
    return app


app = create_app()
