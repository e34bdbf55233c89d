"""Processes sharing the cache (issue 15): pytest-xdist workers, Ray tasks on one node.

- two processes asking for the same missing local dictionary train it once (the second waits
  on :func:`bench.core.cache.cache_lock`, then finds it) and get identical results;
- two processes writing the same attribution entry over and over never leave a damaged one, and
  a reader meanwhile only ever sees a whole entry (temporary file, then rename).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

CHILD = """
import json, logging, os, sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
logging.basicConfig(level=logging.WARNING, format="%(message)s")
from _tiny_data import corpus, dataset, tiny_handle
from bench import run_sweep
from bench.training import train as training
from bench.training.corpus import Corpus

training.DEFAULT_CONFIG = training.TrainConfig(
    width=64, k=4, n_tokens=1024, epochs=2, ctx=9, batch_tokens=128, windows_per_forward=8,
    n_checkpoints=0, forward_dtype="float32", autocast=False,
    eval_tokens=256, ce_tokens=128, dead_tokens=1024,
)
training.default_corpus = lambda: Corpus("tiny", tuple(corpus() * 5))
marks = Path(sys.argv[1])
real_build = training._build

def counted(*args, **kwargs):  # a training run (under the lock): one marker file each
    (marks / f"trained-{{os.getpid()}}").write_text("")
    time.sleep(1.5)  # the other process reaches the lock meanwhile
    return real_build(*args, **kwargs)

training._build = counted
(marks / f"ready-{{os.getpid()}}").write_text("")
while len(list(marks.glob("ready-*"))) < 2:  # start together: both find no entry
    time.sleep(0.02)
res = run_sweep(tiny_handle("llama"), dataset(), basis="sae", site="mlp_out",
                dictionary="local", method="atp", n_bootstrap=50, bare_torch_timings=False)
data = res.to_dict()
data.pop("timings")
print(json.dumps(data))
"""


def _env(cache: Path) -> dict[str, str]:
    env = {**os.environ, "SPARSEBENCH_CACHE": str(cache), "SPARSEBENCH_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _start(code: str, *args: str, cache: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, env=_env(cache),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def test_two_processes_missing_the_same_local_dictionary_train_it_once(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    code = CHILD.format(tests=str(TESTS))
    procs = [_start(code, str(marks), cache=tmp_path / "cache") for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    assert len(list(marks.glob("trained-*"))) == 1  # one training run
    stderr = "".join(err for _, err in outs)
    assert stderr.count("waiting for process") == 1  # the other one waited for it
    assert stderr.count("training them now (once)") == 1
    first, second = (json.loads(out.strip().splitlines()[-1]) for out, _ in outs)
    assert first == second  # same entry, same dictionary quality, same curves
    assert first["dictionary_quality"]["width"] == 64


WRITER = """
import sys, torch
from bench.core.cache import save_checked
path, value = sys.argv[1], float(sys.argv[2])
for i in range(40):  # [200_000] floats: ~0.8 MB an entry
    save_checked({"units": torch.full((200_000,), value), "error": None, "seconds": i}, path)
"""

READER = """
import os, sys, time
from bench.core.cache import load_checked
path, seen = sys.argv[1], set()
while not os.path.exists(path):
    time.sleep(0.001)
for _ in range(150):
    entry = load_checked(path)  # raises CorruptEntryError on a partial or mixed entry
    units = entry["units"]
    assert bool((units == units[0]).all()), "an entry mixes two writers"
    seen.add(float(units[0]))
print(sorted(seen))
"""


def test_concurrent_writers_never_corrupt_an_entry_and_readers_see_whole_ones(tmp_path):
    from bench.core.cache import load_checked

    cache = tmp_path / "cache"
    path = cache / "attributions" / "entry.pt"
    procs = [_start(WRITER, str(path), str(v), cache=cache) for v in (1.0, 2.0)]
    procs.append(_start(READER, str(path), cache=cache))
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    assert set(json.loads(outs[-1][0])) <= {1.0, 2.0}
    final = load_checked(path)
    assert float(final["units"][0]) in (1.0, 2.0) and final["seconds"] == 39
    assert [p.name for p in path.parent.iterdir()] == ["entry.pt"]  # no temporaries left
