"""The two mechanisms that close the sandbox's races: sealed copies and the rename gate.

``tests/sealed_pins_probe.c`` runs under the real agent and reports where its
checked path copies are (``reference_agent/sealed_pins.py``): in memory it cannot
write, sealed, in each address space it gets (after exec, in a fork child, in 100
threads at once, after a vfork child's exec), opens keep working while a signal
handler makes path calls of its own, and 8 threads renaming and linking at once all
get through the rename gate. The gate
(``reference_agent/rename_gate.py``) is checked on its own for the order in
which it lets calls through. The escape catalogue (``test_sandbox_escapes.py``)
shows what each holds against the races themselves.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from reference_agent._loop import Park
from reference_agent.race_guards import GATED
from reference_agent.rename_gate import CHANGERS, RenameGate
from reference_agent.syscall_args import Use
from reference_agent.table import guarded_calls
from tests.helpers import ROOT, compile_c

PROBE_SOURCE = Path(__file__).with_name("sealed_pins_probe.c")


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_c(PROBE_SOURCE, tmp_path_factory.mktemp("probe") / "sealed_pins_probe")


#: The CLI with the sealed copies switched off (back on the stack), as a seeded bug would.
UNSEALED = textwrap.dedent(
    """
    import sys
    from reference_agent import sealed_pins
    sealed_pins.SealedPins.area_for = lambda self, pid, registers: None
    from harness.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def run_probe(probe: Path, tmp_path: Path, agent: tuple[str, ...]) -> dict[str, dict[str, str]]:
    target = tmp_path / "file"
    target.write_text("probe\n")
    argv = [*agent, "run", "--deny", str(tmp_path / "denied"), "--", str(probe), str(target)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    report: dict[str, dict[str, str]] = {}
    for line in result.stdout.splitlines():
        case, *fields = line.split()
        report[case] = dict(field.split("=", 1) for field in fields)
    return report


def test_copies_are_sealed_in_every_address_space(probe: Path, tmp_path: Path) -> None:
    report = run_probe(probe, tmp_path, (sys.executable, "-m", "harness.cli"))
    for case in ("exec", "fork", "exec_after_vfork"):
        assert report[case]["opened"] == "1", report
        assert report[case]["writable"] == "0", report
        assert report[case]["sealed"] == "1", report
    assert report["threads"] == {"distinct_slots": "1", "read_only": "1"}, report
    assert report["signals"] == {"failed": "0"}, report
    assert report["gate"] == {"done": "200"}, report


def test_the_probe_sees_copies_left_on_the_stack(probe: Path, tmp_path: Path) -> None:
    """The seeded bug: with the sealed copies off, the probe finds them writable."""
    report = run_probe(probe, tmp_path, (sys.executable, "-c", UNSEALED))
    assert report["exec"]["writable"] == "1", report
    assert report["exec"]["sealed"] == "0", report
    assert report["threads"]["read_only"] == "0", report


def test_RenameGate_runs_a_changer_alone_and_in_turn() -> None:
    retried: list[int] = []
    gate = RenameGate(retried.append)
    assert gate.admit(1, changer=False) is None  # checked calls run together
    assert gate.admit(2, changer=False) is None
    assert isinstance(gate.admit(10, changer=True), Park)  # a rename waits for them
    assert isinstance(gate.admit(3, changer=False), Park)  # and later calls wait behind it
    gate.release(1)
    assert retried == []  # 2 still runs
    gate.release(2)
    assert retried == [10, 3]  # in the order they came
    assert gate.admit(10, changer=True) is None
    assert isinstance(gate.admit(3, changer=False), Park)  # nothing beside a changer
    assert isinstance(gate.admit(11, changer=True), Park)
    gate.release(10)
    assert retried == [10, 3, 3, 11]
    assert gate.admit(3, changer=False) is None
    assert isinstance(gate.admit(11, changer=True), Park)


def test_RenameGate_lets_go_of_a_process_that_is_gone() -> None:
    retried: list[int] = []
    gate = RenameGate(retried.append)
    assert gate.admit(1, changer=True) is None
    assert isinstance(gate.admit(2, changer=False), Park)
    assert isinstance(gate.admit(3, changer=True), Park)
    gate.release(3)  # died while parked: never retried
    gate.release(1)  # died in flight
    assert retried == [2]
    assert gate.admit(2, changer=False) is None


#: A static program that opens itself and says so: small enough to run in 1.4 MB of
#: address space, where the 1 MiB sealed region does not fit beside it.
OPENS_ITSELF = """
#include <fcntl.h>
#include <unistd.h>
int main(int argc, char **argv) {
    (void)argc;
    if (open(argv[0], O_RDONLY) < 0) return 1;
    return write(1, "ran\\n", 4) == 4 ? 0 : 1;
}
"""


def test_no_sealed_region_means_no_path_call(tmp_path: Path) -> None:
    """Fail closed: where the region cannot be made, the program's path calls are refused,
    never run on copies left on the stack."""
    source = tmp_path / "opens_itself.c"
    source.write_text(OPENS_ITSELF)
    program = tmp_path / "opens_itself"
    subprocess.run(
        ["gcc", "-static", "-O1", "-o", str(program), str(source)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    limited = ["prlimit", "--as=1400000", str(program)]
    alone = subprocess.run(limited, capture_output=True, text=True, timeout=30)
    assert alone.stdout == "ran\n", alone  # the limit alone lets it run
    argv = [sys.executable, "-m", "harness.cli", "run", "--deny", str(tmp_path / "x"), "--"]
    result = subprocess.run(
        [*argv, *limited], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert (result.returncode, result.stdout) == (1, ""), result
    assert "no sealed region for checked paths (ENOMEM)" in result.stderr, result.stderr


def test_every_path_call_that_changes_something_is_gated() -> None:
    """A new path call that writes must meet the gate (or be a changer), or it races."""
    with_paths = {name: entry for name, entry in guarded_calls().items() if entry.paths}
    writing = {
        name
        for name, entry in with_paths.items()
        if any(spec.use & Use.WRITE for spec in entry.paths)
    }
    assert writing <= GATED | CHANGERS, sorted(writing - GATED - CHANGERS)
    assert set(with_paths) >= CHANGERS
