"""The C allocator's settings (bench.core.allocator): made once per process through
configure_threads, inherited by child processes, never over the user's own glibc settings, and
without effect on what is computed. Each case runs in a fresh interpreter: the settings are
process-wide."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

GLIBC = platform.libc_ver()[0] == "glibc"

PROBE = """
import logging, os, subprocess, sys
logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
from bench.model.load import configure_threads
from bench.core.allocator import keep_large_blocks
configure_threads()
print("OUTCOME", keep_large_blocks())
child = "import os; from bench.core.allocator import keep_large_blocks as k; "
child += "print('CHILD', os.environ.get('MALLOC_MMAP_THRESHOLD_'), "
child += "os.environ.get('MALLOC_TRIM_THRESHOLD_'), '|', k())"
print(subprocess.run([sys.executable, "-c", child], capture_output=True, text=True).stdout)
"""


def _run(code: str, **env: str) -> str:
    """stdout and stderr of ``python -c code`` in an environment without glibc malloc settings
    but ``env``, on one torch thread (in float32 the thread count alone can move a bit)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    base.pop("GLIBC_TUNABLES", None)
    base["SPARSEBENCH_THREADS"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**base, **env},
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt only")
def test_set_once_and_inherited_by_children():
    out = _run(PROBE)
    assert "OUTCOME large freed blocks kept (mmap threshold 32 MiB" in out
    assert out.count("bench.core.allocator: allocator:") == 1  # logged once, though asked twice
    inherited = "large freed blocks kept (set by the parent process"
    assert f"CHILD {32 * 1024 * 1024} {256 * 1024 * 1024} | {inherited}" in out


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt only")
@pytest.mark.parametrize(
    "env",
    [{"MALLOC_TRIM_THRESHOLD_": "131072"}, {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=4096"}],
)
def test_the_users_own_settings_win(env):
    out = _run(PROBE, **env)
    assert "OUTCOME left as set by the user" in out
    assert next(iter(env.values())) in out
    if "MALLOC_TRIM_THRESHOLD_" in env:
        assert "CHILD None 131072 | left as set by the user" in out  # nothing added
    else:
        assert "CHILD None None | left as set by the user" in out


def test_results_do_not_depend_on_it():
    """SAE-sized matrix products ([1024, 576] x [576, 2048] and back, five times) give the same
    bits in a process with the settings as in one without (the user's trim threshold set to
    glibc's default)."""
    code = (
        "import torch; from bench.model.load import configure_threads; configure_threads(); "
        "torch.manual_seed(0); w = torch.randn(576, 2048); x = torch.randn(1024, 576); "
        "outs = [] \nfor _ in range(5):\n    h = torch.relu(x @ w); x = (h @ w.T) / 64; "
        "outs.append(x.sum().item())\nprint('BITS', [v.hex() for v in outs])"
    )
    got = []
    for env in ({}, {"MALLOC_TRIM_THRESHOLD_": "131072"}):
        out = _run(code, **env)
        got.append([line for line in out.splitlines() if line.startswith("BITS")])
    assert got[0] == got[1] and got[0]
