"""Every command the README shows works as written: the suite's are collected (``--co``: the
options parsed and the cells expanded, nothing run), the others' arguments parsed by their own
parsers, and ``python -m tasks list`` run. A README example that drifts from the code fails."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
SUITE = re.compile(r"(?:^|\s)(?:pytest bench --benchmark-only|\.venv/bin/tox -e bench(?: --)?)(.*)")


def _commands() -> list[str]:
    """Shell lines of the README's bash blocks (continuations joined) and inline `...` commands."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").split("\n"):
            line = re.split(r"\s#\s", line)[0].strip()
            if line and not line.startswith("#"):
                out.append(line)
    inline = re.findall(r"`((?:pytest bench|\.venv/bin/tox -e bench)[^`]*)`", README)
    # inline forms with placeholders (-n N, --scaleout N) are prose, not commands
    out += [c for c in inline if not re.search(r"\s[A-Z]+(\s|$)", c)]
    return list(dict.fromkeys(out))


def _words(command: str) -> list[str]:
    command = re.sub(r"<[^>]+>", "/tmp/placeholder", command)  # <the directory printed above>
    return [w for w in shlex.split(command) if "=" not in w or w.startswith("-")]


COMMANDS = _commands()
SUITE_EXAMPLES = [c for c in COMMANDS if SUITE.search(c) and "cuda" not in c]
CLI_EXAMPLES = [
    c for c in COMMANDS if re.search(r"python -m (bench|bench\.training|tasks|reports)\b", c)
]


def test_the_readme_has_examples_of_every_kind():
    assert len(SUITE_EXAMPLES) >= 5 and len(CLI_EXAMPLES) >= 8


@pytest.mark.parametrize("command", SUITE_EXAMPLES)
def test_suite_examples_collect(command, tmp_path):
    args = _words(SUITE.search(command).group(1))
    args = [a for a in args if a != "--"]
    if "-n" in args:  # xdist workers: collected serially here
        i = args.index("-n")
        del args[i : i + 2]
    env = {**os.environ, "SPARSEBENCH_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "pytest", "bench", "--benchmark-only", *args, "--co", "-q",
           "-p", "no:cacheprovider", "--results-dir", str(tmp_path / "results")]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, command + "\n" + proc.stdout[-2000:] + proc.stderr[-2000:]
    cases = ("test_cell[", "test_scaleout[", "test_sweep_path[")  # the cells or a benchmark
    assert any(case in proc.stdout for case in cases), command


def _parser(module: str):
    if module == "reports":
        from reports.__main__ import parse_args

        return parse_args
    mod = {"bench": "bench.__main__", "bench.training": "bench.training.__main__",
           "tasks": "tasks.__main__"}[module]  # fmt: skip
    return __import__(mod, fromlist=["build_parser"]).build_parser().parse_args


@pytest.mark.parametrize("command", CLI_EXAMPLES)
def test_command_line_examples_parse(command):
    words = _words(command[command.index("python -m ") :])
    module, argv = words[2], words[3:]
    args = _parser(module)(argv)  # SystemExit on an unknown option or a missing argument
    assert args is not None
    if module == "tasks" and argv == ["list"]:
        proc = subprocess.run([sys.executable, "-m", "tasks", "list"], cwd=REPO,
                              capture_output=True, text=True)  # fmt: skip
        assert proc.returncode == 0 and "sva_simple" in proc.stdout
