"""README.md must stay true: its code runs and its printed output is what the code prints."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

from langchain_graylayer.cli.main import main

README = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")


def test_use_it_example_runs_and_prints_what_the_readme_says() -> None:
    block = re.search(r"## Use it\n\n```python\n(.*?)```", README, re.S)
    assert block is not None
    code = block.group(1)
    expected = re.findall(r"^# (.*)$", code.split("print(", 1)[1], re.M)  # after the first print
    assert expected
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    assert out.getvalue().strip().splitlines() == expected


def test_quickstart_output_in_readme_is_current() -> None:
    block = re.search(r"```text\n(plan refund-agent-v2.*?)```", README, re.S)
    assert block is not None
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["quickstart", "--users", "5000", "--seed", "7"]) == 0
    assert out.getvalue().strip() == block.group(1).strip()


def test_ci_runs_the_test_command_the_readme_gives() -> None:
    quickstart = re.search(r"## Quickstart\n.*?```bash\n(.*?)```", README, re.S)
    assert quickstart is not None
    lines = [line.split("#")[0].strip() for line in quickstart.group(1).splitlines()]
    test_command = next(line for line in lines if "pytest" in line)
    ci = (Path(__file__).parents[2] / ".ci" / "run").read_text(encoding="utf-8")
    assert test_command in [line.strip() for line in ci.splitlines()]


def test_the_complete_plan_in_the_readme_is_the_example_file() -> None:
    block = re.search(r"is a complete plan:\n\n```yaml\n(.*?)```", README, re.S)
    assert block is not None
    example = Path(__file__).parents[2] / "examples" / "plan.yaml"
    assert block.group(1) == example.read_text(encoding="utf-8")
