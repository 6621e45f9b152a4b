"""Rollout simulator: the product's own controller against the article's QoS rule, Monte Carlo.

``graylayer simulate`` (or ``python -m langchain_graylayer.simulate``) rolls synthetic candidates
out over a synthetic population, layer by layer, and measures how often a good candidate is
rolled back by mistake, how often a bad one reaches every user, how many users a bad candidate
reaches before it is stopped and how long a good one takes to reach 100 % (notes/stats.md §7,
SPEC §5 and §7).

Only traffic and outcomes are synthetic. The ``ours`` engine is the product itself: a real
:class:`~langchain_graylayer.controller.RolloutController` with a real
:class:`~langchain_graylayer.store.memory.MemoryStore`, a fake clock and a ``MetricSource``
(:class:`SyntheticSource`) that serves the generated counts as ``ArmStats`` over exactly the
window the controller asks for; every verdict is :func:`~langchain_graylayer.judge.judge` called
by the controller with the plan's gates. The ``article`` engine is the article's rule around the
library's :func:`~langchain_graylayer.qos.qos_score`: at the end of every 60-minute window of a
step, the candidate's QoS over that window (high-risk weights 0.3/0.2/0.5) decides — < 0.6 roll
back, < 0.8 hold, else one step up — and missing data reads as zeros (an hour without candidate
traffic scores 0.56 and rolls back).

Traffic is drawn per 5-minute tick and per (layer, arm) as binomial / Poisson / multinomial
counts, never per request: users arrive as a Poisson process (3 000/h by default), layers
internal 0.5 %, early_adopter 10 %, normal 70 %, high_value 15 %, vip 4.5 % (the article's case
study), each user makes ``1 + Poisson(1.5)`` requests (stats.md §7.1), and per request: task
completion Bernoulli(0.85), error 0.02, tool calls Poisson(3) each succeeding with 0.97, latency
LogNormal(ln 2 s, 0.67) as Prometheus histogram buckets (multinomial over the buckets, the sum from
the buckets' conditional means), feedback from 20 % of requests of which 5 % bad, complaints
0.5 %. The candidate of a layer is a binomial share (the layer's ratio) of its arriving users.

Scenarios: S0 A/A, S1 better (+3 points of completion), S2-2/5/10/25 global completion drops, S3
−10 points in ``normal`` only, S4 a latency tail (4 % of candidate requests +10 s), S5 tool
failure bursts (success 0.70 for 20 minutes every 2 h, random phase), S6 a sample-ratio bug (10 %
of candidate requests reach users but are never logged), S7 non-stationarity (±5 points diurnal
completion and a 30-minute upstream outage, both arms alike), S8 delayed feedback (candidate bad
feedback 5 % → 10 % of feedback, all feedback arriving 0–6 h late).

Both engines of a seed draw from ``numpy.random.default_rng([base_seed, seed, scenario])`` in the
same order, so they see the same arrivals and identical draws until their ratios first differ.
"""

# The package's modules: traffic (population, scenarios, synthetic traffic and its metric
# source), engines (the plan, the two engines, the runner), report (statistics, tables, files)
# and cli (``graylayer simulate``). ``__all__`` is the public API; the ``name as name`` imports
# keep the other names importable from here, for the tests, the benchmarks and typed callers.
from langchain_graylayer.simulate.cli import build_parser as build_parser
from langchain_graylayer.simulate.cli import main
from langchain_graylayer.simulate.engines import DEFAULT_MAX_STEP as DEFAULT_MAX_STEP
from langchain_graylayer.simulate.engines import DEFAULT_STEPS as DEFAULT_STEPS
from langchain_graylayer.simulate.engines import (
    ENGINES,
    PlanKnobs,
    article_qos,
    make_plan,
    run_article,
    run_ours,
    simulate,
)
from langchain_graylayer.simulate.engines import SimConfig as SimConfig
from langchain_graylayer.simulate.engines import describe_plan as describe_plan
from langchain_graylayer.simulate.engines import run_one as run_one
from langchain_graylayer.simulate.engines import scenario_key as scenario_key
from langchain_graylayer.simulate.report import check_targets as check_targets
from langchain_graylayer.simulate.report import median_ci, summarise, wilson
from langchain_graylayer.simulate.report import plot as plot
from langchain_graylayer.simulate.report import tables as tables
from langchain_graylayer.simulate.report import write_csv as write_csv
from langchain_graylayer.simulate.traffic import BOUNDS as BOUNDS
from langchain_graylayer.simulate.traffic import CANDIDATE as CANDIDATE
from langchain_graylayer.simulate.traffic import COMPLAINT as COMPLAINT
from langchain_graylayer.simulate.traffic import CUMULATIVE_BOUNDS as CUMULATIVE_BOUNDS
from langchain_graylayer.simulate.traffic import DONE as DONE
from langchain_graylayer.simulate.traffic import EPOCH as EPOCH
from langchain_graylayer.simulate.traffic import ERR as ERR
from langchain_graylayer.simulate.traffic import FB_BAD as FB_BAD
from langchain_graylayer.simulate.traffic import FB_GOOD as FB_GOOD
from langchain_graylayer.simulate.traffic import HIST as HIST
from langchain_graylayer.simulate.traffic import LAT_SUM as LAT_SUM
from langchain_graylayer.simulate.traffic import LAYERS as LAYERS
from langchain_graylayer.simulate.traffic import N_BINS as N_BINS
from langchain_graylayer.simulate.traffic import N_FIELDS as N_FIELDS
from langchain_graylayer.simulate.traffic import PLAN_ID as PLAN_ID
from langchain_graylayer.simulate.traffic import QUICK_SCENARIOS as QUICK_SCENARIOS
from langchain_graylayer.simulate.traffic import REQ as REQ
from langchain_graylayer.simulate.traffic import (
    SCENARIOS,
    Clock,
    Population,
    Scenario,
    SyntheticSource,
    Traffic,
    arm_stats,
)
from langchain_graylayer.simulate.traffic import SHARES as SHARES
from langchain_graylayer.simulate.traffic import STABLE as STABLE
from langchain_graylayer.simulate.traffic import TICK as TICK
from langchain_graylayer.simulate.traffic import TOOL_ERR as TOOL_ERR
from langchain_graylayer.simulate.traffic import TOOLS as TOOLS
from langchain_graylayer.simulate.traffic import WINDOW_TICKS as WINDOW_TICKS
from langchain_graylayer.simulate.traffic import Array as Array

__all__ = [
    "ENGINES",
    "SCENARIOS",
    "Clock",
    "PlanKnobs",
    "Population",
    "Scenario",
    "SyntheticSource",
    "Traffic",
    "arm_stats",
    "article_qos",
    "main",
    "make_plan",
    "median_ci",
    "run_article",
    "run_ours",
    "simulate",
    "summarise",
    "wilson",
]
