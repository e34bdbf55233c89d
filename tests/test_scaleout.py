"""The suite beyond one process (issue 15): pytest-xdist workers and Ray tasks give the serial
run's results directory, verdict and reference check; their options fail fast; the GPU path
refuses clearly where there is no GPU.

End to end on tiny random models: two tasks × {neurons@mlp_acts, neurons@mlp_out, a random
sae-lens dictionary at mlp_out (``path:``)} × {relp, random} — 12 cells in 4 joint groups, each
run with its own empty cache, so a group split over two processes would show (its joint
attribution and its paired k ratio would differ from the serial run's).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench.core.errors import BadInputError
from bench.suite.scaleout import results_without_timings

# the Ray runs need the optional extra (pip install 'sparsebench[ray]'); without it they skip
NEEDS_RAY = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None,
    reason="needs the [ray] extra (pip install 'sparsebench[ray]')",
)

REPO = Path(__file__).resolve().parents[1]
TASKS, METHODS = ("sva_simple", "addition"), ("relp", "random")
VERDICT = "sparsebench verdict"


def _env(cache: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if cache is not None:
        env["SPARSEBENCH_CACHE"] = str(cache)
    env.setdefault("SPARSEBENCH_THREADS", "1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _cells_args(dictionary: Path) -> list[str]:
    return ["--model", "tiny-llama", "--tasks", ",".join(TASKS), "--methods", ",".join(METHODS),
            "--bases", f"neurons@mlp_out,sae@mlp_out:path:{dictionary},neurons@mlp_acts",
            "--n-train", "8", "--n-test", "4"]  # fmt: skip


def _suite(out: Path, dictionary: Path, *extra: str) -> subprocess.CompletedProcess:
    """``pytest bench --benchmark-only`` on the tiny cells, into ``out``/results."""
    cmd = [sys.executable, "-m", "pytest", "bench", "--benchmark-only", "-p", "no:cacheprovider",
           f"--benchmark-storage=file://{out / 'history'}", "--results-dir", str(out / "results"),
           *_cells_args(dictionary), *extra]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=_env(out / "cache"), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


def _section(text: str, title: str) -> str:
    """The lines of a terminal section (``=== title ===`` or ``== title``) up to the next one."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if title in line)
    body = []
    for line in lines[start + 1 :]:
        if line.startswith("==") or " benchmark: " in line:  # next section, or the timings
            break
        body.append(line)
    return "\n".join(body).strip()


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    """A random dictionary for the tiny model, and the serial run of the cells."""
    from test_bases import write_dictionary

    from bench import load_model

    root = tmp_path_factory.mktemp("scaleout")
    dictionary = write_dictionary(root / "sae", load_model("tiny-llama"))
    proc = _suite(root / "serial", dictionary)
    results = results_without_timings(root / "serial" / "results")
    assert len(results) == len(TASKS) * 3 * len(METHODS)
    dict_cells = [r for r in results.values() if r["basis"] == "sae" and r["method"] == "relp"]
    assert all(r["extra"]["k_ratio_vs_neurons"]["paired"] for r in dict_cells)
    return root, dictionary, proc.stdout, results


def test_two_xdist_workers_give_the_serial_results_verdict_and_reference_check(serial):
    root, dictionary, serial_out, expected = serial
    out = root / "xdist"
    ref = ["--reference", str(root / "serial" / "results")]  # the serial run as references
    proc = _suite(out, dictionary, "-n", "2", "-v", *ref)
    assert (
        results_without_timings(out / "results") == expected
    )  # curves bit-identical, every field but timings
    # each joint group ran whole in one worker, and both workers ran groups
    workers: dict[tuple[str, str], set[str]] = {}
    for worker, cell in re.findall(r"\[(gw\d)\] .*PASSED \S+test_cell\[(\S+)\]", proc.stdout):
        task, method = cell.split("-")[0], cell.rsplit("-", 1)[1]
        workers.setdefault((task, method), set()).add(worker)
    assert len(workers) == len(TASKS) * len(METHODS)
    assert all(len(w) == 1 for w in workers.values()), workers
    assert set().union(*workers.values()) == {"gw0", "gw1"}
    # the summary: once, from the controller, as the serial run prints it
    assert proc.stdout.count("sparsebench verdict") == 1
    assert _section(proc.stdout, VERDICT) == _section(serial_out, VERDICT)
    check = _section(proc.stdout, "sparsebench reference check")
    assert check.count("\nok ") == 2 * len(expected) and check.endswith("all held")
    assert "gw0:" in proc.stdout and "pytest-benchmark is off under pytest-xdist" in proc.stdout
    assert list((root / "serial" / "history").rglob("*.json"))  # serial: records autosaved
    assert not list((out / "history").rglob("*.json"))  # xdist: no benchmark records to keep


@NEEDS_RAY
def test_ray_with_a_local_instance_gives_the_serialresults_without_timings(serial):
    root, dictionary, serial_out, expected = serial
    out = root / "ray"
    cmd = [sys.executable, "-m", "bench", "ray", *_cells_args(dictionary), "--num-cpus", "2",
           "--results-dir", str(out / "results"), "--reference", str(root / "serial" / "results"),
           "--object-store-mb", "100", "--quiet"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=_env(out / "cache"), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert results_without_timings(out / "results") == expected
    assert f"{len(expected)} of {len(expected)} cells written" in proc.stdout
    assert _section(proc.stdout, VERDICT) == _section(serial_out, VERDICT)
    assert _section(proc.stdout, "sparsebench reference check").endswith("all held")
    # what reports and the reference check read: the same files, unchanged
    compare = [sys.executable, "-m", "bench", "compare", str(out / "results"), "--reference",
               str(root / "serial" / "results")]  # fmt: skip
    assert subprocess.run(compare, cwd=REPO, env=_env(out / "cache")).returncode == 0


def _collect(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pytest", "bench", "--benchmark-only", "--co", "-q", *args]
    return subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True)


def test_xdist_needs_the_group_scheduling_and_a_usable_device():
    proc = _collect("--quick", "-n", "2", "--dist", "worksteal")
    assert proc.returncode != 0
    message = "--dist worksteal: the suite runs each joint-attribution group in one worker"
    assert message + "; valid: loadgroup" in proc.stdout + proc.stderr
    if not torch.cuda.is_available():  # the message of a machine without a usable GPU
        proc = _collect("--quick", "--devices", "cpu,cuda:1")
        text = proc.stdout + proc.stderr
        assert proc.returncode != 0 and "--devices cuda:1: " in text
        assert "SPARSEBENCH_TORCH" in text or "sees no GPU" in text


@pytest.mark.parametrize(
    "options,message",
    [
        ({"--device": "cuda", "--devices": "cpu"}, "--device cuda and --devices cpu: give one"),
        ({"--devices": ","}, "--devices ',': give at least one device"),
        ({"--device": "tpu"}, "--device tpu: not a device; valid: cpu, cuda"),
    ],
)
def test_device_options_are_checked(options, message):
    from test_bad_inputs import FakeConfig

    from bench.suite.options import parse_devices

    with pytest.raises(BadInputError) as err:
        parse_devices(FakeConfig(**options))
    assert message in str(err.value)
    assert parse_devices(FakeConfig(**{"--devices": "cpu, cpu"})) == ["cpu", "cpu"]
    assert parse_devices(FakeConfig()) == ["cpu"]


def test_the_xdist_scheduler_keeps_each_joint_group_whole():
    from test_bad_inputs import FakeConfig

    from bench.suite.options import group_name, parse_cells
    from bench.suite.scheduling import JointGroupScheduling

    cells = parse_cells(FakeConfig(**{"--quick": True, "--model": "tiny-llama"}))
    sched = JointGroupScheduling.__new__(JointGroupScheduling)  # only the scope is tested
    sched.groups = {c.id: group_name(c) for c in cells}
    scopes = {c.id: sched._split_scope(f"bench/test_suite.py::test_cell[{c.id}]") for c in cells}
    assert len(set(scopes.values())) == 2  # sva_simple × {relp, random}
    assert scopes["sva_simple-neurons@mlp_acts-relp"] == scopes["sva_simple-neurons@mlp_out-relp"]
    assert sched._split_scope("bench/test_suite.py::test_cell[x-a@b-relp]@g1") == "g1"
    assert sched._split_scope("tests/test_x.py::test_other") == "tests/test_x.py::test_other"


def test_threads_split_the_free_cores_unless_set(monkeypatch):
    from bench.core import env

    def threads(n_workers: int) -> int:
        return env.choose_threads(n_workers)[0]

    monkeypatch.delenv("SPARSEBENCH_THREADS", raising=False)
    monkeypatch.setattr(env, "busy_cores", lambda: None)  # no /proc/stat: the load average
    monkeypatch.setattr(env, "cpu_cores", lambda: 16)
    monkeypatch.setattr(env.os, "cpu_count", lambda: 16)
    monkeypatch.setattr(env, "load_average", lambda: 0.0)  # idle: every core
    assert [threads(n) for n in (1, 2, 3, 32)] == [16, 8, 5, 1]
    monkeypatch.setattr(env, "load_average", lambda: 6.2)  # six cores busy elsewhere
    assert [threads(n) for n in (1, 2, 3)] == [10, 5, 3]
    monkeypatch.setattr(env, "cpu_cores", lambda: 2)
    monkeypatch.setattr(env.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(env, "load_average", lambda: 2.1)  # two other jobs on two cores
    n, why = env.choose_threads()
    assert n == 1 and "2 cores, load 2.1" in why and "SPARSEBENCH_THREADS" in why
    monkeypatch.setattr(env, "load_average", lambda: 9.0)  # overloaded: still one thread
    assert threads(1) == 1
    monkeypatch.setenv("SPARSEBENCH_THREADS", "2")
    assert env.choose_threads(8) == (2, "SPARSEBENCH_THREADS=2")


def test_threads_follow_the_cores_busy_now_not_the_lagging_load_average(monkeypatch):
    from bench.core import env

    monkeypatch.delenv("SPARSEBENCH_THREADS", raising=False)
    monkeypatch.setattr(env, "cpu_cores", lambda: 2)
    monkeypatch.setattr(env.os, "cpu_count", lambda: 2)
    ticks = iter([(100, 1000), (100, 1200)])  # (idle, total): every tick busy in the window
    monkeypatch.setattr(env, "_cpu_times", lambda: next(ticks))
    monkeypatch.setattr(env.time, "sleep", lambda s: None)
    monkeypatch.setattr(env, "load_average", lambda: 0.3)  # two jobs that just started
    n, why = env.choose_threads()
    assert n == 1 and "2.0 busy now, load 0.3" in why
    ticks = iter([(100, 1000), (300, 1200)])  # every tick idle: the jobs just ended
    monkeypatch.setattr(env, "load_average", lambda: 1.8)  # the load average still counts them
    assert env.choose_threads() == (2, "2 cores, 0.0 busy now, load 1.8; set "
                                       "SPARSEBENCH_THREADS to choose")  # fmt: skip
    ticks = iter([(100, 1000), (150, 1200)])  # one of two cores busy
    assert env.busy_cores() == 1.5 and env.free_cores(1.5) == 1
    monkeypatch.setattr(env.os, "cpu_count", lambda: 16)  # 14 of 16 free, this process may use 2
    assert env.free_cores(2.0) == 2


def test_busy_cores_reads_proc_stat_or_says_it_cannot(monkeypatch):
    from bench.core import env

    busy = env.busy_cores(window=0.05)
    if os.path.exists("/proc/stat"):
        assert busy is not None and 0.0 <= busy <= (os.cpu_count() or 1)
    monkeypatch.setattr(env, "_cpu_times", lambda: (_ for _ in ()).throw(OSError("no /proc")))
    assert env.busy_cores() is None


def test_the_suite_shows_its_thread_choice_once_in_the_header():
    cmd = [sys.executable, "-m", "pytest", "bench", "--benchmark-only", "--co", "--quick"]
    env = {**_env(), "SPARSEBENCH_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if "torch threads" in line]
    assert lines == [
        "sparsebench: torch threads: 1 (SPARSEBENCH_THREADS=1); workers: 1, 1 thread each (sweeps, "
        "attribution, SAE activations and quality)"
    ], proc.stdout
    env.pop("SPARSEBENCH_THREADS")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if "torch threads" in line]
    assert len(lines) == 1 and re.fullmatch(
        r"sparsebench: torch threads: \d+ \(\d+ cores, (?:[\d.]+ busy now, )?load [\d.]+; set "
        r"SPARSEBENCH_THREADS "
        r"to choose\); workers: \d+, 1 thread each \(sweeps, attribution, SAE "
        r"activations and quality\)",
        lines[0],
    ), proc.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (("--device", "cuda:1"), "--device cuda:1: valid: cpu, cuda (Ray gives each task"),
        (("--num-cpus", "2", "--cpus-per-task", "3"), "--cpus-per-task 3: must be an integer in"),
        (("--num-cpus", "0"), "--num-cpus 0: must be an integer ≥ 1"),
        (("--address", "ray://x:1", "--num-cpus", "2"), "with --address ray://x:1 the cluster"),
        (("--tasks", "sva_simpel"), "unknown task(s) sva_simpel; valid: addition"),
    ],
)
def test_ray_command_refuses_bad_options_before_ray_starts(capsys, monkeypatch, args, message):
    from bench.__main__ import main
    from bench.suite import ray as distributed

    def no_ray():
        raise AssertionError("Ray was started although the options were bad")

    monkeypatch.setattr(distributed, "require_ray", no_ray)
    assert main(["ray", "--quick", "--model", "tiny-llama", *args]) == 2
    assert message in capsys.readouterr().err


def test_ray_is_an_optional_extra_with_a_clear_error_when_missing(monkeypatch):
    import tomllib

    from bench.suite import ray as distributed

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith("ray") for d in project["dependencies"])
    assert any(d.startswith("pytest-xdist") for d in project["dependencies"])
    assert project["optional-dependencies"]["ray"][0].startswith("ray")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(RuntimeError, match=r"pip install 'sparsebench\[ray\]'"):
        distributed.require_ray()


def test_gpu_defaults_and_refusals_on_a_cpu_machine(monkeypatch):
    from bench.model.load import _as_dtype, default_dtype, load_model

    assert default_dtype("cuda") == default_dtype("cuda:1") == torch.bfloat16
    assert default_dtype("cpu") == _as_dtype(None, "cpu") == torch.float32
    assert load_model("tiny-gpt2").dtype == torch.float32  # the CPU default is unchanged
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "12.8")  # a CUDA torch on a machine without GPU
    with pytest.raises(BadInputError, match="device='cuda': torch .* has CUDA but sees no GPU"):
        load_model("tiny-llama", device="cuda")


def test_ray_with_an_unreachable_address_fails_fast_naming_it(capsys):
    """Issue: --address 127.0.0.1:1 hung for ever (Ray retries its GCS connection)."""
    from bench.__main__ import main

    start = time.monotonic()
    assert main(["ray", "--quick", "--model", "tiny-llama", "--address", "127.0.0.1:1"]) == 2
    assert time.monotonic() - start < 60
    err = capsys.readouterr().err
    assert "--address 127.0.0.1:1: no Ray cluster answers at 127.0.0.1:1" in err
    assert main(["ray", "--quick", "--model", "tiny-llama", "--address", "headnode"]) == 2
    assert "give host:port" in capsys.readouterr().err
