"""The SAE steps of one layer group in child processes, one torch thread each (step 4 of
:mod:`bench.training`), wherever the CPU has several workers
(:func:`bench.model.load.configure_workers`: the process's cores, busy or not).

Why: SAE steps are small GEMMs and top-k's, which gain less from a second thread in one
process than from a second process. On an idle 2-core machine 30 default-size SAEs took 391 s
in 2 one-thread processes against 418 s in one two-thread process (activations included);
with two other single-thread jobs on the 2 cores, 545 s against 830 s in one one-thread
process. The weights are the same: a layer's weights depend only on its seed, its rows and
the batch order (a pure function of the batch index), so a shard trains each of its layers
bit for bit as one one-thread trainer would (``tests/test_training_shards.py``); and on the
project's machine the thread count does not move them either (smollm2-135m's 30 default
SAEs: 120 of 120 tensors identical, 2 processes of 1 thread against 1 process of 2 threads;
the training scale is reduced on fixed threads in the parent,
:func:`bench.training.activations.mean_and_scale`).
Not threads of one process: two trainers side by side in one process did not reproduce one
trainer (docs/METHOD.md).

Steps of :func:`train_in_shards`:

1. :func:`shard_count`: shards on the CPU, where the workers
   (:func:`bench.model.load.configure_workers`) are several, no test hook watches the batches
   and the group has several layers; at most one per worker and one per layer;
2. the layers split into contiguous shards; each shard's scaled rows and means are written to
   ``partial/<shard>/rows.safetensors`` (a file, not shared memory, which containers often cap
   at 64 MB); a shard an earlier, interrupted run finished (``<shard>.done``) is not run again;
3. one child process per shard (a fresh interpreter, ``python -c``, on this process's
   ``sys.path``: nothing of the caller's script runs again, as it would under
   multiprocessing's spawn) reads its job and rows and runs
   :func:`bench.training.steps.train_layers` on one thread, with its checkpoints in its own
   directory (so it resumes on its own), saving its dictionaries to ``final/``; it reports each
   step on its stdout and its result in ``result.json``, its log in ``child.log``;
4. the parent draws one bar (the shards' training samples, averaged) and returns each layer's
   last loss; a child that fails stops the others, and the parent raises with its log's end.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from bench.core.cache import atomic_path
from bench.model.load import configure_workers
from bench.training.activations import Buffers
from bench.training.config import TrainConfig
from bench.training.steps import LayerSpec, train_layers

log = logging.getLogger(__name__)

ROWS, JOB, RESULT, LOG = "rows.safetensors", "job.pkl", "result.json", "child.log"


def shard_count(n_layers: int, device: str, watched: bool) -> int:
    """Step 1: how many processes train a group of ``n_layers`` layers (1: this one)."""
    if torch.device(device).type != "cpu" or watched:
        return 1
    return max(1, min(configure_workers(), n_layers))


def _split(specs: list[LayerSpec], n: int) -> list[list[LayerSpec]]:
    """``n`` contiguous runs of ``specs`` whose lengths differ by at most one."""
    size, extra = divmod(len(specs), n)
    out, start = [], 0
    for s in range(n):
        end = start + size + (s < extra)
        out.append(specs[start:end])
        start = end
    return out


def _write_rows(specs: list[LayerSpec], buffers: Buffers, scales, path: Path) -> None:
    from safetensors.torch import save_file

    tensors = {}
    for spec in specs:
        read, write = buffers[spec.hook]
        tensors[f"{spec.hook}/read"] = read  # [N, d_in] bf16, scaled
        if write is not None:
            tensors[f"{spec.hook}/write"] = write  # [N, d_out] bf16, scaled
        tensors[f"{spec.hook}/mean"] = scales[spec.hook]["mean"]  # [d_out]
    with atomic_path(path, kind="file") as tmp:
        save_file(tensors, str(tmp))


def child_main(shard_dir: str) -> None:
    """Step 3, in the child: train the shard's job from its rows on one thread."""
    from safetensors.torch import load_file

    torch.set_num_threads(1)
    shard_dir = Path(shard_dir)
    job = pickle.loads((shard_dir / JOB).read_bytes())
    specs, factors = job["specs"], job["factors"]
    rows = load_file(str(shard_dir / ROWS))
    buffers = {s.hook: (rows[f"{s.hook}/read"], rows.get(f"{s.hook}/write")) for s in specs}
    scales = {
        s.hook: {"s_in": factors[s.hook][0], "s_out": factors[s.hook][1],
                 "mean": rows[f"{s.hook}/mean"]}
        for s in specs
    }  # fmt: skip

    def on_step(samples: int) -> None:
        print(f"step {samples}", flush=True)

    resumed, losses = train_layers(
        specs, job["cfg"], job["device"], buffers, scales, shard_dir, Path(job["final"]),
        job["label"], progress=False, on_step=on_step,
    )  # fmt: skip
    with atomic_path(shard_dir / RESULT, kind="file") as tmp:
        tmp.write_text(json.dumps({"resumed": resumed, "losses": losses}))


def child_command(shard_dir: Path) -> list[str]:
    """A child's command line: a fresh interpreter that takes this process's ``sys.path``, in
    its order, before it imports ``bench``, so it imports everything from where this process
    did, even what is only on ``sys.path`` (a notebook's ``sys.path.insert``, a script beside an
    uninstalled checkout)."""
    code = (
        "import json, sys; sys.path[:] = json.loads(sys.argv[2]); "
        "from bench.training.shards import child_main; child_main(sys.argv[1])"
    )
    return [sys.executable, "-c", code, str(shard_dir), json.dumps(sys.path)]


def _start(shard_dir: Path, job: dict, events: queue.Queue, index: int) -> subprocess.Popen:
    """Start one child on ``job`` and a thread that turns its stdout into ``events``."""
    with atomic_path(shard_dir / JOB, kind="file") as tmp:
        tmp.write_bytes(pickle.dumps(job))
    (shard_dir / RESULT).unlink(missing_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(shard_dir / LOG, "w") as log_file:
        proc = subprocess.Popen(
            child_command(shard_dir), stdout=subprocess.PIPE,
            stderr=log_file, stdin=subprocess.DEVNULL, text=True, env=env,
        )  # fmt: skip

    def read() -> None:
        for line in proc.stdout:
            if line.startswith("step "):
                events.put((index, int(line.split()[1])))
        events.put((index, None))  # stdout closed: the child is ending

    threading.Thread(target=read, name=f"sparsebench-shard-{index}", daemon=True).start()
    return proc


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def train_in_shards(
    specs: list[LayerSpec],
    cfg: TrainConfig,
    device: str,
    buffers: Buffers,
    scales: dict[str, dict[str, Any]],
    partial: Path,
    final: Path,
    n_shards: int,
    label: str,
    progress: bool = True,
) -> tuple[int | None, dict[str, float]] | None:
    """Steps 2-4: :func:`bench.training.steps.train_layers` of ``specs`` in ``n_shards`` child
    processes; the same return value (the latest checkpoint any shard resumed from), or None
    where the rows could not be written (a full disk): then train in this process.
    ``buffers`` is emptied once the rows are written: the children hold them from then on."""
    todo = []
    try:
        for shard in _split(specs, n_shards):  # step 2
            name = f"layers-{shard[0].layer}-{shard[-1].layer}"
            if not (partial / f"{name}.done").exists():
                todo.append((name, shard))
                _write_rows(shard, buffers, scales, partial / name / ROWS)
    except OSError as err:
        log.warning("%s: the rows for child processes could not be written (%s); training in "
                    "this process instead", label, err)  # fmt: skip
        for name, _ in todo:
            (partial / name / ROWS).unlink(missing_ok=True)
        return None
    buffers.clear()
    factors = {h: (s["s_in"], s["s_out"]) for h, s in scales.items()}
    log.info("training %s in %d child processes, one thread each", label, len(todo))
    bar = tqdm(total=cfg.n_steps * cfg.batch_tokens, desc=f"{label} ({len(todo)} processes)",
               unit="tok", disable=not progress)  # fmt: skip
    events: queue.Queue = queue.Queue()
    procs: list[subprocess.Popen] = []
    resumed_from, losses, running, trained = None, {}, len(todo), 0
    try:
        for i, (name, shard) in enumerate(todo):  # step 3
            job = {"specs": shard, "cfg": cfg, "device": device, "final": str(final),
                   "label": label, "factors": {s.hook: factors[s.hook] for s in shard}}  # fmt: skip
            procs.append(_start(partial / name, job, events, i))
        while running:  # step 4
            i, samples = events.get()
            if samples is not None:  # the bar: the shards' samples, averaged
                trained += samples
                bar.update(trained // len(todo) - bar.n)
                continue
            running -= 1
            name, shard_dir = todo[i][0], partial / todo[i][0]
            if procs[i].wait() != 0 or not (shard_dir / RESULT).exists():
                raise RuntimeError(
                    f"{label}: the process training {name} failed (exit code "
                    f"{procs[i].returncode}); run again to resume from its last checkpoint. "
                    f"The end of its log ({shard_dir / LOG}):\n{_log_tail(shard_dir / LOG)}"
                )
            result = json.loads((shard_dir / RESULT).read_text())
            losses.update(result["losses"])
            resumed_from = result["resumed"] if result["resumed"] is not None else resumed_from
            (partial / f"{name}.done").write_text("complete\n")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
            proc.wait()
        bar.close()
    return resumed_from, {s.hook: losses[s.hook] for s in specs if s.hook in losses}
