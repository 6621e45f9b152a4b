"""The two agents the fault suite serves (``graylayer serve --stable _fault_agents:stable``).

Real ``create_agent`` graphs over a scripted chat model and a real ``@tool``, which takes
``FAULTS_TOOL_DELAY`` seconds (default 0.2) so a stream has a gap between its first bytes and its
end: a client that hangs up after the first bytes leaves mid-run, as a user who closes the tab.
Each answer names its version.
"""

from __future__ import annotations

import os
import time
from typing import Any

from langchain.agents import create_agent
from langchain_core.tools import tool

from langchain_graylayer.testing import ScriptedChatModel, calls_then_answers

TOOL_DELAY = float(os.environ.get("FAULTS_TOOL_DELAY", "0.2"))


@tool
def lookup_order(order_id: str) -> str:
    """Where an order is."""
    time.sleep(TOOL_DELAY)
    return f"{order_id} has shipped"


def _agent(version: str) -> Any:
    model = ScriptedChatModel(script=calls_then_answers(["lookup_order"], f"[{version}] shipped"))
    return create_agent(model, [lookup_order], name=f"support_{version}")


stable = _agent("v1")
candidate = _agent("v2")
