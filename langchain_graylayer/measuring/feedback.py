"""User feedback, from its arrival to its count: kinds, validation, attribution and replay checks.

Feedback arrives after the run, by run id. It is counted under the labels of the run that served
it, and only for runs that ran:

* :class:`RunIndex` remembers ``run id → labels`` for the runs a router served (bounded, expiring);
  :meth:`FeedbackRecorder.for_run` counts feedback for a run it finds there, and refuses the rest;
* behind a server with many replicas, a :class:`FeedbackSigner` token carries the labels, so any
  replica can count it. :meth:`FeedbackRecorder.token_for` issues one only for a run in the
  index (a run that ran), naming the index that recorded it; :meth:`FeedbackRecorder.for_token`
  verifies it, refuses a token whose own index does not know its run (never recorded, or its
  window has passed), and claims its nonce in the store, so a token counts once.

Example:
    >>> from prometheus_client import CollectorRegistry
    >>> from langchain_graylayer.measuring.prometheus import GraylayerMetrics
    >>> recorder = FeedbackRecorder(GraylayerMetrics(registry=CollectorRegistry()))
    >>> recorder.index.record("run-1", RunLabels("refund-v2", "candidate", "normal"))
    >>> recorder.for_run("run-1", "complaint").version
    'candidate'
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from langchain_graylayer._cache import ExpiringLRU
from langchain_graylayer._compat import StrEnum
from langchain_graylayer._types import Clock
from langchain_graylayer.errors import (
    ConfigurationError,
    FeedbackTokenReusedError,
    InvalidFeedbackTokenError,
    UnknownRunError,
)
from langchain_graylayer.measuring.labels import RunLabels

if TYPE_CHECKING:
    from langchain_graylayer.store.protocols import NonceStore

__all__ = [
    "FeedbackKind",
    "FeedbackRecorder",
    "FeedbackSigner",
    "FeedbackSink",
    "RunIndex",
    "TokenClaims",
    "check_feedback",
]


class FeedbackKind(StrEnum):
    """Kinds of later user feedback."""

    BAD = "bad"
    COMPLAINT = "complaint"
    GOOD = "good"


def check_feedback(kind: FeedbackKind | str | None, score: float | None) -> FeedbackKind | None:
    """The kind as a :class:`FeedbackKind`, after checking the pair.

    Raises:
        ConfigurationError: an unknown kind, a score outside 0-10, or neither a kind nor a score.
    """
    checked = None
    if kind is not None:
        try:
            checked = FeedbackKind(kind)
        except ValueError:
            valid = [k.value for k in FeedbackKind]
            raise ConfigurationError("kind", kind, f"one of {valid} or None") from None
    if score is not None and (isinstance(score, bool) or not 0 <= score <= 10):
        raise ConfigurationError("score", score, "a number from 0 to 10, or None")
    if kind is None and score is None:
        raise ConfigurationError("kind", None, "a kind, a score, or both")
    return checked


class RunIndex:
    """``run id → labels`` of the runs a router served, bounded and expiring, thread-safe.

    Labels are stored as a tuple of strings, which the garbage collector stops tracking, so a
    full index (100 000 runs) does not slow every full collection down.
    """

    def __init__(
        self, *, ttl: float = 7 * 86400.0, max_runs: int = 100_000, clock: Clock = time.time
    ) -> None:
        self.ttl = ttl
        self.clock = clock
        self.id = secrets.token_hex(8)
        """Names this index in the tokens issued for its runs (one per router and process)."""
        self._runs: ExpiringLRU[str, tuple[str, str, str, str, str, int]] = ExpiringLRU(
            max_runs, clock
        )
        self._lock = threading.Lock()
        self._forgot_at: float | None = None  # when a live run last made room for a new one

    def record(self, run_id: str, labels: RunLabels) -> None:
        served = (labels.plan, labels.version, labels.layer, labels.step, labels.unit,
                  labels.activity)  # fmt: skip
        with self._lock:
            evictions = self._runs.evictions
            self._runs.set(run_id, served, self.ttl)
            if self._runs.evictions != evictions:
                self._forgot_at = self.clock()

    def remembers_since(self, when: float) -> bool:
        """True when no run was dropped to make room since ``when``: a run that was here then
        and is missing now has been forgotten only by expiry."""
        forgot_at = self._forgot_at
        return forgot_at is None or forgot_at < when

    def labels_of(self, run_id: str) -> RunLabels | None:
        """The labels ``run_id`` was served under, or ``None`` (never served, or forgotten)."""
        with self._lock:
            served = self._runs.get(run_id)
        return None if served is None else RunLabels(*served)


class FeedbackSink(Protocol):
    """Where counted feedback goes (:class:`~.prometheus.GraylayerMetrics` is one)."""

    def record_feedback(
        self, labels: RunLabels, kind: FeedbackKind | None, score: float | None = None
    ) -> None: ...


class FeedbackRecorder:
    """Counts feedback under the labels of the run that served it; refuses what it cannot trust.

    ``metrics=None`` counts nothing (an uninstrumented router) but still checks and attributes.
    """

    def __init__(
        self,
        metrics: FeedbackSink | None,
        index: RunIndex | None = None,
        evidence: FeedbackSink | None = None,
    ) -> None:
        self.metrics = metrics
        self.index = index if index is not None else RunIndex()
        self.evidence = evidence
        """Also told of every counted feedback: the evidence the judge reads, in the step the
        run was routed under however late the feedback comes."""

    def for_run(
        self, run_id: object, kind: FeedbackKind | str | None, score: float | None = None
    ) -> RunLabels:
        """Count feedback for a run this process served.

        Raises:
            UnknownRunError: the run is not in the index (never served here, or expired).
            ConfigurationError: a bad kind or score; nothing is counted.
        """
        checked = check_feedback(kind, score)
        labels = self.index.labels_of(str(run_id))
        if labels is None:
            raise UnknownRunError(
                f"run {run_id} is not a request this router routed, or its feedback window "
                f"({self.index.ttl:g} s) has passed; the feedback was not counted"
            )
        self._count(labels, checked, score)
        return labels

    def token_for(self, signer: FeedbackSigner, run_id: str) -> str | None:
        """A feedback token for a run in the index (one that ran), or ``None``: the labels are
        the ones the run was recorded under."""
        labels = self.index.labels_of(run_id)
        return None if labels is None else signer.sign(run_id, labels, recorded_by=self.index.id)

    def for_token(
        self,
        signer: FeedbackSigner,
        nonces: NonceStore,
        token: str,
        run_id: str,
        kind: FeedbackKind | str | None,
        score: float | None = None,
    ) -> RunLabels:
        """Count feedback carried by a signed token, once.

        A token names the run index that recorded its run. When that is this recorder's index,
        the run must still be there under the same labels; a token from another index (another
        replica, or before a restart) is trusted for its signature.

        Raises:
            InvalidFeedbackTokenError: forged, malformed, expired, for another run, used before,
                or not issued for a recorded run.
            UnknownRunError: this recorder issued the token's index but never recorded the run
                (or its feedback window has passed).
            ConfigurationError: a bad kind or score; nothing is counted and the token stays unused.
            StoreError: the nonce could not be claimed; nothing is counted.
        """
        checked = check_feedback(kind, score)
        claims = signer.claims(token, run_id)
        self._check_recorded(claims, run_id)
        if not nonces.claim_once(f"feedback:{signer.fingerprint(token)}", signer.ttl):
            raise FeedbackTokenReusedError("this token was already used")
        self._count(claims.labels, checked, score)
        return claims.labels

    def _check_recorded(self, claims: TokenClaims, run_id: str) -> None:
        if claims.recorded_by is None:
            raise InvalidFeedbackTokenError(
                "feedback token names no run index: it was not issued for a run that ran"
            )
        if claims.recorded_by != self.index.id:
            return  # recorded by another replica's router, which alone could check it
        recorded = self.index.labels_of(run_id)
        if recorded is None and self.index.remembers_since(claims.issued_at):
            raise UnknownRunError(
                f"run {run_id} is not a run this router recorded, or its feedback window "
                f"({self.index.ttl:g} s) has passed; the feedback was not counted"
            )
        if recorded is not None and recorded != claims.labels:
            raise InvalidFeedbackTokenError("feedback token labels differ from the run's")

    def _count(self, labels: RunLabels, kind: FeedbackKind | None, score: float | None) -> None:
        for sink in (self.metrics, self.evidence):
            if sink is not None:
                sink.record_feedback(labels, kind, score)


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a verified feedback token says."""

    labels: RunLabels
    """The labels the run was served under."""
    recorded_by: str | None
    """The :attr:`RunIndex.id` that recorded the run (``None``: a token of an older release)."""
    issued_at: float
    """When the token was signed (POSIX seconds, whole seconds)."""


class FeedbackSigner:
    """Signs and verifies feedback tokens over the run id and the labels that served it.

    The token carries its labels and its age, so feedback can be counted on any replica without
    shared state, and cannot be pointed at another version. Signing is ``itsdangerous``' timed
    serializer (HMAC-SHA256), in the ``serve`` extra.

    Example:
        >>> signer = FeedbackSigner(b"k" * 32, ttl=60, clock=lambda: 1000.0)
        >>> labels = RunLabels("refund-v2", "candidate", "normal")
        >>> token = signer.sign("run-1", labels, recorded_by="index-1")
        >>> signer.verify(token, "run-1") == labels
        True
        >>> signer.claims(token, "run-1").recorded_by
        'index-1'
    """

    def __init__(
        self, secret: bytes, *, ttl: float = 7 * 86400.0, clock: Clock = time.time
    ) -> None:
        if len(secret) < 16:
            raise ConfigurationError("feedback_secret", "<hidden>", "at least 16 bytes")
        try:
            from itsdangerous import TimestampSigner, URLSafeTimedSerializer
        except ImportError as exc:  # pragma: no cover - the serve extra brings it
            raise ImportError(
                'feedback tokens need itsdangerous: pip install "langchain-graylayer[serve]"'
            ) from exc

        class _Signer(TimestampSigner):
            def get_timestamp(self) -> int:
                return int(clock())

        self.ttl = ttl
        self._serializer: Any = URLSafeTimedSerializer(
            secret,
            salt="graylayer.feedback",
            signer=_Signer,
            signer_kwargs={"digest_method": hashlib.sha256},
        )

    def sign(self, run_id: str, labels: RunLabels, *, recorded_by: str | None = None) -> str:
        """A token for ``run_id``; ``recorded_by`` names the run index that recorded the run
        (:meth:`FeedbackRecorder.token_for` passes it; a token without one is refused)."""
        body = {"r": run_id, "p": labels.plan, "v": labels.version, "l": labels.layer,
                "s": labels.step, "u": labels.unit, "a": labels.activity}  # fmt: skip
        if recorded_by is not None:
            body["i"] = recorded_by
        return str(self._serializer.dumps(body))

    def verify(self, token: str, run_id: str) -> RunLabels:
        """The labels inside a valid token for ``run_id``.

        Raises:
            InvalidFeedbackTokenError: forged, malformed, expired or for another run.
        """
        return self.claims(token, run_id).labels

    def claims(self, token: str, run_id: str) -> TokenClaims:
        """Everything a valid token for ``run_id`` says.

        Raises:
            InvalidFeedbackTokenError: forged, malformed, expired or for another run.
        """
        from itsdangerous import BadSignature, SignatureExpired

        try:
            body, signed_at = self._serializer.loads(token, max_age=self.ttl, return_timestamp=True)
        except SignatureExpired:
            raise InvalidFeedbackTokenError("feedback token has expired") from None
        except BadSignature:
            raise InvalidFeedbackTokenError("feedback token signature does not match") from None
        if not isinstance(body, dict) or body.get("r") != run_id:
            raise InvalidFeedbackTokenError("feedback token is for another run")
        try:
            labels = RunLabels(
                str(body["p"]), str(body["v"]), str(body["l"]), str(body.get("s", "")),
                str(body.get("u", "")), int(body.get("a", 0)),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError):
            raise InvalidFeedbackTokenError("feedback token is malformed") from None
        recorded_by = body.get("i")
        return TokenClaims(
            labels, None if recorded_by is None else str(recorded_by), signed_at.timestamp()
        )

    @staticmethod
    def fingerprint(token: str) -> str:
        """A short id of a token, to remember that it was used."""
        return hashlib.sha256(token.encode()).hexdigest()[:32]
