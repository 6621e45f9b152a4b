"""Statistics over the simulator's runs (Wilson and order-statistic intervals,
:func:`summarise`) and the report: Markdown tables, the targets, the CSV and the plot."""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import binom, binomtest

from langchain_graylayer._tables import markdown_table
from langchain_graylayer.simulate.scenarios import SCENARIOS


def wilson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (``nan``s without trials)."""
    if n == 0:
        return math.nan, math.nan
    interval = binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    return float(interval.low), float(interval.high)


def median_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Distribution-free (order-statistic) interval of the median: ranks from Binomial(n, ½)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    ordered = sorted(values)
    low = int(binom.ppf((1 - level) / 2, n, 0.5))  # ranks low+1 .. n−low (1-based)
    if low < 1:
        return ordered[0], ordered[-1]  # too few values: the range (coverage < level)
    return ordered[low - 1], ordered[n - low]


def _rate(k: int, n: int) -> dict[str, Any]:
    low, high = wilson(k, n)
    return {"k": k, "n": n, "rate": k / n if n else math.nan, "ci95": [low, high]}


def _dist(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "median": None, "median_ci95": [None, None], "p90": None}
    low, high = median_ci(values)
    return {
        "n": len(values),
        "median": float(np.median(values)),
        "median_ci95": [float(low), float(high)],
        "p90": float(np.quantile(values, 0.9)),
    }


def _catch(run: dict[str, Any], srm_catches: bool) -> tuple[float, int, int, str] | None:
    """(hours, users exposed, in the affected layers, by what) of the first catch, if any."""
    srm = srm_catches and run.get("srm_hours") is not None
    if srm and (not run["flagged"] or run["srm_hours"] <= run["flag_hours"]):
        return run["srm_hours"], run["srm_exposed"], run["srm_exposed_affected"], "srm"
    if run["flagged"]:
        return (run["flag_hours"], run["flag_exposed"], run["flag_exposed_affected"],
                run["flag_reason"])  # fmt: skip
    return None


def summarise(runs: Sequence[dict[str, Any]], scenario: str, engine: str) -> dict[str, Any]:
    """Rates (Wilson 95 % CIs) and distributions (median with an order-statistic CI, p90).

    A bad candidate is *caught* when it is rolled back — or, for a routing or logging bug (S6,
    U3), when a sample-ratio alert holds it; *escaped* when it reached 100 % of every layer.
    """
    rows = [r for r in runs if r["scenario"] == scenario and r["engine"] == engine]
    n = len(rows)
    sc = SCENARIOS.get(scenario)
    outcomes = Counter(r["outcome"] for r in rows)
    routing_bug = bool(sc and (sc.lost_share or sc.heavy_skew))
    catches = [c for r in rows if (c := _catch(r, routing_bug))]
    full = [r for r in rows if r["outcome"] == "full"]
    where = Counter(
        f"{r['layer']}@{r['ratio']:g}" for r in rows if r["outcome"] == "rollback" and r["layer"]
    )
    stalled = Counter(str(r.get("stalled_rule")) for r in rows if r["outcome"] == "timeout")
    promotions: Counter[str] = Counter()
    for r in rows:
        promotions.update(r.get("promotions", {}))
    return {
        "scenario": scenario,
        "engine": engine,
        "bad": bool(sc.bad) if sc else None,
        "description": sc.description if sc else "",
        "seeds": n,
        "rollback": _rate(outcomes["rollback"], n),
        "full": _rate(outcomes["full"], n),
        "timeout": _rate(outcomes["timeout"], n),
        "caught": _rate(len(catches), n),
        "srm_alerted": _rate(sum(r["srm_alerts"] > 0 for r in rows), n),
        "silent_stalls": _rate(
            sum(r["outcome"] == "timeout" and not r.get("alerts") for r in rows), n
        ),
        "silent_rollbacks": sum(bool(r.get("silent")) for r in rows),
        "caught_by": dict(Counter(c[3] for c in catches).most_common()),
        "rollback_where": dict(where.most_common()),
        "exposed_at_catch": _dist([c[1] for c in catches]),
        "exposed_affected_at_catch": _dist([c[2] for c in catches]),
        "hours_to_catch": _dist([c[0] for c in catches]),
        "hours_to_full": _dist([r["hours"] for r in full]),
        "users_to_full": _dist([r["exposed"] for r in full]),
        "promotions": dict(promotions),
        "stalled_by": dict(stalled.most_common()),
        "seconds_per_run": float(np.mean([r["seconds"] for r in rows])) if rows else None,
    }


# ----------------------------------------------------------------------------- reporting
def _pct(rate: dict[str, Any]) -> str:
    low, high = rate["ci95"]
    if rate["n"] == 0:
        return "—"
    return f"{rate['rate']:.1%} [{low:.1%}, {high:.1%}] ({rate['k']}/{rate['n']})"


def _q(d: dict[str, Any], digits: int = 0) -> str:
    if d["median"] is None:
        return "—"
    low, high = d["median_ci95"]
    f = f",.{digits}f"
    return f"{d['median']:{f}} [{low:{f}}, {high:{f}}] / {d['p90']:{f}}"


def _top(counter: Mapping[str, int], k: int = 3) -> str:
    return ", ".join(f"{key} {value}" for key, value in list(counter.items())[:k]) or "—"


def tables(summaries: Sequence[dict[str, Any]]) -> str:
    """Markdown tables: good candidates, then bad ones."""
    good = [s for s in summaries if not s["bad"]]
    bad = [s for s in summaries if s["bad"]]
    out = []
    if good:
        rows = [
            (s["scenario"], s["engine"], s["seeds"], _pct(s["rollback"]),
             f"{s['srm_alerted']['rate']:.1%}", _pct(s["full"]), _q(s["hours_to_full"], 1),
             _q(s["users_to_full"]), _pct(s["silent_stalls"]), _top(s["caught_by"]))
            for s in good
        ]  # fmt: skip
        header = [
            "scenario", "engine", "seeds", "false rollback [95% CI]", "SRM alert",
            "reached 100% [95% CI]", "hours to 100%: median [CI] / p90",
            "users to 100%: median [CI] / p90", "stalled without an alert", "rolled back by",
        ]  # fmt: skip
        out += [
            "Good candidates (a rollback is a false rollback):",
            "",
            markdown_table(rows, header, align="llrlrlrrll"),
            "",
        ]
    if bad:
        bad_rows: list[tuple[object, ...]] = []
        for s in bad:
            affected = (
                _q(s["exposed_affected_at_catch"]) if s["scenario"] == "S3" else "(all layers)"
            )
            hours = s["hours_to_catch"]
            h = "—" if hours["median"] is None else f"{hours['median']:.1f} / {hours['p90']:.1f}"
            bad_rows.append((
                s["scenario"], s["engine"], s["seeds"], _pct(s["caught"]), _pct(s["full"]),
                f"{s['srm_alerted']['rate']:.1%}", _q(s["exposed_at_catch"]), affected, h,
                _top(s["caught_by"]),
            ))  # fmt: skip
        header = [
            "scenario", "engine", "seeds", "caught [95% CI]", "escape [95% CI]", "SRM alert",
            "users exposed when caught: median [CI] / p90", "in the affected layer",
            "hours to catch: median / p90", "caught by",
        ]  # fmt: skip
        out += [
            "Bad candidates (caught = rolled back, for S6 and U3 also held on a sample-ratio "
            "alert; escape = reached 100% of every layer):",
            "",
            markdown_table(bad_rows, header, align="llrllrrrrl"),
        ]
    return "\n".join(out)


def check_targets(summaries: Sequence[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(target, status, evidence) for ``ours``; status is met / missed / not run."""
    by = {(s["scenario"], s["engine"]): s for s in summaries}
    ours = {k[0]: v for k, v in by.items() if k[1] == "ours"}
    checks: list[tuple[str, str, str]] = []

    for sid, limit in (("U1", 0.02), ("U2", 0.02), ("S0", 0.01)):
        target = (
            f"{sid} A/A false rollbacks ≤ {limit:.0%} (Wilson upper ≤ {2 * limit:.0%}), ≥ 500 seeds"
        )
        aa = ours.get(sid)
        if aa is None:
            checks.append((target, "not run", f"no {sid}"))
            continue
        r = aa["rollback"]
        ok = r["rate"] <= limit and r["ci95"][1] <= 2 * limit
        status = ("met" if ok else "missed") + ("" if r["n"] >= 500 else " (< 500 seeds)")
        checks.append((target, status, _pct(r)))

    skew = ours.get("U3")
    if skew is not None:
        alerted, rolled = skew["srm_alerted"], skew["rollback"]
        ok = alerted["rate"] >= 0.95 and rolled["rate"] <= 0.02
        checks.append(("U3 routing skew: alert ≥ 95%, rollbacks ≤ 2%", "met" if ok else "missed",
                       f"alerted {_pct(alerted)}, rolled back {_pct(rolled)}"))  # fmt: skip

    drops = [s for s in ("S2-5", "S2-10", "S2-25", "S3", "U5", "T1") if s in ours]
    if drops:
        escapes = {s: ours[s]["full"]["k"] for s in drops}
        ok = not any(escapes.values())
        evidence = ", ".join(f"{s} {k}/{ours[s]['seeds']}" for s, k in escapes.items())
        checks.append(("no escape for drops ≥ 5 points", "met" if ok else "missed", evidence))
    else:
        checks.append(("no escape for drops ≥ 5 points", "not run", "no S2-5/10/25, S3"))

    for sid, target, limit in (
        ("S2-5", "−5 points: median users exposed below 2 500 (report)", 2500.0),
        ("S2-25", "−25 points: caught within 150 users exposed (median)", 150.0),
    ):
        if sid not in ours:
            checks.append((target, "not run", f"no {sid}"))
            continue
        d = ours[sid]["exposed_at_catch"]
        if d["median"] is None:
            checks.append((target, "missed", "never caught"))
            continue
        high = d["median_ci95"][1]
        ok = d["median"] <= limit if sid == "S2-25" else high < limit
        checks.append(
            (
                target,
                "met" if ok else "missed",
                f"median {_q(d)} (caught {_pct(ours[sid]['caught'])})",
            )
        )

    for sid in ("S0", "S1"):
        if sid not in ours:
            continue
        d = ours[sid]["hours_to_full"]
        share = ours[sid]["full"]
        ok = d["median"] is not None and d["median"] < 12 and share["rate"] > 0.5
        checks.append(
            (f"{sid}: good candidate at 100% of every layer in a median < 12 h",
             "met" if ok else "missed", f"hours {_q(d, 1)}; reached {_pct(share)}")
        )  # fmt: skip
    return checks


def write_csv(path: Path, summaries: Sequence[dict[str, Any]]) -> None:
    columns = [
        "scenario", "engine", "bad", "seeds", "rollback_rate", "rollback_lo", "rollback_hi",
        "full_rate", "full_lo", "full_hi", "caught_rate", "caught_lo", "caught_hi",
        "timeout_rate", "srm_alerted_rate", "exposed_median", "exposed_median_lo",
        "exposed_median_hi", "exposed_p90", "exposed_affected_median", "exposed_affected_p90",
        "hours_to_catch_median", "hours_to_full_median", "hours_to_full_lo", "hours_to_full_hi",
        "hours_to_full_p90", "users_to_full_median", "users_to_full_p90", "caught_by",
        "description",
    ]  # fmt: skip
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for s in summaries:
            e, a = s["exposed_at_catch"], s["exposed_affected_at_catch"]
            h, u = s["hours_to_full"], s["users_to_full"]
            writer.writerow([
                s["scenario"], s["engine"], s["bad"], s["seeds"],
                s["rollback"]["rate"], *s["rollback"]["ci95"],
                s["full"]["rate"], *s["full"]["ci95"],
                s["caught"]["rate"], *s["caught"]["ci95"],
                s["timeout"]["rate"], s["srm_alerted"]["rate"],
                e["median"], *e["median_ci95"], e["p90"], a["median"], a["p90"],
                s["hours_to_catch"]["median"], h["median"], *h["median_ci95"], h["p90"],
                u["median"], u["p90"],
                "; ".join(f"{k} {v}" for k, v in s["caught_by"].items()), s["description"],
            ])  # fmt: skip


def plot(path: Path, summaries: Sequence[dict[str, Any]]) -> bool:
    """Write ``simulate.png`` (:func:`~langchain_graylayer.simulate.plot.plot_summaries`).
    Returns False (and writes nothing) without matplotlib."""
    try:
        from langchain_graylayer.simulate.plot import plot_summaries

        plot_summaries(path, summaries)
    except ImportError:
        return False
    return True
