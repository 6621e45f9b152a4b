"""Feedback tokens vouch for runs a router recorded (issue #15, item 2): issued only for a run in
the index, refused when their own index never recorded the run, trusted from another index."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from langchain_graylayer.errors import InvalidFeedbackTokenError, UnknownRunError
from langchain_graylayer.measuring.feedback import FeedbackRecorder, FeedbackSigner, RunIndex
from langchain_graylayer.measuring.labels import RunLabels
from langchain_graylayer.measuring.prometheus import GraylayerMetrics
from langchain_graylayer.store.memory import MemoryStore

LABELS = RunLabels("plan", "candidate", "vip")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def recorder(clock: Clock, max_runs: int = 100) -> FeedbackRecorder:
    index = RunIndex(ttl=3600, max_runs=max_runs, clock=clock)
    return FeedbackRecorder(GraylayerMetrics(registry=CollectorRegistry()), index)


def test_a_token_is_issued_only_for_a_recorded_run(clock: Clock) -> None:
    signer, feedback = FeedbackSigner(b"s" * 32, clock=clock), recorder(clock)
    assert feedback.token_for(signer, "never-ran") is None

    feedback.index.record("run-1", LABELS)
    token = feedback.token_for(signer, "run-1")

    assert token is not None
    claims = signer.claims(token, "run-1")
    assert (claims.labels, claims.recorded_by) == (LABELS, feedback.index.id)
    assert feedback.for_token(signer, MemoryStore(), token, "run-1", "bad") == LABELS


def test_a_token_of_this_index_for_a_run_it_never_recorded_is_refused(clock: Clock) -> None:
    signer, feedback = FeedbackSigner(b"s" * 32, clock=clock), recorder(clock)
    forged = signer.sign("ghost", LABELS, recorded_by=feedback.index.id)

    with pytest.raises(UnknownRunError, match="not a run this router recorded"):
        feedback.for_token(signer, MemoryStore(), forged, "ghost", "complaint")


def test_a_token_naming_no_index_is_refused(clock: Clock) -> None:
    signer, feedback = FeedbackSigner(b"s" * 32, clock=clock), recorder(clock)
    feedback.index.record("run-1", LABELS)

    with pytest.raises(InvalidFeedbackTokenError, match="not issued for a run that ran"):
        feedback.for_token(signer, MemoryStore(), signer.sign("run-1", LABELS), "run-1", "bad")


def test_a_token_whose_labels_differ_from_the_recorded_run_is_refused(clock: Clock) -> None:
    signer, feedback = FeedbackSigner(b"s" * 32, clock=clock), recorder(clock)
    feedback.index.record("run-1", RunLabels("plan", "stable", "vip"))
    token = signer.sign("run-1", LABELS, recorded_by=feedback.index.id)

    with pytest.raises(InvalidFeedbackTokenError, match="labels differ"):
        feedback.for_token(signer, MemoryStore(), token, "run-1", "complaint")


def test_a_token_of_another_index_is_trusted_for_its_signature(clock: Clock) -> None:
    signer = FeedbackSigner(b"s" * 32, clock=clock)
    here, there = recorder(clock), recorder(clock)
    there.index.record("run-1", LABELS)
    token = there.token_for(signer, "run-1")
    assert token is not None

    assert here.for_token(signer, MemoryStore(), token, "run-1", "good") == LABELS


def test_a_run_dropped_for_room_after_its_token_was_issued_still_counts(clock: Clock) -> None:
    """A full index forgets its oldest runs: their tokens stay good (the index cannot tell)."""
    signer, feedback = FeedbackSigner(b"s" * 32, clock=clock), recorder(clock, max_runs=2)
    feedback.index.record("run-1", LABELS)
    token = feedback.token_for(signer, "run-1")
    assert token is not None
    clock.now += 5
    feedback.index.record("run-2", LABELS)
    feedback.index.record("run-3", LABELS)  # run-1 makes room
    assert feedback.index.labels_of("run-1") is None

    assert feedback.for_token(signer, MemoryStore(), token, "run-1", "bad") == LABELS
    clock.now += 5  # issued after the last eviction: a missing run was never recorded
    ghost = signer.sign("ghost", LABELS, recorded_by=feedback.index.id)
    with pytest.raises(UnknownRunError):
        feedback.for_token(signer, MemoryStore(), ghost, "ghost", "bad")
