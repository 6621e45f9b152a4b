"""Rollout simulator: the product's own controller against the article's QoS rule, Monte Carlo.

``graylayer simulate`` (or ``python -m langchain_graylayer.simulate``) rolls synthetic candidates
out over a synthetic population of returning users, layer by layer, and measures how often a
good candidate is rolled back by mistake, how often a bad one reaches every user, how many users
a bad candidate reaches before it is stopped and how long a good one takes to reach 100 %.

Only traffic and outcomes are synthetic (:mod:`~langchain_graylayer.simulate.traffic` says how
they are drawn: returning users who differ, heavy-tailed activity, sessions, a daily cycle per
layer, sticky buckets, late feedback). The ``ours`` engine is the product itself: a real
:class:`~langchain_graylayer.rollout.controller.RolloutController` on a real ``MemoryStore``
(:class:`~langchain_graylayer.simulate.traffic.SimStore`, whose per-user evidence is the
traffic's) and a fake clock; every verdict is the product's judge with the plan's gates. The
``article`` engine is the article's rule around the library's QoS score: at the end of every
60-minute window of a step, the candidate's QoS over that window (high-risk weights
0.3/0.2/0.5) decides — < 0.6 roll back, < 0.8 hold, else one step up — and missing data reads
as zeros.

Scenarios: S0 A/A, S1 better, S2-2/5/10/25 completion drops, S3 −10 points in ``normal`` only,
S4 a latency tail, S5 tool-failure bursts, S6 a logging bug, S7 daily completion swings and an
upstream outage, S8 late bad feedback; U1/U2 A/A on the default plan at per-user correlation
0.3 and 0.1, U3 a routing bug that sends heavy users to the candidate, U4 late complaints ×5 in
the protected layers only, U5 a −5-point drop on the default plan; T1/T2 tiny traffic (50
sessions an hour) with a −10-point drop and A/A; C1 a candidate at 1.5× the tokens, C2 at 1.1×
and C0 an A/A with heavy-tailed per-user cost, on a plan with a +20 % cost budget.

Both engines of a seed draw from ``numpy.random.default_rng([base_seed, seed, scenario])``: the
same population, and the same draws until their ratios first differ.
"""

from langchain_graylayer.simulate.cli import build_parser as build_parser
from langchain_graylayer.simulate.cli import main
from langchain_graylayer.simulate.engines import (
    ENGINES,
    PlanKnobs,
    SimConfig,
    article_qos,
    make_plan,
    run_article,
    run_one,
    run_ours,
    simulate,
)
from langchain_graylayer.simulate.report import median_ci, summarise, wilson
from langchain_graylayer.simulate.scenarios import QUICK_SCENARIOS, SCENARIOS, Scenario
from langchain_graylayer.simulate.traffic import Clock, Population, SimStore, Traffic

__all__ = [
    "ENGINES",
    "QUICK_SCENARIOS",
    "SCENARIOS",
    "Clock",
    "PlanKnobs",
    "Population",
    "Scenario",
    "SimConfig",
    "SimStore",
    "Traffic",
    "article_qos",
    "build_parser",
    "main",
    "make_plan",
    "median_ci",
    "run_article",
    "run_one",
    "run_ours",
    "simulate",
    "summarise",
    "wilson",
]
