"""Settings every test shares."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _started_pytest_is_no_xdist_worker():
    """Under ``-n N``, pytest-xdist puts ``PYTEST_XDIST_*`` into each worker's environment. A
    pytest that a test (or a module's fixture) starts would inherit them and take itself for a
    worker (pytest-benchmark then refuses ``--benchmark-only``), so they are unset for the
    session: the tests run alike with and without ``-n``."""
    with pytest.MonkeyPatch.context() as mp:
        for name in [n for n in os.environ if n.startswith("PYTEST_XDIST_")]:
            mp.delenv(name)
        yield
