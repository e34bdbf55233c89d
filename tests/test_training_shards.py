"""SAE steps in child processes wherever the CPU has several workers (bench.training.shards):
the same weights bit for bit as one one-thread trainer, one bar, a failing child reported with
its log."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from _tiny_data import tiny_handle
from test_training import TINY, _weights, tiny_corpus

from bench.training import shards
from bench.training import train as training
from bench.training.steps import LayerSpec

# bf16 autocast and the TopK auxiliary loss on: what two trainers in one process got wrong
BUSY = dataclasses.replace(TINY, autocast=True, forward_dtype="bfloat16", dead_tokens=256)


@pytest.fixture
def one_thread():
    """This process on one torch thread, as on a busy machine (the children always are)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("threads", [1, 2])
def test_shard_count_is_the_workers_on_the_cpu_whatever_the_thread_count(monkeypatch, threads):
    monkeypatch.setattr(shards, "configure_workers", lambda: 2)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # idle (2 threads) or busy (1): the same shards
    try:
        assert shards.shard_count(30, "cpu", watched=False) == 2
        assert shards.shard_count(1, "cpu", watched=False) == 1  # at most one per layer
        assert shards.shard_count(30, "cpu", watched=True) == 1  # a test hook sees each batch
        assert shards.shard_count(30, "cuda:0", watched=False) == 1  # off the CPU: this process
    finally:
        torch.set_num_threads(before)
    monkeypatch.setattr(shards, "configure_workers", lambda: 1)
    assert shards.shard_count(30, "cpu", watched=False) == 1


def test_shards_train_bit_for_bit_what_one_one_thread_trainer_does(
    tmp_path, monkeypatch, capsys, one_thread
):
    h = tiny_handle("llama")
    monkeypatch.setenv("SPARSEBENCH_CACHE", str(tmp_path / "one"))
    monkeypatch.setattr(shards, "shard_count", lambda n_layers, device, watched: 1)
    one = training.train_local(h, "mlp_out", None, BUSY, tiny_corpus(), progress=False)

    monkeypatch.setenv("SPARSEBENCH_CACHE", str(tmp_path / "two"))
    monkeypatch.setenv("TQDM_MININTERVAL", "0")
    monkeypatch.setattr(shards, "shard_count", lambda n_layers, device, watched: 2)
    two = training.train_local(h, "mlp_out", None, BUSY, tiny_corpus(), progress=True)

    a, b = _weights(one), _weights(two)
    assert a.keys() == b.keys() == {"blocks.0.hook_mlp_out", "blocks.1.hook_mlp_out"}
    for hook in a:
        assert a[hook].keys() == b[hook].keys()
        for name in a[hook]:
            assert torch.equal(a[hook][name], b[hook][name]), (hook, name)
    trained = [json.loads((e / "quality.json").read_text())["training"] for e in (one, two)]
    assert [t["processes"] for t in trained] == [1, 2]
    bars = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines()
            if "training saes" in line]  # fmt: skip
    assert bars, "no training bar was drawn"
    assert all(line.startswith("training saes, layers 0-1 (2 processes):") for line in bars)
    assert any("100%" in line for line in bars)


def test_a_failing_shard_stops_the_training_and_shows_its_log(tmp_path):
    n, width = 256, 8
    specs = [LayerSpec(layer, f"blocks.{layer}.hook_mlp_out", width + 1, width + 1)
             for layer in (0, 1)]  # fmt: skip  # wider than the rows: the child's steps fail
    buffers = {s.hook: (torch.randn(n, width).bfloat16(), None) for s in specs}
    scales = {s.hook: {"s_in": 1.0, "s_out": 1.0, "mean": torch.zeros(width)} for s in specs}
    cfg = dataclasses.replace(BUSY, n_tokens=n, batch_tokens=128)
    with pytest.raises(RuntimeError) as err:
        shards.train_in_shards(specs, cfg, "cpu", buffers, scales, tmp_path / "partial",
                               tmp_path / "final", 2, "training saes", progress=False)  # fmt: skip
    message = str(err.value)
    assert "the process training layers-" in message and "run again to resume" in message
    assert "Error" in message  # the end of the child's log: its traceback
    assert not (tmp_path / "final").exists()


def _random_layers(n: int = 256, width: int = 8):
    hooks = {layer: f"blocks.{layer}.hook_mlp_out" for layer in (0, 1)}
    specs = [LayerSpec(i, h, width, width, {"hook_name": h}) for i, h in hooks.items()]
    g = torch.Generator().manual_seed(0)
    buffers = {s.hook: (torch.randn(n, width, generator=g).bfloat16(), None) for s in specs}
    scales = {s.hook: {"s_in": 1.0, "s_out": 1.0, "mean": torch.zeros(width)} for s in specs}
    cfg = dataclasses.replace(BUSY, width=16, k=2, n_tokens=n, batch_tokens=128)
    return specs, buffers, scales, cfg


def test_a_shard_that_finished_before_an_interruption_is_not_trained_again(tmp_path):
    partial, final = tmp_path / "partial", tmp_path / "final"
    specs, buffers, scales, cfg = _random_layers()
    args = (specs, cfg, "cpu", buffers, scales, partial, final, 2, "training saes")
    resumed, losses = shards.train_in_shards(*args, progress=False)
    assert resumed is None and list(losses) == [s.hook for s in specs]
    assert not buffers  # the children hold the rows: this process drops its own
    weights = [final / s.hook / "sae_weights.safetensors" for s in specs]
    stamps = [w.stat().st_mtime_ns for w in weights]
    (partial / "layers-1-1.done").unlink()  # as if interrupted before layer 1's shard ended

    specs, buffers, scales, cfg = _random_layers()
    args = (specs, cfg, "cpu", buffers, scales, partial, final, 2, "training saes")
    _, losses = shards.train_in_shards(*args, progress=False)
    assert list(losses) == [specs[1].hook]  # only the unfinished shard ran
    assert weights[0].stat().st_mtime_ns == stamps[0]
    assert weights[1].stat().st_mtime_ns != stamps[1]


def test_rows_that_cannot_be_written_train_in_this_process(
    tmp_path, monkeypatch, caplog, one_thread
):
    import logging

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    h = tiny_handle("llama")
    monkeypatch.setenv("SPARSEBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(shards, "shard_count", lambda n_layers, device, watched: 2)
    monkeypatch.setattr(shards, "_write_rows", disk_full)
    with caplog.at_level(logging.WARNING, logger="bench.training.shards"):
        entry = training.train_local(h, "mlp_out", None, BUSY, tiny_corpus(), progress=False)
    assert json.loads((entry / "quality.json").read_text())["training"]["processes"] == 1
    assert any("could not be written" in r.getMessage() for r in caplog.records)


def test_a_child_imports_bench_from_where_this_process_did(tmp_path, monkeypatch):
    root = Path(shards.__file__).resolve().parents[2]  # the checkout holding bench/
    monkeypatch.syspath_prepend(str(root))  # as a notebook's sys.path.insert would
    exe, *rest = shards.child_command(tmp_path / "shard")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # -S: no site-packages hooks (the editable install's finder): only the path it is handed
    # finds bench; the shard directory holds no job, so the child fails at reading it
    done = subprocess.run(
        [exe, "-S", *rest], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    assert "No module named" not in done.stderr, done.stderr[-2000:]
    assert "job.pkl" in done.stderr, done.stderr[-2000:]
