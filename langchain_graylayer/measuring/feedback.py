"""User feedback, from its arrival to its count: kinds, validation, attribution and replay checks.

Feedback arrives after the run, by run id. It is counted under the labels of the run that served
it, and only for runs that ran:

* :class:`RunIndex` remembers ``run id → labels`` for the runs a router served (bounded, expiring);
  :meth:`FeedbackRecorder.for_run` counts feedback for a run it finds there, and refuses the rest;
* behind a server with many replicas, a :class:`FeedbackSigner` token (issued with the response
  of a run that ran) carries the labels, so any replica can count it; :meth:`FeedbackRecorder.
  for_token` verifies it and claims its nonce in the store, so a token counts once.

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
import threading
import time
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
        self._runs: ExpiringLRU[str, tuple[str, str, str, str, str, int]] = ExpiringLRU(
            max_runs, clock
        )
        self._lock = threading.Lock()

    def record(self, run_id: str, labels: RunLabels) -> None:
        served = (labels.plan, labels.version, labels.layer, labels.step, labels.unit,
                  labels.activity)  # fmt: skip
        with self._lock:
            self._runs.set(run_id, served, self.ttl)

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

        Raises:
            InvalidFeedbackTokenError: forged, malformed, expired, for another run, or used before.
            ConfigurationError: a bad kind or score; nothing is counted and the token stays unused.
            StoreError: the nonce could not be claimed; nothing is counted.
        """
        checked = check_feedback(kind, score)
        labels = signer.verify(token, run_id)
        if not nonces.claim_once(f"feedback:{signer.fingerprint(token)}", signer.ttl):
            raise FeedbackTokenReusedError("this token was already used")
        self._count(labels, checked, score)
        return labels

    def _count(self, labels: RunLabels, kind: FeedbackKind | None, score: float | None) -> None:
        for sink in (self.metrics, self.evidence):
            if sink is not None:
                sink.record_feedback(labels, kind, score)


class FeedbackSigner:
    """Signs and verifies feedback tokens over the run id and the labels that served it.

    The token carries its labels and its age, so feedback can be counted on any replica without
    shared state, and cannot be pointed at another version. Signing is ``itsdangerous``' timed
    serializer (HMAC-SHA256), in the ``serve`` extra.

    Example:
        >>> signer = FeedbackSigner(b"k" * 32, ttl=60, clock=lambda: 1000.0)
        >>> labels = RunLabels("refund-v2", "candidate", "normal")
        >>> token = signer.sign("run-1", labels)
        >>> signer.verify(token, "run-1") == labels
        True
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

    def sign(self, run_id: str, labels: RunLabels) -> str:
        body = {"r": run_id, "p": labels.plan, "v": labels.version, "l": labels.layer,
                "s": labels.step, "u": labels.unit, "a": labels.activity}  # fmt: skip
        return str(self._serializer.dumps(body))

    def verify(self, token: str, run_id: str) -> RunLabels:
        """The labels inside a valid token for ``run_id``.

        Raises:
            InvalidFeedbackTokenError: forged, malformed, expired or for another run.
        """
        from itsdangerous import BadSignature, SignatureExpired

        try:
            body = self._serializer.loads(token, max_age=self.ttl)
        except SignatureExpired:
            raise InvalidFeedbackTokenError("feedback token has expired") from None
        except BadSignature:
            raise InvalidFeedbackTokenError("feedback token signature does not match") from None
        if not isinstance(body, dict) or body.get("r") != run_id:
            raise InvalidFeedbackTokenError("feedback token is for another run")
        return RunLabels(
            str(body["p"]), str(body["v"]), str(body["l"]), str(body.get("s", "")),
            str(body.get("u", "")), int(body.get("a", 0)),
        )  # fmt: skip

    @staticmethod
    def fingerprint(token: str) -> str:
        """A short id of a token, to remember that it was used."""
        return hashlib.sha256(token.encode()).hexdigest()[:32]
