"""The benchmark suite's pytest hooks: defined in :mod:`bench.suite.plugin`, re-exported here
because pytest looks for hooks in conftest.py. The options are in :mod:`bench.suite.options`."""

from bench.suite.plugin import (  # noqa: F401
    pytest_addoption,
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_generate_tests,
    pytest_report_header,
    pytest_sessionfinish,
    pytest_terminal_summary,
    pytest_testnodedown,
    pytest_xdist_make_scheduler,
    suite,
)
