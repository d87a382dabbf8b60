"""Programs using files the ways real programs do, on a local disk and through the agent.

Covers: the agent's descriptor, offset, open-file and mapping handling as a whole, on
both Chirp servers, with ``--cache off``, ``cto`` and ``whole`` (whose promises a single
program taking turns with itself cannot tell from a local disk's: under ``whole`` every
open of a file in the run shares one copy).

Scenario: ``tests/scenarios/file_semantics.py`` plays each scenario (descriptors shared by
fork and dup, renames and unlinks of open files, O_TRUNC under a reader, truncates, holes
and vectors, a shared mapping beside writes, two processes taking turns, working and open
directories renamed, locks on renamed and unlinked files, hard and symbolic links and
times set one at a time, pwrite on O_APPEND opens and truncates by name under open
descriptors, a directory read in parts with seekdir and emptied while read, three
processes writing one sqlite database) and prints what
every step saw. Natively on a local directory and under ``aviary run`` on a Chirp mount it
must print the same; so must the scenarios each other protocol can express, on SFTP and
XRootD (off, cto) and on FTP and WebDAV (whole: their writes reach the server at close).
Each seeded regression must be caught, at the step that names it: a rename that copies
(an open file's later writes go to the old object), and, under cto, other opens of a
file not told that it changed (a reader answers from stale bytes), and the placeholder
an earlier mmap filled kept after writes (a new mapping shows old bytes),
working directories left at their old names by a rename (a write lands in a new
directory made under the old name), and a descriptor whose name was renamed over still
changed by that name (fchmod changes the new file), and ".." after a symlink taken by name
(a file made beside the link instead of beside its target), and a removed working
directory's name kept (a file lands in a new directory made under it), and locks kept by
name (another process locks a locked file through the name it was renamed to), and, under
whole, a copy per open (the appends of one process lost to the other's write-back) and a
whole copy's locks kept by the agent per copy (a second open never conflicts with the first),
and a positioned write on an O_APPEND open put at its offset, a whole copy deaf to a truncate
by name, a hard-linked or symlinked file written back by renaming over its name, and seeks
on remote directories left to the kernel under whole.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from servers import RunningServer
from tests.helpers import Seen, printed_steps, printed_steps_under_agent, served

PROGRAM = Path(__file__).with_name("scenarios") / "file_semantics.py"
SCENARIOS = (
    "descriptors",
    "names",
    "sizes",
    "mappings",
    "processes",
    "directories",
    "replaced",
    "locks",
    "links",
    "appends",
    "listings",
    "database",
)

#: ``aviary run`` with a seeded regression: "rename-copies" renames by copying (a handle
#: keeps the old object, as a get/put protocol's would), "changes-unheard" tells no other
#: open of a file that it changed (under cto their buffers then answer with stale bytes),
#: "copy-kept" keeps what an mmap copied into a placeholder after the file changed,
#: "renames-unfollowed" leaves working directories and open directories at their old names,
#: "names-kept" forgets that an open file's name was unlinked or renamed over,
#: "dotdot-by-name" collapses ".." by name (beside the link, not its target),
#: "removals-unheard" keeps a removed working directory's name for relative paths,
#: "locks-by-name" keys locks by the name they were taken under (they stay behind at a
#: rename),
#: "appends-at-offset" puts a pwrite on an O_APPEND open at its offset (the server appends,
#: the read buffer takes it at the offset), "copies-deaf" keeps a --cache whole copy from
#: taking a truncate by name, "links-replaced" writes a hard-linked file back by renaming a
#: new file over its name (the other name keeps the old bytes), "symlinks-replaced" writes a
#: file opened through a symlink back over the link, "directory-seeks-kernels" leaves lseek
#: untrapped under --cache whole (seekdir on a remote directory moves nothing),
#: "splice-output-unchecked" looks at splice's input descriptor only (a splice into a
#: remote file then writes its placeholder: the bytes never reach the server),
#: "aio-unchecked" lets Linux AIO requests on remote files through (to the placeholder),
#: "lock-names-unmoved" leaves locks known by name where they were at a rename or unlink,
#: "changes-by-name" tells a change to the opens of the changed name only (an open through a
#: symlink or another hard link keeps stale bytes under cto),
#: "listing-numbers-made-up" lists entries without their inode numbers (d_ino is then the
#: entry's place, not what stat says),
#: "copy-deaf-to-times" leaves a --cache whole copy's times alone when times are set on its
#: file (the write-back at close puts the copy's back),
#: "maps-sent-late" lets an open read a file while the stores of its unmapped map wait
#: for a later collection,
#: "maps-unheld" releases a file whose descriptors are closed though a map of it remains
#: (the stores made through the map afterwards never reach the server),
#: "identity-replaced" writes a --cache whole copy back by renaming a new file over its
#: name even while it stays open (sqlite sees another database file and refuses to write),
#: "copies-by-name" finds a --cache whole copy open in the run by its name only (an open
#: through a symlink or another hard link gets a copy of its own),
#: "copies-apart" gives each open its own --cache whole copy (the last written back wins),
#: "whole-locks-by-agent" keeps a whole copy's locks in the agent, by open (two opens of
#: one copy look like one description, which never conflicts with itself).
_CLI = """
import sys
from drivers.chirp._driver import ChirpDriver
from reference_agent import files
seeded = sys.argv.pop(1)
if seeded == "rename-copies":
    def rename_by_copy(self, old, new):
        self.write_file(new, self.read_file(old))
        self.unlink(old)
    ChirpDriver.rename = rename_by_copy
elif seeded == "changes-unheard":
    files.RemoteFileTable.changed = lambda self, *args, **kwargs: None
elif seeded == "copy-kept":
    files.RemoteFile.outdated = lambda self: None
elif seeded == "names-kept":
    files.RemoteFileTable.unnamed = lambda self, driver, path, former_name: None
elif seeded == "dotdot-by-name":
    from reference_agent import agent
    from reference_agent.namespace import logical_path
    agent.physical_dotdots = lambda path, base, resolve, driver_for: logical_path(path, base)
    agent.physical_path = lambda logical, resolve, driver_for: logical
elif seeded == "removals-unheard":
    from reference_agent import agent
    agent.Agent.removed = lambda self, driver, path, logical: self._unnamed(driver, path)
elif seeded == "changes-by-name":
    def changed_by_name(self, driver, remote_path, change, by=None, inode=None):
        for other in list(self._files.values()):
            if other is not by and other.driver is driver and other.remote_path == remote_path:
                other.changed_elsewhere(change)
    files.RemoteFileTable.changed = changed_by_name
elif seeded == "listing-numbers-made-up":
    from drivers import DirEntry
    readdir = ChirpDriver.readdir
    ChirpDriver.readdir = lambda self, path: [DirEntry(e.name, e.type) for e in readdir(self, path)]
elif seeded == "copy-deaf-to-times":
    files.RemoteFile.times_set = lambda self, times: None
elif seeded == "maps-sent-late":
    files.RemoteFileTable.mapped = lambda self, driver, path: False
elif seeded == "maps-unheld":
    files.mapped_by = lambda pids, keys: set()
elif seeded == "identity-replaced":
    sync = files.RemoteFile.sync
    files.RemoteFile.sync = lambda self, in_place=False: sync(self)
elif seeded == "copies-by-name":
    live_copy = files.RemoteFileTable.live_copy
    files.RemoteFileTable.live_copy = lambda self, driver, path, st=None: live_copy(self, driver, path)
elif seeded == "copies-apart":
    files.RemoteFileTable.live_copy = lambda self, driver, path, st=None: None
elif seeded == "whole-locks-by-agent":
    from reference_agent import agent
    agent.Agent.content_file = agent.Agent.remote_file
elif seeded == "appends-at-offset":
    from reference_agent import sys_read_write
    sys_read_write._write_offset = lambda remote, offset: offset
elif seeded == "copies-deaf":
    files.RemoteFile._copy_takes = lambda self, change: None
elif seeded == "links-replaced":
    write_back = files.write_back
    files.write_back = lambda *args, linked=False: write_back(*args)
elif seeded == "symlinks-replaced":
    from reference_agent import whole_cache
    whole_cache._file_named = lambda driver, path: path
elif seeded == "directory-seeks-kernels":
    from reference_agent import _ptrace, table
    trapped = table.trapped_numbers
    def without_lseek(cache, features=frozenset()):
        numbers = trapped(cache, features)
        return numbers - {_ptrace.syscall_number("lseek")} if cache == "whole" else numbers
    table.trapped_numbers = without_lseek
elif seeded == "splice-output-unchecked":
    from reference_agent import sys_file
    sys_file._DESCRIPTOR_ARGUMENTS = {}
elif seeded == "aio-unchecked":
    from reference_agent import sys_file
    sys_file.sys_io_submit = lambda agent_, call: None
elif seeded == "lock-names-unmoved":
    from reference_agent import locks
    locks.LockTable.rekey = lambda self, move: None
elif seeded == "locks-by-name":
    from reference_agent import locks
    files.RemoteFile.identity = lambda self: self.remote_path
    locks.LockTable.rekey = lambda self, move: None
elif seeded == "renames-unfollowed":
    from reference_agent import agent
    agent.Agent.renamed = lambda self, *args: None
from harness.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module", params=["chirp/aviary", "chirp/cctools"])
def server(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    with served(request.param) as running:
        yield running


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Seen]:
    """What the kernel says on a local directory, per scenario."""
    return {
        scenario: printed_steps(
            [sys.executable, str(PROGRAM), scenario, str(tmp_path_factory.mktemp("local") / "w")]
        )
        for scenario in SCENARIOS
    }


def _under_agent(
    server: RunningServer, tmp_path: Path, scenario: str, cache: str, seeded: str = "none"
) -> Seen:
    mount_point = tmp_path / "mnt"
    work = mount_point / f"{scenario}-{cache}-{seeded}-{tmp_path.name}"
    options = ["--cache", cache, "-M", f"{mount_point}=chirp://127.0.0.1:{server.port}/"]
    return printed_steps_under_agent(
        _CLI, seeded, options, [sys.executable, str(PROGRAM), scenario, str(work)]
    )


@pytest.mark.parametrize("cache", ["off", "cto", "whole"])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_a_program_sees_what_it_sees_on_a_local_disk(
    server: RunningServer,
    native: dict[str, Seen],
    tmp_path: Path,
    scenario: str,
    cache: str,
) -> None:
    assert _under_agent(server, tmp_path, scenario, cache) == native[scenario]


#: The other protocols, where the agent answers in Python, with the scenarios whose every
#: step the protocol can express: SFTP lacks only inode numbers and link counts (links,
#: listings), XRootD symlinks, times and renames over open files; FTP and WebDAV send a
#: file's writes at its close, so they are checked under --cache whole, whose one copy
#: per file gives every descriptor of a run one content (and they lack links, and WebDAV
#: times).
OTHER_PROTOCOLS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "sftp/openssh": (("off", "cto"), tuple(s for s in SCENARIOS if s not in ("links", "listings"))),
    "root/xrootd": (("off", "cto"), ("descriptors", "names", "sizes", "mappings", "processes")),
    "dav/wsgidav": (
        ("whole",),
        ("descriptors", "names", "sizes", "mappings", "processes", "database"),
    ),
    "ftp/pyftpdlib": (
        ("whole",),
        ("descriptors", "names", "sizes", "mappings", "processes", "appends", "database"),
    ),
}


@pytest.fixture(scope="module", params=list(OTHER_PROTOCOLS))
def other_server(request: pytest.FixtureRequest) -> Iterator[tuple[str, RunningServer]]:
    with served(request.param) as running:
        yield request.param, running


def test_other_protocols_show_what_a_local_disk_shows(
    other_server: tuple[str, RunningServer], native: dict[str, Seen], tmp_path: Path
) -> None:
    key, server = other_server
    caches, scenarios = OTHER_PROTOCOLS[key]
    for cache in caches:
        for scenario in scenarios:
            work = f"/mnt/{scenario}-{cache}-{tmp_path.name}"
            seen = printed_steps_under_agent(
                _CLI, "none", ["--cache", cache, "-M", f"/mnt={server.url('/')}"],
                [sys.executable, str(PROGRAM), scenario, work], env=server.client_env,
            )  # fmt: skip
            assert (cache, scenario, seen) == (cache, scenario, native[scenario])


@pytest.mark.parametrize(
    ("seeded", "cache", "scenario", "step"),
    [
        ("rename-copies", "off", "names", "written after a rename"),
        ("changes-unheard", "cto", "names", "a reader follows a writer"),
        ("copy-kept", "off", "mappings", "a private mapping made after writes"),
        ("renames-unfollowed", "off", "directories", "a write in the moved working directory"),
        ("names-kept", "off", "replaced", "fchmod after a rename over its name"),
        ("dotdot-by-name", "off", "directories", "where '..' after a link led"),
        ("removals-unheard", "off", "directories", "a file made in a removed working directory"),
        ("locks-by-name", "off", "locks", "locked, by the name it was renamed to"),
        ("copies-apart", "whole", "processes", "appends in turns"),
        ("copies-by-name", "whole", "links", "one file open under three names"),
        ("identity-replaced", "whole", "database", "three writers"),
        ("listing-numbers-made-up", "off", "listings", "listed inode numbers are stat's"),
        ("copy-deaf-to-times", "whole", "appends", "times set by name while open for writing"),
        ("maps-sent-late", "off", "mappings", "stored through a map whose descriptor was closed"),
        ("maps-unheld", "whole", "mappings", "stored through a map whose descriptor was closed"),
        ("changes-by-name", "cto", "links", "a reader by one name, a writer by another"),
        ("whole-locks-by-agent", "whole", "locks", "locked, by its name"),
        ("appends-at-offset", "cto", "appends", "pwrite appends to a file"),
        ("copies-deaf", "whole", "appends", "truncated by name"),
        ("links-replaced", "whole", "links", "written through the other name"),
        ("symlinks-replaced", "whole", "links", "created through a dangling link"),
        ("directory-seeks-kernels", "whole", "listings", "seekdir back to telldir"),
    ],
)
def test_each_seeded_regression_is_caught(
    server: RunningServer,
    native: dict[str, Seen],
    tmp_path: Path,
    seeded: str,
    cache: str,
    scenario: str,
    step: str,
) -> None:
    seen = _under_agent(server, tmp_path, scenario, cache, seeded)
    differing = [
        row[0] for row, expected in zip(seen, native[scenario], strict=False) if row != expected
    ]
    assert step in differing, differing


@pytest.mark.parametrize("seeded", ["none", "lock-names-unmoved"])
def test_locks_follow_names_where_the_protocol_has_no_inode_numbers(
    native: dict[str, Seen], tmp_path: Path, seeded: str
) -> None:
    """SFTP has no inode numbers: the agent knows a locked file by its name, moved with it
    by a rename through the agent and set apart by an unlink, so the locks scenario still
    prints what a local disk does (seeded: names left in place, caught at the rename)."""
    with served("sftp/openssh") as server:
        mount_point = tmp_path / "mnt"
        options = ["--cache", "off", "-M", f"{mount_point}={server.url('/')}"]
        argv = [sys.executable, str(PROGRAM), "locks", str(mount_point / f"locks-{seeded}")]
        seen = printed_steps_under_agent(_CLI, seeded, options, argv, server.client_env)
    differing = [
        row[0] for row, expected in zip(seen, native["locks"], strict=True) if row != expected
    ]
    assert differing == (
        []
        if seeded == "none"
        else ["locked, by the name it was renamed to", "a new file under the unlinked name"]
    )


_SPLICE = r"""
import errno, json, os, sys
r, w = os.pipe()
os.write(w, b"from a pipe")
out = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
try:
    answer = os.splice(r, out, 11)
except OSError as exc:
    answer = errno.errorcode[exc.errno or 0]
print(json.dumps([["splice into a remote file", answer]]))
"""


_AIO = r"""
import ctypes, errno, json, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
IO_SETUP, IO_SUBMIT, IO_GETEVENTS, PWRITE = 206, 209, 208, 1
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
context = ctypes.c_ulong(0)
assert libc.syscall(IO_SETUP, 8, ctypes.byref(context)) == 0
data = ctypes.create_string_buffer(b"written by aio")
iocb = ctypes.create_string_buffer(
    struct.pack("<QIIHhIQQqQII", 0, 0, 0, PWRITE, 0, fd, ctypes.addressof(data), 14, 0, 0, 0, 0)
)
requests = (ctypes.c_void_p * 1)(ctypes.addressof(iocb))
submitted = libc.syscall(IO_SUBMIT, context, 1, requests)
if submitted < 0:
    answer = errno.errorcode[ctypes.get_errno()]
else:
    events = ctypes.create_string_buffer(32)
    libc.syscall(IO_GETEVENTS, context, 1, 1, events, None)
    answer = struct.unpack_from("<q", events.raw, 16)[0]
print(json.dumps([["io_submit of a write to a remote file", answer]]))
"""


#: Calls that move bytes the kernel would move to or from a remote file's placeholder: each
#: is refused (ENOSYS, named on stderr), never let through. (program, seed letting it
#: through, the count the program is told with the seed, which never reaches the server).
_BYPASSES = {
    "splice": (_SPLICE, "splice-output-unchecked", 11),
    "linux-aio": (_AIO, "aio-unchecked", 14),
}


@pytest.mark.parametrize("seeded", [False, True])
@pytest.mark.parametrize("call", sorted(_BYPASSES))
def test_calls_the_agent_cannot_follow_are_refused_never_lost(
    server: RunningServer, tmp_path: Path, call: str, seeded: bool
) -> None:
    """splice into a remote file and Linux AIO on one are the kernel's: they would write the
    placeholder and report the bytes written, and the server would never get them. The agent
    refuses them instead (programs fall back to plain I/O); with the seeded pass-through the
    program is told the bytes were written, and the server has none."""
    source, seed, told = _BYPASSES[call]
    program = tmp_path / f"{call}.py"
    program.write_text(source)
    mount_point = tmp_path / "mnt"
    name = f"{call}-{seeded}-{tmp_path.name}"
    options = ["--cache", "off", "-M", f"{mount_point}=chirp://127.0.0.1:{server.port}/"]
    seen = printed_steps_under_agent(
        _CLI, seed if seeded else "none", options,
        [sys.executable, str(program), str(mount_point / name)],
    )  # fmt: skip
    answer = seen[0][1]
    assert (answer, (server.data_dir / name).read_bytes()) == (told if seeded else "ENOSYS", b"")
