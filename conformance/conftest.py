"""``pytest conformance --driver NAME``: the plugin lives in conformance/plugin.py."""

from pathlib import Path

import pytest

from conformance.plugin import *  # noqa: F403 - hooks and fixtures are found by name
from conformance.plugin import _record_property  # noqa: F401 - an autouse fixture
from conformance.syscall_runs import compile_program


@pytest.fixture(scope="session")
def syscall_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The syscall program, compiled once per session (gcc is part of set-up)."""
    try:
        return compile_program(tmp_path_factory.mktemp("syscall-program"))
    except RuntimeError as exc:
        pytest.fail(str(exc))
