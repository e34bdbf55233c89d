"""sparsebench tasks: contrastive datasets (clean vs counterfactual prompt pairs).

``get_task(name).build(tokenizer, n_train, n_test, seed)`` gives a validated
``ContrastiveDataset``; ``encode(ds, tokenizer)`` its token ids per split;
``load_pairs(path, tokenizer, ...)`` builds one from a Marks-style JSONL
file. ``python -m tasks list`` lists the registered tasks; ``python -m tasks check --model M``
checks them against a model. Each task family lives in its own module and registers itself on
import: ``sva`` (four tasks), ``ioi``, ``greater_than``, ``capitals``, ``addition``.
"""

from tasks import addition, capitals, greater_than, ioi, sva  # noqa: F401  (register tasks)
from tasks.dataset import ContrastiveDataset, Pair
from tasks.load import PairFileError, load_pairs, write_pairs
from tasks.registry import (
    DuplicateTaskError,
    Task,
    UnknownTaskError,
    get_task,
    list_tasks,
    register,
)
from tasks.validate import InsufficientPairsError, encode

__all__ = [
    "ContrastiveDataset",
    "DuplicateTaskError",
    "InsufficientPairsError",
    "Pair",
    "PairFileError",
    "Task",
    "UnknownTaskError",
    "encode",
    "get_task",
    "list_tasks",
    "load_pairs",
    "register",
    "write_pairs",
]
