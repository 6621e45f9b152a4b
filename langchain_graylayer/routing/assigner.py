"""``Assigner``: the routing decision, apart from any Runnable.

It answers "which version does this user get, and why" from the plan, the store and a clock:
session pin first, then the user's layer (cached), then the sticky bucket against the layer's
ratio. :meth:`Assigner.route` only looks (the command line and admin tools explain with it);
:meth:`Assigner.assign` routes a request and pins its session (``GrayRouter`` uses it per
request, serving layers before the run starts). A session belongs to its user: its pin is kept
under ``conversation_key(user_id, session_id)``, so another user who sends the same session id
has a conversation of their own, and can neither follow, change nor pre-empt this one's pin.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from langchain_graylayer.plan.assignment import LayerAssignment
from langchain_graylayer.plan.bucketing import bucket, in_candidate, unit_key
from langchain_graylayer.plan.plan import RolloutPlan, Version
from langchain_graylayer.plan.profile import LayerScorer, UserProfile
from langchain_graylayer.routing.decision import RouteReason, RoutingDecision
from langchain_graylayer.routing.health import RouterHealth
from langchain_graylayer.store.protocols import RoutingStore, SessionPin, conversation_key

__all__ = ["Assigner", "ProfileLoader"]

logger = logging.getLogger(__name__)

ProfileLoader = Callable[[str], UserProfile | None]
"""Reads a user's profile from your own database (``None`` when unknown)."""


class Assigner:
    """Decides the version of each request; never raises (failures give stable, counted).

    Example:
        >>> from langchain_graylayer import MemoryStore, RolloutPlan
        >>> store = MemoryStore()
        >>> store.set_ratio("p", "vip", 1.0)
        >>> Assigner(RolloutPlan.default("p"), store).route("u1").explain()
        'candidate: layer vip (no profile), bucket 5035 < 10000 of 10000 (ratio 100.00%)'
    """

    def __init__(
        self,
        plan: RolloutPlan,
        store: RoutingStore,
        *,
        profile_loader: ProfileLoader | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``store`` is read as it is: wrap a networked one with
        :func:`~langchain_graylayer.store.cached.for_requests` first (``GrayRouter`` does)."""
        self.plan = plan
        self.store = store
        self.profile_loader = profile_loader
        self.clock = clock
        self.health = RouterHealth()
        """Requests, ``unrouted``, ``degraded``, ``stale`` and (counted by the router)
        ``fallback``."""
        self._scorer = LayerScorer(plan.scoring, clock=clock)
        self._layer_names = frozenset(plan.layer_names)
        self._last_warning = float("-inf")

    def route(self, user_id: str | None, session_id: str | None = None) -> RoutingDecision:
        """The decision for ``user_id`` now, without pinning the session."""
        try:
            return self._route(user_id, session_id)
        except Exception as exc:
            return self._degraded(exc, session_id)

    def assign(self, user_id: str | None, session_id: str | None) -> RoutingDecision:
        """Route one request and pin its user's session (the first writer wins across replicas)."""
        try:
            decision = self._route(user_id, session_id)
            if session_id and decision.routed and decision.reason is not RouteReason.PINNED:
                pin = SessionPin(decision.version, decision.layer, self.clock(), user_id)
                key = conversation_key(user_id, session_id)
                held = self.store.pin_session(self.plan.id, key, pin, self.plan.session_ttl)
                # Another replica pinned this user's session first: follow it (a pin that is
                # not this user's, which no router writes under this key, is never followed).
                if held.belongs_to(user_id) and held.version is not decision.version:
                    decision = RoutingDecision(
                        self.plan.id, held.version, held.layer, RouteReason.PINNED,
                        session_id=session_id, unit=decision.unit, activity=decision.activity,
                    )  # fmt: skip
        except Exception as exc:
            decision = self._degraded(exc, session_id)
        self.health.add("requests")
        if decision.reason is RouteReason.DEGRADED:
            self.health.add("degraded")
        elif not decision.routed:
            self.health.add("unrouted")
        elif not getattr(self.store, "available", True):  # a CachedStore with its breaker open
            self.health.add("stale")
        return decision

    def _route(self, user_id: str | None, session_id: str | None) -> RoutingDecision:
        plan = self.plan
        if not user_id:
            return RoutingDecision(plan.id, Version.STABLE, None, RouteReason.NO_USER_ID)
        pin = (
            self.store.get_pin(plan.id, conversation_key(user_id, session_id))
            if session_id
            else None
        )
        assignment = self._layer_of(user_id)
        # Consent withdrawn mid-conversation wins over the pin: opt-out is always stable.
        if (
            pin is not None
            and pin.belongs_to(user_id)
            and (pin.version is Version.STABLE or assignment.layer is not None)
        ):
            return self._pinned(pin, user_id, session_id, assignment)
        if assignment.layer is None:
            return RoutingDecision(
                plan.id,
                Version.STABLE,
                None,
                RouteReason.OPT_OUT,
                layer_reason=assignment.reason,
                session_id=session_id,
            )
        ratio = self.store.get_ratio(plan.id, assignment.layer)
        user_bucket = bucket(plan.effective_salt, user_id)
        chosen = in_candidate(user_bucket, ratio)
        return RoutingDecision(
            plan.id,
            Version.CANDIDATE if chosen else Version.STABLE,
            assignment.layer,
            RouteReason.IN_RATIO if chosen else RouteReason.OUT_OF_RATIO,
            bucket=user_bucket,
            ratio=ratio,
            layer_reason=assignment.reason,
            score=assignment.score,
            session_id=session_id,
            step=self.store.get_steps(plan.id).get(assignment.layer, ""),
            unit=unit_key(plan.effective_salt, user_id),
            activity=assignment.activity,
        )

    def _pinned(
        self, pin: SessionPin, user_id: str, session_id: str | None, assignment: LayerAssignment
    ) -> RoutingDecision:
        """A pinned conversation's decision. It counts as evidence of the current step only
        when the user's bucket gives the same version at the current ratio: then, within a step,
        every user is in exactly one arm, the one their bucket says (a pin from before the
        ratio moved serves its version, and counts in no step)."""
        plan, step = self.plan, ""
        if pin.layer is not None and pin.layer == assignment.layer:
            ratio = self.store.get_ratio(plan.id, pin.layer)
            chosen = in_candidate(bucket(plan.effective_salt, user_id), ratio)
            if (Version.CANDIDATE if chosen else Version.STABLE) is pin.version:
                step = self.store.get_steps(plan.id).get(pin.layer, "")
        return RoutingDecision(
            plan.id, pin.version, pin.layer, RouteReason.PINNED, session_id=session_id,
            step=step, unit=unit_key(plan.effective_salt, user_id),
            activity=assignment.activity,
        )  # fmt: skip

    def _layer_of(self, user_id: str) -> LayerAssignment:
        plan, store = self.plan, self.store
        cached = store.get_cached_layer(plan.id, user_id)
        if cached is not None and (cached.layer is None or cached.layer in self._layer_names):
            return cached
        loader = self.profile_loader or store.get_profile
        assignment = plan.assign_layer(user_id, loader(user_id), self._scorer)
        store.cache_layer(plan.id, user_id, assignment, plan.layer_cache_ttl)
        return assignment

    def _degraded(self, exc: BaseException, session_id: str | None) -> RoutingDecision:
        now = time.monotonic()
        if now - self._last_warning > 10.0:  # an outage must not flood the log
            self._last_warning = now
            logger.warning(
                "graylayer routing failed; serving the stable version (%d so far)",
                self.health.totals()["degraded"] + 1,
                exc_info=exc,
            )
        return RoutingDecision(
            self.plan.id,
            Version.STABLE,
            None,
            RouteReason.DEGRADED,
            session_id=session_id,
            detail=f"{type(exc).__name__}: {exc}",
        )
