"""Fixtures of the suite's own test files; its hooks are ``conformance.plugin``, loaded by the
installed pytest plugin ``conformance.entry`` (pyproject.toml, group ``pytest11``)."""

from pathlib import Path

import pytest

from conformance.syscall_runs import compile_program


@pytest.fixture(scope="session")
def syscall_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The syscall program, compiled once per session (gcc is part of set-up)."""
    try:
        return compile_program(tmp_path_factory.mktemp("syscall-program"))
    except RuntimeError as exc:
        pytest.fail(str(exc))
