"""Through the agent (or a mount) for real: the syscalls programs use, compared with Linux.

Each property runs the syscall program twice, on a fresh directory of the
system (under ``aviary run``, or on a mounted file system) and on a fresh local
directory, and requires the same lines: return values, errno names, the offset
after every read, write and seek, stat fields, listings. The named families are
fixed sequences, so that a defect is reported by what it breaks (offsets,
append, seek_end, ...); ``syscall_sequences`` draws random sequences from the
same operations and shrinks a failure to a short one, printed with the command
that replays it.

A stat field a driver cannot carry (``syscall_stat_field[perm]`` for a server
that forces 0600) is a declared gap: that property is expected to fail, and the
other properties compare every line with that field masked.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from conformance.plugin import SETUP_KEY, Evidence, Way, _gap_reason
from conformance.syscall_runs import MASKABLE_FIELDS, Runs, compare, run_batch, run_both


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # The program runs on a file system: through the agent or on a mount, never "direct".
    if "syscall_way" in metafunc.fixturenames:
        setup = metafunc.config.stash[SETUP_KEY]
        combos = [(s, t) for s in setup.servers for t in setup.throughs if t != "direct"]
        metafunc.parametrize(
            "way", combos, ids=[f"{s}-{t}" for s, t in combos], scope="session", indirect=True
        )


@pytest.fixture
def syscall_way(way: Way) -> Way:
    return way


def masked_fields(request: pytest.FixtureRequest, way: Way) -> set[str]:
    """The stat fields this driver, server and way declare it cannot carry."""
    setup = request.config.stash[SETUP_KEY]
    return {
        name
        for name in MASKABLE_FIELDS
        if _gap_reason(setup, way.through, f"syscall_stat_field[{name}]", way.server_name)
    }


def check(
    way: Way,
    program: Path,
    operations: list[str],
    masked: set[str],
    evidence: Evidence | None = None,
    runs: Runs | None = None,
) -> None:
    if runs is None:
        runs = run_both(way, program, operations, None)
    differences = compare(runs, operations, masked)
    if differences:
        if evidence is not None:
            for difference in differences[:3]:
                evidence.add(str(difference))
        shown = "\n  ".join(str(d) for d in differences[:8])
        pytest.fail(
            f"{len(differences)} lines differ from Linux:\n  {shown}\nreplay: {runs.replay}"
        )


#: Fixed sequences, one per family of syscalls whose bookkeeping an agent keeps itself.
FAMILIES: dict[str, list[str]] = {
    # Offsets after reads at and past end of file, pread/pwrite leave the offset alone.
    "offsets": [
        "open 0 f RDWR|CREAT 644",
        "write 0 10 1",
        "read 0 4",
        "lseek 0 0 SET",
        "read 0 4",
        "read 0 100",
        "read 0 100",
        "write 0 3 2",
        "lseek 0 0 CUR",
        "pread 0 5 8",
        "pwrite 0 4 20 3",
        "lseek 0 0 CUR",
        "read 0 100",
        "fstat 0",
    ],
    # A process reads its own writes at once, through the descriptor that wrote and through
    # another one (a read cache must drop what a write or truncate changed), through an
    # open of the new file and through one of the file with bytes in it (a cache may treat
    # the two differently).
    "own_writes": [
        "open 0 f RDWR|CREAT 644",
        "write 0 100 1",
        "pread 0 100 0",
        "pwrite 0 10 5 2",
        "pread 0 100 0",
        "open 1 f RDONLY 0",
        "read 1 30",
        "pwrite 0 10 40 3",
        "read 1 30",
        "ftruncate 0 50",
        "read 1 100",
        "pread 1 100 0",
        "truncate f 7",
        "pread 0 100 0",
        "pread 1 100 0",
        "write 0 4 4",
        "pread 1 100 0",
        "open 3 f RDWR 0",
        "pread 3 200 0",
        "pwrite 3 6 10 5",
        "pread 3 200 0",
        "pread 0 200 0",
        "open 2 f WRONLY|TRUNC 0",
        "pread 1 100 0",
        "read 0 100",
    ],
    # O_APPEND: every write goes to the end, wherever the offset was put.
    "append": [
        "open 0 f WRONLY|CREAT 644",
        "write 0 8 1",
        "open 1 f WRONLY|APPEND 0",
        "lseek 1 0 SET",
        "write 1 3 2",
        "write 0 2 3",
        "write 1 4 4",
        "pwrite 0 2 0 5",
        "fstat 1",
        "open 2 f RDONLY 0",
        "read 2 100",
    ],
    # SEEK_END sees writes made through another descriptor; seeks before 0 fail; holes read 0.
    "seek_end": [
        "open 0 f RDWR|CREAT 644",
        "open 1 f RDWR 0",
        "write 0 10 1",
        "lseek 1 0 END",
        "lseek 1 -3 END",
        "read 1 100",
        "lseek 1 -20 END",
        "lseek 1 -1 SET",
        "lseek 1 5 CUR",
        "lseek 0 100 END",
        "write 0 1 2",
        "lseek 1 0 END",
        "pread 1 5 105",
        "pread 1 10 50",
        "lseek 1 3 CUR",
    ],
    # readv/writev across two buffers, short at end of file; no bytes from a directory.
    "vectored": [
        "open 0 f RDWR|CREAT 644",
        "writev 0 3 5 1",
        "writev 0 0 4 2",
        "lseek 0 2 SET",
        "readv 0 4 100",
        "readv 0 1 1",
        "lseek 0 0 SET",
        "readv 0 0 6",
        "mkdirat cwd d 755",
        "open 1 d RDONLY|DIRECTORY 0",
        "readv 1 0 0",
        "readv 1 0 1",
    ],
    # Transfers across block and message boundaries, up to just over 1 MiB.
    "large_transfer": [
        "open 0 f RDWR|CREAT 644",
        "write 0 1048577 3",
        "lseek 0 0 SET",
        "read 0 1048577",
        "pread 0 65537 4095",
        "pwrite 0 70000 1000000 4",
        "fstat 0",
        "lseek 0 -10 END",
        "read 0 100",
    ],
    # stat, lstat, fstat, fstatat (NOFOLLOW, empty path) and statx on every kind of file.
    "stat_calls": [
        "mkdirat cwd d 755",
        "open 0 d/f WRONLY|CREAT 644",
        "write 0 7 1",
        "symlinkat f cwd d/l",
        "symlinkat missing cwd dangling",
        "stat d/f",
        "lstat d/l",
        "stat d/l",
        "stat dangling",
        "lstat dangling",
        "fstat 0",
        "open 1 d RDONLY|DIRECTORY 0",
        "fstatat 1 f 0",
        "fstatat 1 l NOFOLLOW",
        "fstatat 1 l 0",
        "fstatat 0 '' EMPTY",
        "statx 1 l NOFOLLOW",
        "statx cwd d/l 0",
        "statx 1 missing 0",
        "fstatat 1 f/x 0",
    ],
    # getdents64: names and types, dot files, on a file (ENOTDIR), each on a fresh descriptor.
    "getdents": [
        "mkdirat cwd d 755",
        "open 0 d/.hidden WRONLY|CREAT 644",
        "open 1 d/a WRONLY|CREAT 644",
        "mkdirat cwd d/sub 755",
        "symlinkat a cwd d/ln",
        "open 2 d RDONLY|DIRECTORY 0",
        "getdents 2",
        "open 3 d/b WRONLY|CREAT 644",
        "open 4 d RDONLY|DIRECTORY 0",
        "getdents 4",
        "open 5 d/a RDONLY 0",
        "getdents 5",
        "open 6 d/sub RDONLY|DIRECTORY 0",
        "getdents 6",
    ],
    # rewinddir: getdents64 after lseek(fd, 0, SEEK_SET) sees names created since.
    "getdents_rewind": [
        "mkdirat cwd d 755",
        "open 0 d/a WRONLY|CREAT 644",
        "open 1 d RDONLY|DIRECTORY 0",
        "getdents 1",
        "open 2 d/b WRONLY|CREAT 644",
        "unlinkat cwd d/a 0",
        "getdents 1",
    ],
    # chdir/fchdir and relative paths; getcwd after each move.
    "cwd": [
        "mkdirat cwd d 755",
        "mkdirat cwd d/e 755",
        "chdir d",
        "getcwd",
        "open 0 f WRONLY|CREAT 644",
        "write 0 3 1",
        "stat ../d/f",
        "chdir e",
        "getcwd",
        "stat ../f",
        "open 1 .. RDONLY|DIRECTORY 0",
        "chdir /",
        "getcwd",
        "fchdir 1",
        "getcwd",
        "stat f",
        "chdir missing",
        "chdir d/f",
        "getcwd",
    ],
    # *at calls relative to a directory descriptor that is not the current directory.
    "at_calls": [
        "mkdirat cwd d 755",
        "open 0 d RDONLY|DIRECTORY 0",
        "mkdirat 0 sub 755",
        "openat 1 0 sub/f RDWR|CREAT 644",
        "write 1 5 1",
        "renameat 0 sub/f 0 g",
        "linkat 0 g 0 h",
        "symlinkat g 0 s",
        "readlinkat 0 s",
        "fstatat 0 h 0",
        "unlinkat 0 sub REMOVEDIR",
        "unlinkat 0 g 0",
        "openat 2 0 h RDONLY 0",
        "read 2 100",
        "openat 3 cwd d/s RDONLY 0",
        "read 3 10",
        "mkdirat 0 sub 755",
        "openat 4 0 sub RDONLY|DIRECTORY 0",
        "openat 5 4 ../h RDONLY 0",
        "read 5 2",
    ],
    # O_NOFOLLOW and AT_SYMLINK_NOFOLLOW never go through a final symlink.
    "nofollow": [
        "open 0 f WRONLY|CREAT 644",
        "write 0 4 1",
        "symlinkat f cwd l",
        "symlinkat nowhere cwd d",
        "open 1 l RDONLY|NOFOLLOW 0",
        "open 2 l RDONLY 0",
        "read 2 10",
        "open 3 l PATH|NOFOLLOW 0",
        "fstatat 3 '' EMPTY",
        "open 4 d WRONLY|CREAT|NOFOLLOW 644",
        "lstat nowhere",
        "open 5 d WRONLY|CREAT|EXCL 644",
        "lstat nowhere",
        "fstatat cwd l NOFOLLOW",
        "open 6 d WRONLY|CREAT 644",
        "lstat nowhere",
    ],
    # dup and fork share one open file description, so one offset.
    "dup_fork": [
        "open 0 f RDWR|CREAT 644",
        "write 0 20 1",
        "lseek 0 0 SET",
        "dup 0 1",
        "read 1 5",
        "lseek 0 0 CUR",
        "forkread 0 4",
        "lseek 1 0 CUR",
        "forkwrite 1 3 2",
        "read 0 100",
        "lseek 1 0 END",
        "close 0",
        "read 1 5",
        "lseek 1 2 SET",
        "forkread 1 100",
        "lseek 1 0 CUR",
    ],
    # A unix socket bound by a relative name appears in the current directory.
    "bind_relative": [
        "mkdirat cwd d 755",
        "chdir d",
        "bind sock",
        "lstat sock",
        "lstat /d/sock",
        "bind sock",
        "unlinkat cwd sock 0",
        "lstat sock",
    ],
    # Descriptors that are not open: EBADF, whatever the call; a file as a directory: ENOTDIR,
    # after what the call looks up before it (rename: both directories; link: the old name).
    "bad_descriptors": [
        "open 0 a WRONLY|CREAT 644",
        "renameat 5 a cwd b",
        "renameat cwd a 5 b",
        "renameat 0 a cwd b",
        "renameat cwd missing 0 b",
        "linkat cwd missing 0 b",
        "linkat cwd a 0 b",
        # The names in order, each whole: the old one's descriptor and walk come first.
        "mkdirat cwd d 755",
        "open 2 d RDONLY|DIRECTORY 0",
        "renameat 0 a 2 d/../a",
        "renameat 7 a 2 d/../a",  # a bad old descriptor before a new name the agent refuses
        "renameat cwd d/d/x 0 a",
        "linkat cwd d/d/x 0 a",
        "openat 1 7 a RDONLY 0",
        "fstatat 9 a 0",
        "mkdirat 9 x 755",
        "unlinkat 9 a 0",
        "read 9 1",
        "fstat 9",
        "fchdir 9",
        # A name below a file's descriptor is ENOTDIR, even once the file's name is gone.
        "open 4 u RDWR|CREAT 644",
        "unlinkat cwd u 0",
        "openat 5 4 x RDONLY 0",
        "fstatat 4 x 0",
    ],
    # chmod reaches the file: modes come back as set.
    "chmod": [
        "open 0 f WRONLY|CREAT 600",
        "fchmodat cwd f 640",
        "stat f",
        "fchmodat cwd f 604",
        "fstat 0",
        "mkdirat cwd d 700",
        "fchmodat cwd d 751",
        "stat d",
    ],
    # Errors of the common calls (the matrix covers every operation and condition).
    "errno": [
        "open 0 missing RDONLY 0",
        "open 0 missing/f WRONLY|CREAT 644",
        "mkdirat cwd d 755",
        "open 1 d WRONLY 0",
        "open 2 d/f WRONLY|CREAT 644",
        "open 3 d/f WRONLY|CREAT|EXCL 644",
        "open 4 d/f/x RDONLY 0",
        "unlinkat cwd d 0",
        "unlinkat cwd d REMOVEDIR",
        "mkdirat cwd d 755",
        "read 9 1",
        "lseek 9 0 SET",
        "open 5 d RDONLY|DIRECTORY 0",
        "read 5 10",
        "write 5 1 1",
        "pread 5 1 -3",
        "pread 0 1 -3",
        "open 6 d/f RDONLY|DIRECTORY 0",
        "renameat cwd d cwd d/sub",
        "stat /%300",
    ],
}

#: Fields a family compares even where a stat-field gap masks them elsewhere: the chmod
#: sequence looks at modes only after chmod, which a server that forces 0600 on create keeps.
ALWAYS_COMPARED: dict[str, set[str]] = {"chmod": {"perm"}}

#: One sequence per field that can be masked, so that each gap names what it hides.
STAT_FIELDS: dict[str, list[str]] = {
    "perm": [
        "open 0 f WRONLY|CREAT 640",
        "fstat 0",
        "open 1 g WRONLY|CREAT 604",
        "stat g",
        "mkdirat cwd d 751",
        "stat d",
        "mkdirat cwd e 700",
        "stat e",
    ],
    "owner": ["open 0 f WRONLY|CREAT 644", "fstat 0", "mkdirat cwd d 755", "stat d"],
    "nlink": [
        "open 0 f WRONLY|CREAT 644",
        "linkat cwd f cwd g",
        "fstat 0",
        "stat g",
        "unlinkat cwd f 0",
        "fstat 0",
    ],
}


#: The fixed sequences' runs, per server and way: all in one process each way.
_FIXED_RUNS: dict[tuple[str, str], dict[str, Runs]] = {}


def fixed_runs(way: Way, program: Path, request: pytest.FixtureRequest) -> dict[str, Runs]:
    key = (way.server_name, way.through)
    if key not in _FIXED_RUNS:
        # Only what this session selected (-k) runs; the rest costs nothing.
        selected = {item.name for item in request.session.items}
        wanted = {
            **{f"family-{n}": ops for n, ops in FAMILIES.items()},
            **{f"field-{n}": ops for n, ops in STAT_FIELDS.items()},
        }
        ids = f"{way.server_name}-{way.through}"
        chosen = {
            name: ops
            for name, ops in wanted.items()
            if f"test_syscall_{'family' if name.startswith('family') else 'stat_field'}"
            f"[{ids}-{name.split('-', 1)[1]}]" in selected
        }
        _FIXED_RUNS[key] = run_batch(way, program, chosen)
    return _FIXED_RUNS[key]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_syscall_family(
    syscall_way: Way,
    syscall_program: Path,
    request: pytest.FixtureRequest,
    evidence: Evidence,
    family: str,
) -> None:
    masked = masked_fields(request, syscall_way) - ALWAYS_COMPARED.get(family, set())
    runs = fixed_runs(syscall_way, syscall_program, request)[f"family-{family}"]
    check(syscall_way, syscall_program, FAMILIES[family], masked, evidence, runs)


@pytest.mark.parametrize("field", sorted(STAT_FIELDS))
def test_syscall_stat_field(
    syscall_way: Way,
    syscall_program: Path,
    request: pytest.FixtureRequest,
    evidence: Evidence,
    field: str,
) -> None:
    others = set(MASKABLE_FIELDS) - {field}
    runs = fixed_runs(syscall_way, syscall_program, request)[f"field-{field}"]
    check(syscall_way, syscall_program, STAT_FIELDS[field], others, evidence, runs)


# -- random sequences -----------------------------------------------------------------------------

NAMES = ["a", "b", "d", "d/x", "d/y", "ln", "/a", "/d/x", "d/../a", "missing/x", "a/x", ".h"]
SLOTS = st.sampled_from(["0", "1", "2", "3"])
DIRS = st.sampled_from(["cwd", "0", "1", "2", "3"])
PATHS = st.sampled_from(NAMES)
SIZES = st.sampled_from(["0", "1", "7", "100", "4096", "65537"])
OFFSETS = st.sampled_from(["0", "1", "5", "-3", "4096", "70000"])
FLAGS = st.sampled_from(
    [
        "RDONLY", "WRONLY|CREAT", "RDWR|CREAT", "RDWR|CREAT|TRUNC", "WRONLY|CREAT|APPEND",
        "RDWR|APPEND", "WRONLY|CREAT|EXCL", "RDONLY|DIRECTORY", "RDONLY|NOFOLLOW", "PATH",
    ]
)  # fmt: skip
SEED = st.sampled_from(["1", "2", "3"])


def _op(name: str, *parts: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(*parts).map(lambda values: " ".join((name, *values)))


OPERATIONS = st.one_of(
    _op("open", SLOTS, PATHS, FLAGS, st.just("644")),
    _op("openat", SLOTS, DIRS, PATHS, FLAGS, st.just("640")),
    _op("close", SLOTS),
    _op("dup", SLOTS, SLOTS),
    _op("read", SLOTS, SIZES),
    _op("write", SLOTS, SIZES, SEED),
    _op("readv", SLOTS, SIZES, SIZES),
    _op("writev", SLOTS, SIZES, SIZES, SEED),
    _op("pread", SLOTS, SIZES, OFFSETS),
    _op("pwrite", SLOTS, SIZES, st.sampled_from(["0", "5", "4096"]), SEED),
    _op("lseek", SLOTS, OFFSETS, st.sampled_from(["SET", "CUR", "END"])),
    _op("ftruncate", SLOTS, st.sampled_from(["0", "3", "5000"])),
    _op("fstat", SLOTS),
    _op("fstatat", DIRS, PATHS, st.sampled_from(["0", "NOFOLLOW"])),
    _op("statx", DIRS, PATHS, st.sampled_from(["0", "NOFOLLOW"])),
    _op("getdents", SLOTS),
    _op("chdir", st.sampled_from(["d", "/", "..", "/d", "missing", "a"])),
    _op("fchdir", SLOTS),
    st.just("getcwd"),
    _op("mkdirat", DIRS, PATHS, st.just("755")),
    _op("unlinkat", DIRS, PATHS, st.sampled_from(["0", "REMOVEDIR"])),
    _op("renameat", DIRS, PATHS, DIRS, PATHS),
    _op("linkat", DIRS, PATHS, DIRS, PATHS),
    _op("symlinkat", st.sampled_from(["a", "d", "missing", "ln"]), DIRS, PATHS),
    _op("readlinkat", DIRS, PATHS),
    _op("forkread", SLOTS, SIZES),
    _op("forkwrite", SLOTS, SIZES, SEED),
)
#: Every sequence starts from a small tree, so that most operations meet something.
PRELUDE = [
    "mkdirat cwd d 755",
    "open 0 a RDWR|CREAT 644",
    "write 0 10 1",
    "open 1 d RDONLY|DIRECTORY 0",
]


#: What a declared gap of a family takes out of the random sequences: operations holding
#: one of these words. A gap narrows the random comparison; it never switches it off.
NARROWED_BY: dict[str, tuple[str, ...]] = {
    "getdents": ("getdents",),
    "getdents_rewind": ("getdents",),
    "vectored": ("readv", "writev"),
    "nofollow": ("NOFOLLOW", "PATH", "EXCL"),
    "bind_relative": ("bind",),
    "cwd": ("chdir", "fchdir", "getcwd"),
    "at_calls": ("linkat", "symlinkat", "readlinkat"),
    "stat_calls": ("symlinkat", "readlinkat"),
    "dup_fork": ("dup", "fork"),
    "append": ("APPEND",),
}


#: Operations that write through a descriptor (its slot is their first argument).
WRITES = ("write", "writev", "pwrite", "ftruncate", "forkwrite")


def writes_at_close(way: Way) -> bool:
    """Whether the protocol sends what a descriptor wrote only when its open is closed."""
    caps = way.capabilities
    return caps.consistency == "close-to-open" and not caps.write_through


def closing_writes(operations: list[str]) -> list[str]:
    """``operations`` with each write followed by a close of its descriptor, and an open that
    truncates closed at once: where writes reach the server at close, what a sequence
    compares after that is defined (the close-to-open model), not a race with the upload."""
    closed: list[str] = []
    for operation in operations:
        closed.append(operation)
        words = operation.split()
        if words[0] in WRITES or (words[0] in ("open", "openat") and "TRUNC" in operation):
            closed.append(f"close {words[1]}")
    return closed


def narrowing(request: pytest.FixtureRequest, way: Way) -> tuple[tuple[str, ...], bool]:
    """The words whose operations the random sequences leave out, and whether EBADF lines
    are compared, by this driver's declared family gaps."""
    setup = request.config.stash[SETUP_KEY]
    words: tuple[str, ...] = ()
    for family, family_words in NARROWED_BY.items():
        if _gap_reason(setup, way.through, f"syscall_family[{family}]", way.server_name):
            words += family_words
    if writes_at_close(way):
        words += ("dup", "fork")  # a write reaches the server at the open's last close
    ebadf = not _gap_reason(setup, way.through, "syscall_family[bad_descriptors]", way.server_name)
    return words, ebadf


def test_syscall_sequences(
    syscall_way: Way, syscall_program: Path, request: pytest.FixtureRequest
) -> None:
    masked = masked_fields(request, syscall_way)
    left_out, compare_ebadf = narrowing(request, syscall_way)
    if not compare_ebadf:
        masked = masked | {"EBADF"}
    examples = max(1, request.config.getoption("--examples") // 5)

    setup = request.config.stash[SETUP_KEY]
    declared = _gap_reason(setup, syscall_way.through, "syscall_sequences", syscall_way.server_name)
    # A declared gap only has to show that it still fails: no shrinking of a known failure.
    phases = (Phase.generate,) if declared else tuple(Phase)

    @settings(
        max_examples=examples,
        phases=phases,
        deadline=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(st.lists(OPERATIONS, min_size=1, max_size=25))
    def sequences(operations: list[str]) -> None:
        kept = PRELUDE + [op for op in operations if not any(word in op for word in left_out)]
        if writes_at_close(syscall_way):
            kept = closing_writes(kept)
        check(syscall_way, syscall_program, kept, masked)

    sequences()
