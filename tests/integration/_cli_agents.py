"""Two versions of a tiny agent for the ``graylayer serve`` tests (``--stable _cli_agents:stable``).

Each answer names its version, so a test can tell which one served a request.
"""

from __future__ import annotations

from langchain_core.runnables import RunnableLambda


def _answer(version: str) -> RunnableLambda[dict[str, str], str]:
    def answer(inputs: dict[str, str]) -> str:
        return f"[{version}] {inputs.get('question', '')}"

    return RunnableLambda(answer, name=f"support_{version}")


stable = _answer("v1")
candidate = _answer("v2")

NOT_A_RUNNABLE = 42
"""For the test of a ``--stable`` that names something else."""
