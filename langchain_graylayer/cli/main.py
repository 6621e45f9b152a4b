"""The ``graylayer`` command.

Subcommands:

* ``quickstart``: route a synthetic population through a real GrayRouter on the embedded defaults
  (no servers) and show the split per layer, session pinning, explanations and fallback;
* ``demo``: the article's case study in simulated days, on real ``create_agent`` agents: a bad
  candidate rolled back in the normal layer, then the fix rolled out to every layer;
* ``simulate``: Monte-Carlo rollouts of synthetic candidates through the real controller
  against the article's QoS rule (``graylayer simulate --help``);
* ``validate PLAN``: load a plan file and print its layers, or the error that makes it invalid;
* ``route USER_ID``: which version a user gets and why (``--redis-url`` reads live state,
  ``--url`` asks a running server);
* ``ratio LAYER [RATIO]``: read or set a layer's ratio in a Redis store;
* ``bucket SALT USER_ID``: the user's sticky bucket, for checking another implementation;
* ``serve`` (:mod:`.serve`), and the clients of a running server's admin API ``status``,
  ``audit``, ``pause``, ``resume``, ``rollback``, ``promote`` (:mod:`.remote`).

The commands that run here are in :mod:`.local`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from langchain_graylayer.cli import local, remote, serve
from langchain_graylayer.errors import GraylayerError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="graylayer", description="Gray release of LangChain agents by user risk layer."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    quick = sub.add_parser("quickstart", help="route synthetic users on the embedded defaults")
    quick.add_argument("--plan", help="plan YAML (default: the article's four layers)")
    quick.add_argument("--users", type=int, default=5000)
    quick.add_argument("--seed", type=int, default=7)
    quick.set_defaults(func=local.quickstart)

    demo = sub.add_parser("demo", help="the article's case study: real agents, simulated days")
    demo.add_argument("--users", type=int, help="population (default 20000; --quick: 3000)")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--out", help="also write audit.json, timeline.csv, rollout.png here")
    demo.add_argument("--quick", action="store_true", help="a short run (seconds), for tests")
    demo.set_defaults(func=local.demo)

    validate = sub.add_parser("validate", help="check a plan file")
    validate.add_argument("plan")
    validate.set_defaults(func=local.validate)

    for name, func, help_text in [
        ("route", local.route, "which version a user gets, and why"),
        ("ratio", local.ratio, "read or set layer ratios in a Redis store"),
    ]:
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("--plan", help="plan YAML (default: the four default layers)")
        cmd.add_argument("--plan-id", default="default", help="plan id when --plan is not given")
        cmd.add_argument("--redis-url", help="read live state from Redis (default: empty memory)")
        cmd.set_defaults(func=func)
        if name == "route":
            cmd.add_argument("user_id")
            cmd.add_argument("--session", help="a session id, to see its pin")
            cmd.add_argument("--json", action="store_true", help="machine-readable output")
            remote.add_client_options(cmd, json_flag=False)
        else:
            cmd.add_argument("layer", nargs="?", help="one layer (default: all)")
            cmd.add_argument("--set", type=float, metavar="RATIO", help="set the layer's ratio")

    bucket_cmd = sub.add_parser("bucket", help="a user's sticky bucket in [0, 10000)")
    bucket_cmd.add_argument("salt")
    bucket_cmd.add_argument("user_id")
    bucket_cmd.set_defaults(func=local.bucket_command)
    # `graylayer simulate` parses its own options in .simulate, imported only when it runs
    # ("+" as the prefix character passes every "-"/"--" argument through untouched)
    simulate = sub.add_parser(
        "simulate",
        help="Monte-Carlo rollouts: the real controller vs the article's rule (simulate -h)",
        add_help=False,
        prefix_chars="+",
    )
    simulate.add_argument("simulate_args", nargs=argparse.REMAINDER)

    def _simulate(args: argparse.Namespace) -> int:
        try:
            from langchain_graylayer.simulate import main as simulate_main
        except ImportError as exc:  # numpy and scipy are in the [simulate] extra
            print(f"graylayer simulate needs its extra ({exc}): "
                  "pip install 'langchain-graylayer[simulate]'")  # fmt: skip
            return 2
        return simulate_main(args.simulate_args)

    simulate.set_defaults(func=_simulate)
    serve.register(sub)
    remote.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``graylayer`` console script."""
    args = _parser().parse_args(argv)
    if getattr(args, "set", None) is not None and not getattr(args, "layer", None):
        print("graylayer: error: --set needs a LAYER", file=sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except GraylayerError as exc:
        print(f"graylayer: error: {exc}", file=sys.stderr)
        for note in getattr(exc, "__notes__", []):
            print(f"  {note}", file=sys.stderr)
        return 2
