"""The app that ``test_serve.py`` runs under a real uvicorn process.

It is the customer-service example (``examples/customer_service/app.py``: LangServe routes, the
controller thread in the lifespan) with two changes a test needs: the ``vip`` layer starts at
``GRAYLAYER_TEST_VIP_RATIO``, set through a controller (so the test can predict each user's
version), and ``lookup_order`` takes ``GRAYLAYER_TEST_TOOL_DELAY`` seconds (so a stream that
is really incremental shows a gap between its first chunk and its end). Run it from the
repository root::

    python -m uvicorn _serve_app:app --app-dir tests/integration --port 8000
"""

from __future__ import annotations

import os
import time
from typing import Any

from langchain.agents import create_agent
from langchain_core.tools import tool
from prometheus_client import CollectorRegistry

from examples.customer_service import agents
from examples.customer_service.app import PLAN, create_app
from langchain_graylayer import GraylayerMetrics, MemoryStore, RolloutController

VIP_RATIO = float(os.environ.get("GRAYLAYER_TEST_VIP_RATIO", "0.5"))
TOOL_DELAY = float(os.environ.get("GRAYLAYER_TEST_TOOL_DELAY", "0"))


@tool("lookup_order")
def slow_lookup_order(order_id: str) -> str:
    """Return the shipping status of an order, as slowly as a real order service."""
    time.sleep(TOOL_DELAY)
    return str(agents.lookup_order.invoke({"order_id": order_id}))


def _agent(prompt: str, *extra: Any, name: str) -> Any:
    return create_agent(
        model=agents.OfflineSupportModel(),
        tools=[slow_lookup_order, *extra],
        system_prompt=prompt,
        name=name,
    )


store = MemoryStore()
# Through a controller, as a person would (the app's controller puts back any ratio it did not set)
RolloutController(plan=PLAN, store=store, holder="test-setup").set_ratio(
    "vip", VIP_RATIO, operator="test", reason="the test predicts each user's version"
)
app = create_app(
    store=store,
    metrics=GraylayerMetrics(registry=CollectorRegistry()),
    controller_interval=0.2,
    agents=(
        _agent(agents.STABLE_PROMPT, name="customer_service_v1"),
        _agent(agents.CANDIDATE_PROMPT, agents.issue_refund, name="customer_service_v2"),
    ),
)
