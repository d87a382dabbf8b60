"""An escape catalogue against ``aviary run``'s sandbox: each family of attempt x each mode.

``tests/sandbox_catalogue.c`` makes one attempt per family at ``tree/secret`` (read
the key, change it, add a file beside it, run ``secret/prog``); this module runs it
under the real agent in every sandbox mode, as root and as nobody, and judges from
what the program printed and from the files on disk:

- the secret in the output is an escape, except under ``--read-only`` (reading is allowed);
- a line starting ``RAN-DENIED`` (the denied program ran) is an escape, except under
  ``--read-only`` (running is allowed);
- any change under ``secret/`` (content, mode, times, an xattr, a new name) is an escape.

Races run for ``RACE_SECONDS`` each, with the agent free to use every CPU and (as root) again
on one CPU; every run is bounded by a subprocess timeout.
``KNOWN_GAPS_AS_*`` list the families and modes docs/sandbox.md says are not guaranteed;
they are run and reported, not asserted. The negative controls at the end show
that the judge finds escapes when a check is switched off.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import ROOT, compile_c

CATALOGUE_SOURCE = Path(__file__).with_name("sandbox_catalogue.c")
SECRET = "TOPSECRET-c4t4"
RACE_SECONDS = "1"
#: A negative control's race: up to CONTROL_TRIES runs of this many seconds each.
CONTROL_RACE_SECONDS = "3"
CONTROL_TRIES = 6
NOBODY = 65534
FAMILIES = (
    "longpath",
    "opath_parent",
    "fdcalls",
    "memfd_execveat",
    "memfd_procfd",
    "interpreter",
    "interpreter_race",
    "proc_cwd_race",
    "clone_vm",
    "link_race",
    "classic",
)
#: The families that race two threads against the agent's checks.
RACES = ("interpreter_race", "proc_cwd_race", "clone_vm", "link_race")
MODES = ("allow-only", "deny", "deny-hide", "read-only")
#: Not guaranteed (docs/sandbox.md, "What is not guaranteed"): none of the catalogue's
#: families escape any more. A family added here is run and reported, not asserted.
KNOWN_GAPS_AS_ROOT: frozenset[tuple[str, str]] = frozenset()
KNOWN_GAPS_AS_NOBODY: frozenset[tuple[str, str]] = KNOWN_GAPS_AS_ROOT


@dataclass(frozen=True)
class Tree:
    root: Path
    program: Path

    @property
    def secret(self) -> Path:
        return self.root / "secret"


@pytest.fixture(scope="module")
def catalogue_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_c(CATALOGUE_SOURCE, tmp_path_factory.mktemp("catalogue") / "sandbox_catalogue")


def make_tree(binary: Path, owner: int | None) -> Tree:
    """A fresh tree in a directory every user can reach (pytest's tmp_path is root's alone)."""
    base = Path(tempfile.mkdtemp(prefix="aviary-catalogue-", dir="/tmp"))
    base.chmod(0o755)
    root = base / "tree"
    (root / "secret").mkdir(parents=True)
    (root / "secret" / "key").write_text(SECRET + "\n")
    (root / "secret" / "key").chmod(0o644)
    shutil.copy(shutil.which("echo") or "/bin/echo", root / "secret" / "prog")
    (root / "allowed" / "secret").mkdir(parents=True)
    (root / "allowed" / "ky").write_text("allowed\n")
    (root / "allowed" / "secret" / "key").write_text("decoy\n")
    program = root / "allowed" / "sandbox_catalogue"
    shutil.copy(binary, program)
    if owner is not None:
        for path in [base, *base.rglob("*")]:
            os.chown(path, owner, owner)
    return Tree(root, program)


@pytest.fixture
def trees(catalogue_binary: Path) -> Iterator[list[Tree]]:
    made: list[Tree] = []
    yield made
    for tree in made:
        shutil.rmtree(tree.root.parent, ignore_errors=True)


def snapshot(secret: Path) -> dict[str, object]:
    """Everything about secret/ a change would show in."""
    state: dict[str, object] = {".": stat.S_IMODE(secret.stat().st_mode)}
    for path in sorted(secret.iterdir()):
        info = path.lstat()
        state[path.name] = (
            stat.S_IMODE(info.st_mode),
            info.st_mtime_ns,
            info.st_uid,
            path.read_bytes() if path.is_file() else None,
            sorted(os.listxattr(path, follow_symlinks=False)),
        )
    return state


def sandbox_options(mode: str, tree: Tree) -> list[str]:
    secret = str(tree.secret)
    return {
        "allow-only": ["--allow-only", str(tree.root / "allowed"), "--allow-system"],
        "deny": ["--deny", secret],
        "deny-hide": ["--deny", secret, "--hide"],
        "read-only": ["--read-only", secret],
    }[mode]


def run_attempt(
    tree: Tree,
    mode: str,
    family: str,
    *,
    user: int | None = None,
    extra: tuple[str, ...] = (),
    agent: tuple[str, ...] = (sys.executable, "-m", "harness.cli"),
    seconds: str = RACE_SECONDS,
    one_cpu: bool = False,
) -> subprocess.CompletedProcess[str]:
    """One run; ``one_cpu`` keeps the agent and the program on one CPU, else they may use all.

    Which placement opens a race's window wider depends on the race and the machine: the
    link race is won about ten times as often on one CPU, the clone_vm rewrite a hundred
    times as often on two; on a faster machine the link race on two CPUs was lost five
    three-second runs in a row.
    """
    prefix = (
        [] if user is None else ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"]
    )
    argv = [
        *prefix,
        *agent,
        "run",
        *(() if one_cpu else ("--no-pin",)),
        *sandbox_options(mode, tree),
        *extra,
        "--",
        str(tree.program),
        family,
        str(tree.root),
        seconds,
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=90, cwd=ROOT)


def escapes(
    mode: str, result: subprocess.CompletedProcess[str], before: dict[str, object], tree: Tree
) -> list[str]:
    """What got out, judged from the output and the disk (see the module doc)."""
    found = []
    lines = result.stdout.splitlines()
    if mode != "read-only":
        if SECRET in result.stdout:
            found.append(f"read the secret {result.stdout.count(SECRET)} times")
        if any(line.startswith("RAN-DENIED") for line in lines):
            found.append("ran the denied program")
    after = snapshot(tree.secret)
    if after != before:
        changed = sorted(k for k in {*before, *after} if before.get(k) != after.get(k))
        found.append(f"changed secret/: {changed}")
    return found


def attempt(
    trees: list[Tree], binary: Path, mode: str, family: str, user: int | None, **kw: object
) -> list[str]:
    tree = make_tree(binary, user)
    trees.append(tree)
    before = snapshot(tree.secret)
    result = run_attempt(tree, mode, family, user=user, **kw)  # type: ignore[arg-type]
    assert result.returncode == 0, result.stdout + result.stderr
    assert "internal error" not in result.stderr, result.stderr
    return escapes(mode, result, before, tree)


def cells(gaps: frozenset[tuple[str, str]]) -> list[object]:
    return [
        pytest.param(family, mode, id=f"{family}-{mode}")
        for family in FAMILIES
        for mode in MODES
        if (family, mode) not in gaps
    ]


@pytest.mark.parametrize(("family", "mode"), cells(KNOWN_GAPS_AS_ROOT))
def test_no_escape_as_root(
    trees: list[Tree], catalogue_binary: Path, family: str, mode: str
) -> None:
    assert attempt(trees, catalogue_binary, mode, family, None) == []


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("family", RACES)
def test_no_race_escape_on_one_cpu(
    trees: list[Tree], catalogue_binary: Path, family: str, mode: str
) -> None:
    assert (family, mode) not in KNOWN_GAPS_AS_ROOT
    assert attempt(trees, catalogue_binary, mode, family, None, one_cpu=True) == []


@pytest.mark.parametrize(("family", "mode"), cells(KNOWN_GAPS_AS_NOBODY))
def test_no_escape_as_nobody(
    trees: list[Tree], catalogue_binary: Path, family: str, mode: str
) -> None:
    assert attempt(trees, catalogue_binary, mode, family, NOBODY) == []


# -- negative controls: with a check switched off, the judge finds the escapes --------------

#: Runs the CLI with one of the agent's checks replaced, as a seeded bug would.
SABOTAGED = textwrap.dedent(
    """
    import sys
    from reference_agent import sandbox
    what = sys.argv.pop(1)
    if what == "paths":
        sandbox.Guard._check_path = lambda self, agent, call, arg: (None, None)
    elif what == "descriptors":
        sandbox.Guard._check_descriptor = lambda self, pid, fd, use: None
    elif what == "exec":
        sandbox.Guard.check_exec = lambda self, pid: None
        sandbox.Guard._check_interpreters = lambda self, real, base, tid, depth: None
    elif what == "sealed":  # the checked copies back on the caller's stack
        from reference_agent import sealed_pins
        sealed_pins.SealedPins.area_for = lambda self, pid, registers: None
    elif what == "gate":  # renames run beside checked calls
        from reference_agent import rename_gate
        rename_gate.RenameGate.admit = lambda self, tid, changer: None
    from harness.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


#: The agent's checks alone: no Landlock, no mount rules.
NO_KERNEL = ("--no-landlock",)


def sabotaged(what: str) -> tuple[str, ...]:
    return (sys.executable, "-c", SABOTAGED, what)


def test_landlock_holds_allow_only_when_the_agent_checks_no_path(
    trees: list[Tree], catalogue_binary: Path
) -> None:
    """With the path check gone the kernel still refuses; with --no-landlock as well, it escapes."""
    held = attempt(trees, catalogue_binary, "allow-only", "classic", None, agent=sabotaged("paths"))
    # Reading, running and adding names are the kernel's to refuse; the chmod through the
    # symlink is not (Landlock has no right for a mode change): only the agent stops it.
    assert held == ["changed secret/: ['key']"]
    escaped = attempt(
        trees,
        catalogue_binary,
        "allow-only",
        "classic",
        None,
        agent=sabotaged("paths"),
        extra=("--no-landlock",),
    )
    assert any("read the secret" in what for what in escaped), escaped
    assert any("changed secret/" in what for what in escaped), escaped


def test_descriptor_checks_are_what_stops_fd_calls_under_read_only(
    trees: list[Tree], catalogue_binary: Path
) -> None:
    """Without the descriptor check: as root the read-only mount holds; without it, escapes."""
    agent = sabotaged("descriptors")
    held = attempt(trees, catalogue_binary, "read-only", "fdcalls", None, agent=agent)
    assert held == []
    escaped = attempt(
        trees, catalogue_binary, "read-only", "fdcalls", None, agent=agent, extra=NO_KERNEL
    )
    assert any("changed secret/" in what for what in escaped), escaped


def test_exec_checks_are_what_stops_a_memfd_interpreter(
    trees: list[Tree], catalogue_binary: Path
) -> None:
    """Without the exec checks: as root the denied tree's mount holds; without it, escapes."""
    agent = sabotaged("exec")
    assert attempt(trees, catalogue_binary, "deny", "memfd_execveat", None, agent=agent) == []
    escaped = attempt(
        trees, catalogue_binary, "deny", "memfd_execveat", None, agent=agent, extra=NO_KERNEL
    )
    assert escaped == ["ran the denied program"]


def escapes_in_tries(
    trees: list[Tree], binary: Path, mode: str, family: str, agent: tuple[str, ...]
) -> list[str]:
    """A race's escapes: a few bounded tries, the first that escapes (or the last).

    A negative control must see the race won: its tries are longer than a cell's (on a
    quiet machine a one-second link race was lost three times in a row) and alternate
    between one CPU and all (see ``run_attempt``).
    """
    found: list[str] = []
    for attempt_number in range(CONTROL_TRIES):
        found = attempt(
            trees, binary, mode, family, None, agent=agent, extra=NO_KERNEL,
            seconds=CONTROL_RACE_SECONDS, one_cpu=attempt_number % 2 == 0,
        )  # fmt: skip
        if found:
            break
    return found


def test_sealed_copies_are_what_stops_the_clone_vm_rewrite(
    trees: list[Tree], catalogue_binary: Path
) -> None:
    """Without Landlock and mounts: the sealed copies hold; back on the stack, they are rewritten."""
    for one_cpu in (False, True):
        held = attempt(
            trees, catalogue_binary, "deny", "clone_vm", None, extra=NO_KERNEL, one_cpu=one_cpu
        )
        assert held == [], (one_cpu, held)
    escaped = escapes_in_tries(trees, catalogue_binary, "deny", "clone_vm", sabotaged("sealed"))
    assert any("read the secret" in what for what in escaped), escaped


def test_the_gate_is_what_stops_the_link_race(trees: list[Tree], catalogue_binary: Path) -> None:
    """Without Landlock and mounts: the gate holds; without it, the swapped directory is used."""
    for one_cpu in (False, True):
        held = attempt(
            trees, catalogue_binary, "deny", "link_race", None, extra=NO_KERNEL, one_cpu=one_cpu
        )
        assert held == [], (one_cpu, held)
    escaped = escapes_in_tries(trees, catalogue_binary, "deny", "link_race", sabotaged("gate"))
    assert escaped, escaped
