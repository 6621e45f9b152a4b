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
* ``ratio [LAYER] [--set R]``: a running server's served ratios, or move one through its
  controller (audited; nothing writes ratios to the store behind the controller's back);
* ``bucket SALT USER_ID``: the user's sticky bucket, for checking another implementation;
* ``redis-migrate --redis-url URL``: once after upgrading, move the plan keys to the
  cluster-safe key layout (idempotent; exit 1 while any old key is left);
* ``serve`` (:mod:`.serve`), and the clients of a running server's admin API ``status``,
  ``audit``, ``pause``, ``resume``, ``rollback``, ``promote``, ``restart`` (:mod:`.remote`).

The commands that run here are in :mod:`.local`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from langchain_graylayer.cli import local, remote, serve
from langchain_graylayer.errors import GraylayerError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="graylayer", description="Gray release of LangChain agents by user risk layer."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True)

    quick = sub.add_parser("quickstart", help="route synthetic users on the embedded defaults")
    quick.add_argument("--plan", help="plan YAML (default: the article's four layers)")
    quick.add_argument("--users", type=_positive, default=5000, help="default: %(default)s")
    quick.add_argument("--seed", type=int, default=7, help="random seed (default: %(default)s)")
    quick.set_defaults(func=local.quickstart)

    demo = sub.add_parser("demo", help="the article's case study: real agents, simulated days")
    demo.add_argument("--users", type=_positive, help="population (default 20000; --quick: 3000)")
    demo.add_argument(
        "--seed", type=int, default=7, help="the same seed, the same story (default: 7)"
    )
    demo.add_argument("--out", help="also write audit.json, timeline.csv, rollout.png here")
    demo.add_argument("--quick", action="store_true", help="a short run (seconds), for tests")
    demo.set_defaults(func=local.demo)

    validate = sub.add_parser("validate", help="check a plan file")
    validate.add_argument("plan")
    validate.set_defaults(func=local.validate)

    bucket_cmd = sub.add_parser("bucket", help="a user's sticky bucket in [0, 10000)")
    bucket_cmd.add_argument("salt")
    bucket_cmd.add_argument("user_id")
    bucket_cmd.set_defaults(func=local.bucket_command)

    migrate = sub.add_parser(
        "redis-migrate", help="move plan keys to the cluster-safe layout (once, after upgrading)"
    )
    migrate.add_argument(
        "--redis-url", required=True, help="redis://host:port/db, or redis+cluster://node:port"
    )
    migrate.add_argument("--prefix", default="graylayer", help="key prefix (default: %(default)s)")
    migrate.set_defaults(func=local.redis_migrate)
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
    _quiet_logs(args.debug)
    try:
        return int(args.func(args))
    except GraylayerError as exc:
        print(f"graylayer: error: {exc}", file=sys.stderr)
        for note in getattr(exc, "__notes__", []):
            print(f"  {note}", file=sys.stderr)
        return 2
    except Exception as exc:  # one line, not a traceback (--debug shows it)
        if args.debug:
            raise
        print(f"graylayer: error: {type(exc).__name__}: {exc} (--debug for the traceback)",
              file=sys.stderr)  # fmt: skip
        return 1


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"a whole number of users, 1 or more, not {text!r}")
    return value


def _quiet_logs(debug: bool) -> None:
    """Warnings as one line each (a traceback only with ``--debug``)."""

    class OneLine(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            if not debug:
                record.exc_info, record.exc_text = None, None
            return super().format(record)

    handler = logging.StreamHandler()
    handler.setFormatter(OneLine("graylayer: %(levelname)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, handlers=[handler])
