"""Feedback: its kinds, checking it, signing and verifying feedback tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable

from langchain_graylayer._compat import StrEnum
from langchain_graylayer.errors import ConfigurationError, InvalidFeedbackTokenError
from langchain_graylayer.measuring.labels import RunLabels

__all__ = ["FeedbackKind", "FeedbackSigner", "check_feedback"]


class FeedbackKind(StrEnum):
    """Kinds of later user feedback."""

    BAD = "bad"
    COMPLAINT = "complaint"
    GOOD = "good"


def check_feedback(kind: FeedbackKind | str | None, score: float | None) -> FeedbackKind | None:
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


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class FeedbackSigner:
    """Signs and verifies feedback tokens: ``base64(payload).base64(HMAC-SHA256)``.

    The payload carries the run id, the labels that served it and an expiry, so feedback can be
    counted on any replica without shared state, and cannot be pointed at another version.

    Example:
        >>> signer = FeedbackSigner(b"k" * 32, ttl=60, clock=lambda: 1000.0)
        >>> labels = RunLabels("refund-v2", "candidate", "normal")
        >>> token = signer.sign("run-1", labels)
        >>> signer.verify(token, "run-1") == labels
        True
    """

    def __init__(
        self, secret: bytes, *, ttl: float = 7 * 86400.0, clock: Callable[[], float] = time.time
    ) -> None:
        if len(secret) < 16:
            raise ConfigurationError("feedback_secret", "<hidden>", "at least 16 bytes")
        self._keyed = hmac.new(secret, digestmod=hashlib.sha256)  # copied per token: no re-keying
        self.ttl = ttl
        self.clock = clock

    def _mac(self, payload: bytes) -> bytes:
        mac = self._keyed.copy()
        mac.update(payload)
        return mac.digest()

    def sign(self, run_id: str, labels: RunLabels) -> str:
        body = {"r": run_id, "p": labels.plan, "v": labels.version, "l": labels.layer,
                "e": int(self.clock() + self.ttl)}  # fmt: skip
        payload = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def verify(self, token: str, run_id: str) -> RunLabels:
        """The labels inside a valid token for ``run_id``.

        Raises:
            InvalidFeedbackTokenError: forged, malformed, expired or for another run.
        """
        try:
            encoded, signature = token.split(".")
            payload = _unb64(encoded)
            valid = hmac.compare_digest(self._mac(payload), _unb64(signature))
            body = json.loads(payload) if valid else None
        except (ValueError, TypeError):
            raise InvalidFeedbackTokenError("malformed feedback token") from None
        if body is None:
            raise InvalidFeedbackTokenError("feedback token signature does not match")
        if body.get("r") != run_id:
            raise InvalidFeedbackTokenError("feedback token is for another run")
        if float(body.get("e", 0)) < self.clock():
            raise InvalidFeedbackTokenError("feedback token has expired")
        return RunLabels(str(body["p"]), str(body["v"]), str(body["l"]))

    @staticmethod
    def fingerprint(token: str) -> str:
        """A short id of a token, to remember that it was used."""
        return hashlib.sha256(token.encode()).hexdigest()[:32]
