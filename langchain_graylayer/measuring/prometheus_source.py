"""Per-arm statistics read back from Prometheus: the controller's view of every replica at once.

:class:`PrometheusSource` is a :class:`~langchain_graylayer.judging.readmodel.MetricSource` over
Prometheus' HTTP API, written with the standard library only. Each ``graylayer_*`` family is one
query that sums ``increase()`` over the window by layer and version, across every replica
Prometheus scrapes::

    sum by (layer, version, outcome) (increase(graylayer_requests_total{plan="refund-v2"}[3600s]))

An outage never looks like an arm without traffic: when any query fails, the snapshot has no arms
and ``error`` says why. Every label value is escaped, so a plan id cannot inject PromQL.
"""

from __future__ import annotations

import http.client
import json
import math
import re
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, cast
from urllib.parse import urlencode

from langchain_graylayer.errors import ConfigurationError
from langchain_graylayer.judging.readmodel import ArmStats, LatencySummary, Snapshot
from langchain_graylayer.plan.plan import Version

__all__ = ["PrometheusSource", "escape_label_value"]

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# A PromQL string ends at an unescaped quote or a raw newline; backslashes are escaped too, so
# a value ending in `\` cannot escape the closing quote.
_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r"})


def escape_label_value(value: str) -> str:
    r"""``value`` escaped for the inside of a double-quoted PromQL string.

    Backslash, double quote, newline and carriage return are escaped, so the value always stays
    one string literal (it cannot close the matcher and append PromQL of its own).

    Example:
        >>> print(escape_label_value('a"b\\c\nd'))
        a\"b\\c\nd
    """
    return value.translate(_ESCAPES)


class _Family(NamedTuple):
    """One query: a metric, the extra label it is grouped by, and what it fills: by the value of
    that label, count fields (``fields``); else the field ``key`` (a float sum if ``*_sum``)."""

    key: str
    metric: str
    by: str | None = None
    fields: Mapping[str, tuple[str, ...]] | None = None


_FAMILIES: tuple[_Family, ...] = (
    _Family("requests", "graylayer_requests_total", "outcome", {
        "ok": ("requests",), "error": ("requests", "errors"), "fallback": ("requests", "fallbacks"),
    }),
    _Family("completions", "graylayer_task_completions_total"),
    _Family("tool_calls", "graylayer_tool_results_total", "status", {
        "ok": ("tool_calls",), "error": ("tool_calls", "tool_errors"),
    }),
    _Family("tokens", "graylayer_tokens_total", "direction", {
        "input": ("input_tokens",), "output": ("output_tokens",),
    }),
    _Family("feedback", "graylayer_feedback_total", "kind", {
        "bad": ("feedback_bad",), "complaint": ("feedback_complaint",), "good": ("feedback_good",),
    }),
    _Family("feedback_score_count", "graylayer_feedback_score_count"),
    _Family("feedback_score_sum", "graylayer_feedback_score_sum"),
    _Family("latency_buckets", "graylayer_request_duration_seconds_bucket", "le"),
    _Family("latency_count", "graylayer_request_duration_seconds_count"),
    _Family("latency_sum", "graylayer_request_duration_seconds_sum"),
)  # fmt: skip


class _Arm:
    """What the answers say about one arm so far."""

    __slots__ = ("buckets", "counts", "sums")

    def __init__(self) -> None:
        self.counts: defaultdict[str, int] = defaultdict(int)
        self.sums: defaultdict[str, float] = defaultdict(float)
        self.buckets: defaultdict[float, int] = defaultdict(int)

    def add(self, family: _Family, labels: Mapping[str, str], value: float) -> None:
        """Raises ``LookupError``/``ValueError`` for a bucket without a numeric ``le``."""
        if family.by == "le":
            self.buckets[float(labels["le"])] += round(value)  # "+Inf" included
        elif family.fields is not None and family.by is not None:
            for name in family.fields.get(labels.get(family.by, ""), ()):  # unknown: ignored
                self.counts[name] += round(value)
        elif family.key.endswith("_sum"):
            self.sums[family.key] += value
        else:
            self.counts[family.key] += round(value)

    def stats(self) -> ArmStats:
        counts = dict(self.counts)
        latency_count = counts.pop("latency_count", 0)
        cumulative, running = [], 0
        for bound in sorted(self.buckets):  # rounding must not make a histogram decrease
            running = max(running, self.buckets[bound])
            cumulative.append((bound, running))
        latency = LatencySummary(latency_count, self.sums["latency_sum"], tuple(cumulative))
        score_sum = self.sums["feedback_score_sum"]
        return ArmStats(**counts, feedback_score_sum=score_sum, latency=latency)


class _QueryFailed(Exception):
    """Prometheus could not answer, or answered something that is not a query result."""


class PrometheusSource:
    """Reads per-(layer, version) statistics of a plan from a Prometheus server.

    Counts are ``increase()`` over the window summed over every scraped replica, rounded to
    integers (``increase()`` extrapolates a little); latency and score sums stay floats. An arm
    with no series in the window is absent (no data); an arm whose series exist but did not move
    is present with zeros (no traffic). Series with a ``version`` other than stable or candidate
    are ignored.

    Example:
        >>> source = PrometheusSource("http://127.0.0.1:9", matchers={"job": "agents"}, timeout=1)
        >>> print(source.queries("p", 60)["completions"])  # doctest: +ELLIPSIS
        sum by (layer, version) (increase(..._completions_total{plan="p",job="agents"}[60s]))
        >>> snapshot = source.snapshot("p", 60)  # nothing listens on port 9
        >>> snapshot.arms, snapshot.error.startswith("Prometheus at http://127.0.0.1:9")
        ({}, True)
    """

    def __init__(
        self,
        url: str,
        *,
        matchers: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Point the source at a server.

        Args:
            url: the server's base URL, e.g. ``http://prometheus:9090`` (a path prefix is kept).
            matchers: extra equality matchers on every query, e.g. ``{"job": "agents"}``.
            headers: sent with every request, e.g. ``{"Authorization": "Bearer <token>"}``.
            timeout: seconds to wait on each connect and each read.
            clock: the evaluation instant of a snapshot (POSIX seconds); all of a snapshot's
                queries are evaluated at the same instant, so the families agree.

        Raises:
            ConfigurationError: a URL that is not http(s), a matcher name that is not a
                Prometheus label name, a ``plan`` matcher, or a timeout that is not positive.
        """
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError("url", url, "an http:// or https:// URL of Prometheus")
        if not (isinstance(timeout, int | float) and timeout > 0):
            raise ConfigurationError("timeout", timeout, "a positive number of seconds")
        for name, value in (matchers or {}).items():
            if not isinstance(name, str) or not _LABEL_NAME.match(name) or name == "plan":
                expected = "label names [a-zA-Z_][a-zA-Z0-9_]* other than 'plan' (a snapshot's)"
                raise ConfigurationError("matchers", name, expected)
            if not isinstance(value, str):
                raise ConfigurationError(f"matchers[{name!r}]", value, "a string label value")
        self.url = url.rstrip("/")
        self.matchers = dict(matchers or {})
        self.timeout = float(timeout)
        self.clock = clock
        self._headers = {"Accept": "application/json", **(headers or {})}

    def __repr__(self) -> str:  # headers may hold a token: never shown
        return f"PrometheusSource({self.url!r}, matchers={self.matchers!r})"

    def queries(self, plan_id: str, window: float) -> dict[str, str]:
        """The PromQL of each family for ``plan_id`` over ``window`` seconds, by family key.

        Raises:
            ConfigurationError: ``window`` is not a positive, finite number.
        """
        pairs = [("plan", plan_id), *self.matchers.items()]
        selector = ",".join(f'{name}="{escape_label_value(value)}"' for name, value in pairs)
        duration = _promql_duration(window)
        return {
            family.key: f"sum by (layer, version{f', {family.by}' if family.by else ''}) "
            f"(increase({family.metric}{{{selector}}}[{duration}]))"
            for family in _FAMILIES
        }

    def snapshot(self, plan_id: str, window: float) -> Snapshot:
        """Statistics per (layer, version) of ``plan_id`` over the last ``window`` seconds.

        Never raises for an unreachable or failing server: the snapshot then has no arms and
        ``error`` names the URL, the failed query and the reason.
        """
        queries = self.queries(plan_id, window)
        at = f"{self.clock():.3f}"
        arms: dict[tuple[str, Version], _Arm] = {}
        for family in _FAMILIES:
            try:
                for labels, value in self._query(queries[family.key], at):
                    try:
                        key = (labels["layer"], Version(labels["version"]))
                    except (KeyError, ValueError):  # not an arm of the Version vocabulary
                        continue
                    arms.setdefault(key, _Arm()).add(family, labels, value)
            except (_QueryFailed, LookupError, ValueError) as exc:  # the last two: a bad "le"
                error = f"Prometheus at {self.url}: the {family.key} query failed: {exc}"
                return Snapshot(plan_id, window, {}, error=error)
        return Snapshot(plan_id, window, {key: arm.stats() for key, arm in arms.items()})

    # -- HTTP ------------------------------------------------------------------------------
    def _get(self, path: str, params: Mapping[str, str] | None = None) -> bytes:
        url = self.url + path + (f"?{urlencode(params)}" if params else "")
        request = urllib.request.Request(url, headers=self._headers)
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            return cast(bytes, response.read())

    def _query(self, promql: str, at: str) -> list[tuple[dict[str, str], float]]:
        try:
            body = self._get("/api/v1/query", {"query": promql, "time": at})
        except urllib.error.HTTPError as exc:
            with exc:
                raise _QueryFailed(f"HTTP {exc.code}{_api_error(exc.read())}") from None
        except (OSError, ValueError, http.client.HTTPException) as exc:  # refused, timeout, TLS
            raise _QueryFailed(f"{type(exc).__name__}: {exc}") from None
        try:
            answer = json.loads(body)
        except ValueError as exc:
            raise _QueryFailed(f"the answer is not JSON ({exc})") from None
        return _vector(answer)


def _promql_duration(window: float) -> str:
    """Whole seconds, rounded up (so at least ``1s``)."""
    number = isinstance(window, int | float) and not isinstance(window, bool)
    if not (number and math.isfinite(window) and window > 0):
        raise ConfigurationError("window", window, "a positive, finite number of seconds")
    return f"{math.ceil(window)}s"


def _api_error(body: bytes) -> str:
    """``": <errorType>: <error>"`` from an API error body, or ``""``."""
    try:
        answer = json.loads(body)
        return f": {answer.get('errorType', 'error')}: {answer['error']}"
    except (ValueError, LookupError, TypeError, AttributeError):
        return ""


def _vector(answer: Any) -> list[tuple[dict[str, str], float]]:
    """The ``(labels, value)`` pairs of an instant-vector answer.

    Raises:
        _QueryFailed: an error status, or anything that is not an instant vector of finite values.
    """
    try:
        if answer["status"] != "success":
            reason = f"{answer.get('errorType', 'error')}: {answer.get('error', 'no reason')}"
            raise _QueryFailed(f"status {answer['status']!r} ({reason})")
        if answer["data"]["resultType"] != "vector":
            raise _QueryFailed(f"a {answer['data']['resultType']!r} answer, not a vector")
        return [_series(item) for item in answer["data"]["result"]]
    except (LookupError, TypeError, ValueError, AttributeError) as exc:
        raise _QueryFailed(f"malformed answer ({type(exc).__name__}: {exc})") from None


def _series(item: Any) -> tuple[dict[str, str], float]:
    if not isinstance(item["value"], list):
        raise TypeError(f"value {item['value']!r} is not a [time, value] pair")
    _, raw = item["value"]
    number = float(raw)
    if not math.isfinite(number):
        raise ValueError(f"non-finite value {raw!r} for {item['metric']}")
    return {str(k): str(v) for k, v in item["metric"].items()}, number
