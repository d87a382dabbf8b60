"""The conformance suite as an installed pytest plugin (entry point group ``pytest11``).

So ``pytest --pyargs conformance --driver ftp`` works from any directory, not only
from the checkout whose ``conformance/conftest.py`` pytest happens to find. The
options are added to every pytest run (they cost nothing); the suite's hooks and
fixtures (``conformance.plugin``) are loaded only for a run that collects the suite,
so other test runs are untouched.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.plugin import add_options

SUITE = Path(__file__).resolve().parent


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def runs_the_suite(config: pytest.Config) -> bool:
    """Whether the run's arguments name the suite, a file of it, or (``--pyargs``) its package."""
    here = config.invocation_params.dir
    for arg in config.args:
        name = arg.split("::", 1)[0]
        if config.getoption("pyargs", False) and (
            name == "conformance" or name.startswith("conformance.")
        ):
            return True
        path = (here / name).resolve()
        if path == SUITE or SUITE in path.parents:
            return True
    return False


def pytest_configure(config: pytest.Config) -> None:
    if runs_the_suite(config):
        config.pluginmanager.import_plugin("conformance.plugin")
