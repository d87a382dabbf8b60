"""ruff and mypy are clean, and data flows one way between the packages."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("drivers", "reference_agent", "conformance", "faultnet", "harness")
#: Packages on the data path, and what they must never import.
FORBIDDEN = {
    "drivers": {"conformance", "faultnet", "harness"},
    "reference_agent": {"conformance", "faultnet", "harness"},
}


def _tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: run ./setup.sh (it installs the dev extras)")
    return found


def test_ruff_is_clean() -> None:
    result = subprocess.run(
        [_tool("ruff"), "check", *PACKAGES, "tests"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean() -> None:
    result = subprocess.run([_tool("mypy")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_data_path_packages_do_not_import_the_harness(package: str) -> None:
    offenders = []
    for source in (ROOT / package).rglob("*.py"):
        tree = ast.parse(source.read_text(), filename=str(source))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [
                f"{source.relative_to(ROOT)}: {n}"
                for n in names
                if n.split(".")[0] in FORBIDDEN[package]
            ]
    assert not offenders, offenders


#: A program name that means "whichever Python is first on PATH".
_BARE_PYTHON = re.compile(r"^python(3(\.\d+)?)?$")
_BARE_PYTHON_COMMAND = re.compile(r"^python(3(\.\d+)?)?\s")


def bare_python_calls(source: str, filename: str = "<source>") -> list[str]:
    """Where ``source`` starts a bare ``python``/``python3`` (an argv list or a shell string).

    The project's interpreter is ``sys.executable`` (the venv's): a bare name finds
    another Python, without the project's packages, on a fresh machine.
    """
    found = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.List | ast.Tuple) and node.elts:
            first = node.elts[0]
            if isinstance(first, ast.Constant) and _BARE_PYTHON.match(str(first.value)):
                found.append(f"{filename}:{node.lineno}: [{first.value!r}, ...]")
        elif isinstance(node, ast.Call):
            for arg in node.args:
                if isinstance(arg, ast.Constant) and _BARE_PYTHON_COMMAND.match(str(arg.value)):
                    found.append(f"{filename}:{node.lineno}: {str(arg.value)[:40]!r}")
    return found


def test_no_bare_python_in_subprocesses() -> None:
    offenders = []
    for package in (*PACKAGES, "tests"):
        for source in sorted((ROOT / package).rglob("*.py")):
            offenders += bare_python_calls(source.read_text(), str(source.relative_to(ROOT)))
    assert not offenders, offenders


#: The seeded calls are built from templates, so that this file itself holds no bare call.
BARE_CALL_TEMPLATES = [
    'subprocess.run(["{py}", "-c", "1"])',
    'subprocess.Popen(("{py}3", "x.py"))',
    'subprocess.run("{py}3 -m pytest", shell=True)',
    'os.system("{py} x.py")',
]


@pytest.mark.parametrize("template", BARE_CALL_TEMPLATES)
def test_bare_python_check_catches(template: str) -> None:
    assert bare_python_calls(template.format(py="python"))


def test_bare_python_check_lets_the_project_interpreter_pass() -> None:
    assert not bare_python_calls('subprocess.run([sys.executable, "-c", "print(\'python\')"])')
