"""pytest-xdist scheduling for the suite: each joint-attribution group is one unit of work.

xdist's own ``--dist loadgroup`` finds a test's group in a ``@group`` suffix that workers append
to node ids; pytest 9.2 keeps node ids in a structured field that suffix no longer reaches, so
with pytest 9.2 and pytest-xdist 3.8 it silently spreads a group's tests over workers
(pytest-dev/pytest-xdist#1386). :class:`JointGroupScheduling` is xdist's loadscope scheduler
with the scope of a node id read from the suite's own cells instead (the cell id between the
brackets names its group; a ``@group`` suffix, where xdist still writes one, is used as is), so
it holds with any pytest. Imported only when pytest-xdist runs the suite (it imports xdist).
"""

from __future__ import annotations

import logging

from xdist.scheduler import LoadScopeScheduling

log = logging.getLogger(__name__)


class JointGroupScheduling(LoadScopeScheduling):
    """Whole groups to workers, each group's cells in collection (run) order."""

    def __init__(self, config, log_producer, groups: dict[str, str]):
        super().__init__(config, log_producer)
        self.groups = groups  # cell id (the test's parameter id) -> its group name

    def _split_scope(self, nodeid: str) -> str:
        head, at, tail = nodeid.rpartition("@")
        if at and "]" not in tail and head.endswith("]"):  # xdist's own suffix
            return tail
        start = nodeid.find("[")
        if start >= 0 and nodeid.endswith("]"):
            return self.groups.get(nodeid[start + 1 : -1], nodeid)
        return nodeid
