"""Local dictionary training: SAEs and transcoders trained with sae-lens for models that have no
reachable pretrained release (``dictionary="local"``, ``"local:<name>"``).

Modules: :mod:`~bench.training.config` (hyperparameters, step 0), :mod:`~bench.training.entries`
(cache keys and integrity, step 1), :mod:`~bench.training.corpus` (step 2),
:mod:`~bench.training.activations` (step 4), :mod:`~bench.training.train` (steps 2-6),
:mod:`~bench.training.steps` (steps 3-5 for a set of layers, needing no model),
:mod:`~bench.training.shards` (step 4 in child processes on a multi-core CPU),
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
3. one TopK dictionary per layer: an SAE (sae-lens ``TopKTrainingSAE``) or, for
   ``basis="transcoder"``, a TopK transcoder that reads ``mlp_in`` and predicts ``mlp_out``
   (:mod:`bench.training.transcoder`, saved as sae-lens ``Transcoder`` subclass
   :class:`bench.bases.topk_transcoder.TopKTranscoder`); seeded per layer; ``b_dec`` starts at the
   mean of the (scaled) target;
4. activations (:mod:`bench.training.activations`): ``n_tokens`` distinct tokens, whole windows
   sampled (seeded) from the whole corpus, go through the model once (by default a bfloat16
   copy: 2x faster on CPU, activations within 0.3% of float32), capturing every layer's read and
   write site through ``bench.model.interventions.intervene``; the rows are held in memory as
   bfloat16
   (layers train in groups when they exceed ``max_buffer_gb``), scaled to mean norm sqrt(d)
   (sae-lens's ``expected_average_only_in``), and replayed for ``epochs`` passes in seeded
   orders, so the stream is a pure function of the batch index; sae-lens's ``MultiSAETrainer``
   (no wandb) trains every layer of a group on each batch (Adam, warm-up, linear decay to
   ``lr_end_frac * lr``, TopK auxiliary loss on dead latents); on a CPU with several
   workers, the group's layers train in child processes of one thread each, bit for bit as
   one one-thread trainer would (:mod:`bench.training.shards`);
5. checkpoints (sae-lens's own: weights, optimizer, scheduler, sparsity state) go to
   ``cache_dir("saes", ".partial", ...)``; a ``DONE`` marker is written after a checkpoint is
   complete, so an interrupted run resumes from the last complete one (the stream restarts at
   the matching batch) and older ones are deleted; a finished group of layers is saved at once,
   and the training scale folded back into the weights (encode reads and decode writes the
   model's own activations);
6. the trained dictionaries are in sae-lens's inference format (``save_inference_model``), their
   quality measured on held-out windows (:mod:`bench.training.quality`), and the entry
   ``<hook_name>/`` dirs + ``quality.json`` + ``manifest.json`` (with every file's sha256)
   renamed into place atomically (``bench.core.cache.atomic_path``): a partial run is never visible
   as a finished entry.
"""
