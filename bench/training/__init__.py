"""Local dictionary training: SAEs trained with sae-lens for models that have no reachable
pretrained release (``dictionary="local"``).

Modules: :mod:`~bench.training.config` (hyperparameters, step 0), :mod:`~bench.training.entries`
(cache keys and integrity, step 1), :mod:`~bench.training.corpus` (step 2),
:mod:`~bench.training.activations` (step 4), :mod:`~bench.training.train` (steps 3-6),
:mod:`~bench.training.quality` (step 6); ``python -m bench.training train|quality`` is the
command line.

:func:`train_local` (``python -m bench.training train``, or on first use of ``dictionary="local"``):

0. range-check the :class:`TrainConfig` (:func:`check_config`: k ≤ width, at least one batch of
   training tokens, ...) before anything is trained or cached;
1. key the cache entry: model (name + weight fingerprint, :func:`model_key`), site, layers, the
   :class:`TrainConfig` (width, k, tokens, ...), the corpus sha256 and the sae-lens version; a
   finished entry whose files match the sha256s in its ``manifest.json`` is returned as is (a
   corrupt one is logged and trained again; :func:`entry_problem`);
2. corpus windows (:mod:`bench.training.corpus`): training windows and held-out windows;
3. one TopK SAE per layer (sae-lens ``TopKTrainingSAE``; activations scaled to norm sqrt(d_in)
   during training, ``expected_average_only_in``, folded into the weights at the end);
4. sae-lens's ``MultiSAETrainer`` (no wandb) fed by :mod:`bench.training.activations`: one
   forward of the model per group of windows (under no_grad, by default a bfloat16 copy of the
   model — 2x faster on CPU, activations within 0.3% of float32) captures every layer's site through
   ``bench.interventions.intervene``; a chunk of forwards is flattened to ``[tokens, d]``,
   shuffled (seeded by chunk index) and cut into batches, so the stream is a pure function of the
   batch index; sae-lens's ``PrefetchingIterator`` runs the forwards in a producer thread while
   the SAEs train, one intra-op thread each (two threads per op on 2 cores oversubscribe them,
   several times slower when anything else runs);
5. checkpoints (sae-lens's own: weights, optimizer, scheduler, scaler, sparsity state) go to
   ``cache_dir("saes", ".partial", ...)``; a ``DONE`` marker is written after a checkpoint is
   complete, so an interrupted run resumes from the last complete one (the stream restarts at
   the matching batch) and older ones are deleted;
6. the trained SAEs are saved in sae-lens's inference format (``save_inference_model``), their
   quality measured on held-out windows (:mod:`bench.training.quality`), and the entry
   ``<hook_name>/`` dirs + ``quality.json`` + ``manifest.json`` (with every file's sha256)
   renamed into place atomically (``bench.cache.atomic_path``): a partial run is never visible
   as a finished entry.
"""
