"""Fault injection for rehearsals: a version whose tools fail, whose model is slow or times out,
which crashes; a store that hangs or fails on demand.

A rehearsal proves, before a real incident, that the judge rolls back what it should and that
users are still served (the router answers a failed candidate run from stable):

* :func:`with_chaos` wraps any Runnable — a ``create_agent`` agent, a LangGraph graph, a chain —
  with the faults of a :class:`~langchain_graylayer.plan.chaos.Chaos`. Faults are injected through
  the run's callbacks, so tools and chat models deep inside the agent fail or slow down without
  touching its code: a failed tool call raises from the tool, as a broken tool would (it raises
  as the tool starts, so the tool's run reports no error of its own: the metrics count the failed
  request, not a tool error).
* A plan's ``chaos:`` block does the same for ``GrayRouter`` (see :func:`apply_plan_chaos`), but
  only in a process that opts in with ``GRAYLAYER_ALLOW_CHAOS=1``, and it says so loudly.
* :class:`ChaosStore` wraps a store: :meth:`ChaosStore.hang` makes every call wait (a stopped
  Redis), :meth:`ChaosStore.fail` makes every call raise ``StoreError`` (a lost Redis).

Example — a candidate that crashes on every run, in a test::

    >>> from langchain_core.runnables import RunnableLambda
    >>> from langchain_graylayer.plan.chaos import Chaos
    >>> candidate = with_chaos(RunnableLambda(lambda q: q.upper()), Chaos(error_rate=1.0))
    >>> candidate.invoke("hi")
    Traceback (most recent call last):
    ...
    langchain_graylayer.testing.chaos.InjectedFault: chaos: run 0 of candidate failed (error_rate=1)
    >>> candidate.faults
    {'run_error': 1}
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.base import RunnableBinding

from langchain_graylayer.errors import ConfigurationError, StoreError
from langchain_graylayer.plan.chaos import ALLOW_CHAOS_ENV, Chaos, draw
from langchain_graylayer.plan.plan import RolloutPlan
from langchain_graylayer.store.protocols import Store

__all__ = [
    "ChaosRunnable",
    "ChaosStore",
    "FaultInjector",
    "InjectedFault",
    "InjectedTimeout",
    "apply_plan_chaos",
    "with_chaos",
]

logger = logging.getLogger(__name__)

Input = TypeVar("Input")
Output = TypeVar("Output")


class InjectedFault(RuntimeError):
    """A fault chaos injected. Deliberately not a ``GraylayerError``: it stands for a failure of
    the version (its tool, its model, its code), and is judged as one."""


class InjectedTimeout(InjectedFault, TimeoutError):
    """A chat model call that chaos timed out."""


class FaultInjector:
    """Decides and counts the faults of one :class:`Chaos` for every run of one version.

    The ``n``-th call of each kind (``run``, ``tool``, ``model``) fails when
    ``draw(seed, kind, n) < rate``: the same seed and the same calls fail the same way.
    """

    def __init__(self, chaos: Chaos) -> None:
        self.chaos = chaos
        self._numbers = {kind: itertools.count() for kind in ("run", "tool", "model")}
        self._lock = threading.Lock()
        self._injected: Counter[str] = Counter()

    @property
    def injected(self) -> dict[str, int]:
        """How many faults of each kind were injected so far (``run_error``, ``tool_error``,
        ``tool_delay``, ``model_timeout``, ``model_delay``)."""
        with self._lock:
            return dict(self._injected)

    def _count(self, kind: str) -> None:
        with self._lock:
            self._injected[kind] += 1

    def _hit(self, kind: str, rate: float) -> int | None:
        number = next(self._numbers[kind])  # itertools.count is atomic under the GIL
        return number if rate > 0 and draw(self.chaos.seed, kind, number) < rate else None

    def run_fault(self) -> InjectedFault | None:
        """The fault of a run of the version as it starts, if this one fails."""
        number = self._hit("run", self.chaos.error_rate)
        if number is None:
            return None
        self._count("run_error")
        return InjectedFault(
            f"chaos: run {number} of {self.chaos.version} failed "
            f"(error_rate={self.chaos.error_rate:g})"
        )

    def tool_fault(self, name: str) -> tuple[float, InjectedFault | None]:
        """The delay before a call of tool ``name``, and its fault if this call fails."""
        if self.chaos.tools and name not in self.chaos.tools:
            return 0.0, None
        if self.chaos.tool_delay:
            self._count("tool_delay")
        number = self._hit("tool", self.chaos.tool_error_rate)
        if number is None:
            return self.chaos.tool_delay, None
        self._count("tool_error")
        fault = InjectedFault(
            f"chaos: call {number} of tool {name!r} failed "
            f"(tool_error_rate={self.chaos.tool_error_rate:g})"
        )
        return self.chaos.tool_delay, fault

    def model_fault(self) -> tuple[float, InjectedFault | None]:
        """The delay before a chat model call, and its timeout if this call times out."""
        if self.chaos.model_delay:
            self._count("model_delay")
        number = self._hit("model", self.chaos.model_timeout_rate)
        if number is None:
            return self.chaos.model_delay, None
        self._count("model_timeout")
        fault = InjectedTimeout(
            f"chaos: model call {number} timed out "
            f"(model_timeout_rate={self.chaos.model_timeout_rate:g})"
        )
        return self.chaos.model_delay, fault


class _RunFaults(BaseCallbackHandler):
    """Injects the faults of one run. Each run gets its own handler, so the first event it sees
    is the version's own run. A synchronous handler on purpose: LangChain swallows what an async
    handler raises when a sync tool runs in a worker thread; delays run in the event loop's
    executor in async runs, never on the loop."""

    raise_error = True

    def __init__(self, injector: FaultInjector) -> None:
        self.injector = injector
        self.started = False
        self.run_inline = not (injector.chaos.tool_delay or injector.chaos.model_delay)

    def _start(self) -> None:
        if not self.started:
            self.started = True
            if (fault := self.injector.run_fault()) is not None:
                raise fault

    def _wait_or_raise(self, delay: float, fault: InjectedFault | None) -> None:
        if delay:
            time.sleep(delay)
        if fault is not None:
            raise fault

    def on_chain_start(self, serialized: Any, inputs: Any, **kwargs: Any) -> None:
        self._start()

    def on_tool_start(self, serialized: Any, input_str: str, **kwargs: Any) -> None:
        self._start()
        name = kwargs.get("name") or (serialized or {}).get("name") or "tool"
        self._wait_or_raise(*self.injector.tool_fault(str(name)))

    def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
        self._start()
        self._wait_or_raise(*self.injector.model_fault())

    def on_llm_start(self, serialized: Any, prompts: Any, **kwargs: Any) -> None:
        self._start()
        self._wait_or_raise(*self.injector.model_fault())


class ChaosRunnable(RunnableBinding[Input, Output]):  # type: ignore[no-redef]
    """A Runnable with faults injected into each of its runs (made by :func:`with_chaos`)."""

    injector: FaultInjector | None = None
    """Decides and counts the faults."""

    @property
    def faults(self) -> dict[str, int]:
        """The faults injected so far, by kind."""
        return {} if self.injector is None else self.injector.injected


def with_chaos(runnable: Runnable[Input, Output], chaos: Chaos) -> ChaosRunnable[Input, Output]:
    """``runnable`` with the faults of ``chaos`` injected into every run (sync, async, stream,
    batch), through a callback handler each run gets: tools and chat models inside it fail,
    slow down or time out as ``chaos`` says. Logs a warning: faults are never quiet.
    """
    injector = FaultInjector(chaos)

    def faults(config: RunnableConfig) -> RunnableConfig:
        return {"callbacks": [_RunFaults(injector)]}

    name = runnable.get_name()
    logger.warning("CHAOS ON: injecting faults into %s (%s)", name, chaos.describe())
    return ChaosRunnable(bound=runnable, config_factories=[faults], injector=injector)


def apply_plan_chaos(
    plan: RolloutPlan,
    stable: Runnable[Any, Any],
    candidate: Runnable[Any, Any],
    *,
    environ: Mapping[str, str] | None = None,
) -> tuple[Runnable[Any, Any], Runnable[Any, Any]]:
    """``(stable, candidate)`` with the faults of ``plan.chaos`` injected into its version.

    Raises:
        ConfigurationError: when the plan has chaos and the process has not opted in with
            ``GRAYLAYER_ALLOW_CHAOS=1`` (so a staging plan copied to production fails to start
            instead of failing users).
    """
    if plan.chaos is None:
        return stable, candidate
    allowed = (os.environ if environ is None else environ).get(ALLOW_CHAOS_ENV, "")
    if allowed != "1":
        raise ConfigurationError(
            "chaos",
            plan.chaos.describe(),
            f"no chaos block in a plan served without {ALLOW_CHAOS_ENV}=1 (chaos injects faults "
            f"into real requests: set {ALLOW_CHAOS_ENV}=1 only in a staging or CI process)",
        )
    logger.warning(
        "CHAOS ON for plan %s: %s=1, faults injected into the %s (%s)",
        plan.id, ALLOW_CHAOS_ENV, plan.chaos.version, plan.chaos.describe(),
    )  # fmt: skip
    if plan.chaos.version == "stable":
        return with_chaos(stable, plan.chaos), candidate
    return stable, with_chaos(candidate, plan.chaos)


# --------------------------------------------------------------------------- store
def _store_methods() -> list[str]:
    names: set[str] = set()
    for cls in Store.__mro__:
        if getattr(cls, "_is_protocol", False):
            names.update(n for n, v in vars(cls).items() if callable(v) and n[0] != "_")
    return sorted(names)


class ChaosStore:
    """A store whose calls hang or fail on demand (a rehearsal of a stopped or lost Redis).

    While :meth:`hang` is on, each call waits until the hang ends — at most ``timeout`` seconds,
    then raises ``StoreError`` as a Redis client timeout would. While :meth:`fail` is on, each
    call raises ``StoreError`` at once. :meth:`heal` ends both and releases waiting calls.

    Example:
        >>> from langchain_graylayer import MemoryStore
        >>> store = ChaosStore(MemoryStore(), timeout=0.01)
        >>> store.set_ratio("p", "vip", 0.5)
        >>> store.hang(60)
        >>> store.get_ratio("p", "vip")
        Traceback (most recent call last):
        ...
        langchain_graylayer.errors.StoreError: chaos: store call get_ratio hung for 0.01 s
        >>> store.heal(); store.get_ratio("p", "vip"), store.faults
        (0.5, 1)
    """

    def __init__(
        self,
        inner: Store,
        *,
        timeout: float = 5.0,
        networked: bool | None = None,
        methods: Collection[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``methods``: only these calls get the faults (default: every call of ``Store``);
        ``networked``: what routers should believe (default: ``inner.networked``)."""
        self.inner = inner
        self.timeout = timeout
        self.networked = inner.networked if networked is None else networked
        self.methods = frozenset(_STORE_METHODS if methods is None else methods)
        self.clock = clock
        self.calls = 0
        """Calls that went through this wrapper."""
        self.faults = 0
        """Calls that timed out or failed because of a fault."""
        self._lock = threading.Lock()
        self._hang_until = float("-inf")
        self._failing = False
        self._healed = threading.Event()

    def hang(self, seconds: float) -> None:
        """Every call waits until ``seconds`` from now (or :meth:`heal`), at most ``timeout``."""
        with self._lock:
            self._healed.clear()
            self._hang_until = self.clock() + seconds

    def fail(self) -> None:
        """Every call raises ``StoreError`` until :meth:`heal`."""
        with self._lock:
            self._failing = True

    def heal(self) -> None:
        """End the hang and the failure; waiting calls go on."""
        with self._lock:
            self._failing = False
            self._hang_until = float("-inf")
            self._healed.set()

    def _before(self, name: str) -> None:
        with self._lock:
            self.calls += 1
            failing, remaining = self._failing, self._hang_until - self.clock()
        if name not in self.methods:
            return
        if failing:
            self._fault()
            raise StoreError(f"chaos: store call {name} failed (the store is down)")
        if remaining > 0:
            waited = min(remaining, self.timeout)
            if not self._healed.wait(waited) and remaining > self.timeout:
                self._fault()
                raise StoreError(f"chaos: store call {name} hung for {self.timeout:g} s")

    def _fault(self) -> None:
        with self._lock:
            self.faults += 1

    def __getattr__(self, name: str) -> Any:
        # what Store does not name (flush, ping, close, ...) goes straight to the inner store
        return getattr(self.inner, name)


def _forward(name: str) -> Callable[..., Any]:
    def call(self: ChaosStore, *args: Any, **kwargs: Any) -> Any:
        self._before(name)
        return getattr(self.inner, name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call


_STORE_METHODS = _store_methods()
for _name in _STORE_METHODS:
    setattr(ChaosStore, _name, _forward(_name))
