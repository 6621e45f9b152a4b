"""``graylayer demo``: the source article's e-commerce case, played on real agents in simulated
days.

Two versions of a customer-service agent built with ``langchain.agents.create_agent`` (offline,
rule-following fake chat models; real ``lookup_order`` and ``issue_refund`` tools) are served
through a real :class:`~langchain_graylayer.routing.router.GrayRouter`, measured by its real
handlers, and judged and moved by a real
:class:`~langchain_graylayer.rollout.controller.RolloutController` ticking on a simulated clock:

* **act one** — candidate v2.0 (the new LLM agent, ~87% of tasks) against v1.8 (the old rule
  engine, ~60%). v2.0 refunds only half the shipping fee on late deliveries, a question only the
  ``normal`` layer asks; the completion judge rejects those answers and users complain. The
  controller must catch it in ``normal`` and roll back the whole plan (every layer that had v2.0
  goes to 0): sessions moved and their chat histories cleared, and the refund calls listed for
  review.
* **act two** — the fixed v2.1 is rolled out as a new plan, layer after layer, to 100%.

Real agent calls cost ~5-15 ms each, so the traffic is a thin sample: a fixed number of requests
per simulated hour per layer (users drawn uniformly within their layer). The controller compares
candidate and stable *within one layer*, so per-layer sampling rates bias nothing it judges;
overall completion rates are weighted by the layers' population shares. The judge counts users,
and a thin sample gives the small layers only a handful per step: the demo's plan lets a step
timeout promote them on few users, and the summary's decision table flags each such promotion.

The progress lines, the decision table and the plot (:mod:`~langchain_graylayer.demo.plot`) are
all read from the audit log (:mod:`~langchain_graylayer.demo.decisions`), and every day number is
1-based (day 1 00:00 is the start).
"""

from __future__ import annotations

from langchain_graylayer.demo.agents import HANDOFF as HANDOFF
from langchain_graylayer.demo.agents import Grade as Grade
from langchain_graylayer.demo.agents import SupportPolicy as SupportPolicy
from langchain_graylayer.demo.agents import grade as grade
from langchain_graylayer.demo.agents import support_agent as support_agent
from langchain_graylayer.demo.entry import run_cli, run_demo, write_outputs
from langchain_graylayer.demo.run import DemoResult
from langchain_graylayer.demo.world import DAY as DAY
from langchain_graylayer.demo.world import DEFAULT as DEFAULT
from langchain_graylayer.demo.world import HOUR as HOUR
from langchain_graylayer.demo.world import LAYER_SHARES, Scenario
from langchain_graylayer.demo.world import QUICK as QUICK
from langchain_graylayer.demo.world import START as START
from langchain_graylayer.demo.world import Customer as Customer
from langchain_graylayer.demo.world import Order as Order
from langchain_graylayer.demo.world import Shop as Shop
from langchain_graylayer.demo.world import demo_plan as demo_plan
from langchain_graylayer.demo.world import intent_of as intent_of
from langchain_graylayer.demo.world import make_population as make_population
from langchain_graylayer.demo.world import owed_refund as owed_refund
from langchain_graylayer.demo.world import shop_tools as shop_tools

__all__ = ["LAYER_SHARES", "DemoResult", "Scenario", "run_cli", "run_demo", "write_outputs"]
