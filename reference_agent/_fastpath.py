"""The compiled hot path: trapped calls on plainly local paths resumed without Python.

Where the time of a trapped local call goes (docs/benchmarks.md): the kernel's stop
is a few microseconds, the Python around it (waitpid wrapper, event decoding,
register fetch, path read, namespace resolution, dispatch, resume) several times
that. ``_fastpath.c`` runs the wait/resume loop instead and decides, for a few
whitelisted calls, what the Python agent would decide for a path that stays local:
run it natively. Every other stop comes back to the Python loop as its wait status.

The C source is compiled with gcc on first use into a cache directory (keyed by
the source's hash) and loaded with ctypes. Without gcc, or when the build fails,
``load`` returns None with the reason, and the agent runs its Python loop alone.

What the C side needs of the agent's state is pushed to it: the syscall numbers it
may answer and their path (or descriptor) argument, the path prefixes that are not
plainly local (every mount point, every service directory, ``/proc``), and before
each wait, when they changed, the (device, inode) of every remote file's placeholder
(a descriptor call is native unless its descriptor is one) and the tasks whose
working directory is plainly local (the only ones whose relative paths it may
answer, after joining them onto that directory).

It also answers reads of remote files itself where a driver lets compiled code read on
its connection (``Driver.direct_reads``: Chirp's pread): ``FastPath.serve`` gives an
open a slot (its placeholder, the connection's socket, the request's start, the counts
it may answer, the open's offset in a cell Python reads and writes too), and the
placeholder's slot goes to the C side with it. A large read's time is the server's,
two copies and the stop (docs/benchmarks.md); the Python around the stop and in the
driver cost as much again as one copy.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, NamedTuple, Protocol

from reference_agent import _ptrace
from reference_agent._ptrace import Event
from reference_agent.files import DirectOpen
from reference_agent.namespace import LocalTarget

if TYPE_CHECKING:
    from reference_agent._loop import TracerLoop
    from reference_agent.namespace import Namespace

__all__ = ["FAST_CALLS", "DirectSlot", "FastCall", "FastPath", "install", "load", "why_not"]

_SOURCE: Final = Path(__file__).with_name("_fastpath.c")
_KIND_PATH: Final = 1
_KIND_DESCRIPTOR: Final = 2
_KIND_PROGRAM: Final = 3
_COMPILE_TIMEOUT: Final = 120.0  # seconds for gcc
#: FP_MAX_SERVED of the C side: remote opens whose reads it answers at once.
_MAX_SERVED: Final = 1024
#: FP_MAX_PLACEHOLDERS of the C side: placeholders it keeps (more: it knows none).
_MAX_PLACEHOLDERS: Final = 4096


class FastCall(NamedTuple):
    """What the C side may answer of one call."""

    #: The index of the path argument, or of the descriptor for a descriptor call.
    argument: int
    #: A call on a descriptor: answered when that descriptor is no remote file's placeholder.
    descriptor: bool = False
    #: The index of the flags argument whose AT_EMPTY_PATH makes an empty path a call on
    #: the dirfd (fstat through newfstatat); -1: an empty path always goes to Python.
    empty_path_flags: int = -1
    #: A descriptor call that only reads its file or moves its offset: native on a remote
    #: file whose placeholder the agent filled with its bytes (``RemoteFile.filled``).
    reads: bool = False
    #: An exec: answered when the absolute, plainly local path names nothing (no file, no
    #: link), the kernel's ENOENT, as a search through PATH makes (gcc's for ``as``: eight
    #: of nine); or names a 64-bit ELF program whose loader is plainly local too, or that
    #: has none (no interpreter the namespace moves: ``interpreters.plan_exec`` would leave
    #: it to the kernel). Scripts, links to nothing and anything else go to Python.
    program: bool = False
    #: A read the C side answers itself on a remote file registered for compiled reads
    #: (:meth:`FastPath.serve`): SEQUENTIAL at the open's offset, POSITIONED at the
    #: call's fourth argument; NOT_SERVED: never.
    serves: int = 0


#: ``FastCall.serves``: how a call names where it reads.
NOT_SERVED: Final = 0
SEQUENTIAL: Final = 1
POSITIONED: Final = 2

_PATH_1: Final = FastCall(1)
_DESCRIPTOR: Final = FastCall(0, descriptor=True)
_READING: Final = FastCall(0, descriptor=True, reads=True)

#: The calls the C side may answer, by name. For each, the Python handler runs an
#: absolute, plainly local path (".", ".." and "//" collapsed by name, every directory a
#: ".." leaves plainly local too), or a descriptor that is no remote file's placeholder
#: (or, for a call that reads, a filled one), natively and does nothing else (no record,
#: no rewrite, no state). Calls that change
#: state the agent keeps (chdir, fchdir, dup2, clone) are never here, nor execve but of
#: a path that names nothing or of an ELF program with a plainly local loader (the exec
#: itself still stops in Python, as an event).
FAST_CALLS: Final[Mapping[str, FastCall]] = {
    "stat": FastCall(0),
    "lstat": FastCall(0),
    "access": FastCall(0),
    "readlink": FastCall(0),
    "open": FastCall(0),
    "newfstatat": FastCall(1, empty_path_flags=3),
    "statx": FastCall(1, empty_path_flags=2),
    "faccessat": _PATH_1,
    "faccessat2": _PATH_1,
    "readlinkat": _PATH_1,
    "openat": _PATH_1,
    "close": _DESCRIPTOR,
    "read": FastCall(0, descriptor=True, reads=True, serves=SEQUENTIAL),
    "write": _DESCRIPTOR,
    "pread64": FastCall(0, descriptor=True, reads=True, serves=POSITIONED),
    "pwrite64": _DESCRIPTOR,
    "readv": _READING,
    "writev": _DESCRIPTOR,
    "preadv": _READING,
    "preadv2": _READING,
    "lseek": _READING,
    "fstat": _DESCRIPTOR,
    "execve": FastCall(0, program=True),
    "mmap": FastCall(4, descriptor=True),
    # A shell saves a descriptor with F_DUPFD at every redirection; a compiler removes
    # its temporary files.
    "fcntl": _DESCRIPTOR,
    "unlink": FastCall(0),
    "unlinkat": _PATH_1,
}


class _Placeholders(Protocol):
    """What the waiter reads of the agent's remote file table."""

    def __len__(self) -> int: ...
    @property
    def version(self) -> int: ...
    def placeholder_keys(self) -> Iterable[tuple[int, int, bool, int]]: ...


class DirectSlot:
    """One remote open whose reads the C side answers on its driver's connection.

    ``offset`` is the open's offset, shared with the C side (a read there moves it);
    the agent reads and writes it as the open's own while the slot is in use. The
    requests made are handed to ``on_made(requests, sent, received)`` whenever the C
    side returns a stop to Python, so the driver's counters stay whole.
    """

    __slots__ = ("_fast", "_on_broken", "_on_made", "index", "offset", "stopped")

    def __init__(
        self,
        fast: FastPath,
        index: int,
        offset: ctypes.c_longlong,
        on_broken: Callable[[int], None],
        on_made: Callable[[int, int, int], None],
    ) -> None:
        self._fast = fast
        self._on_broken = on_broken
        self._on_made = on_made
        self.index = index
        self.offset = offset
        self.stopped = False

    @property
    def live(self) -> bool:
        """Whether the C side still answers this open's reads (it stops on its own when
        the connection it was given is not the driver's any more, or broke)."""
        return not self.stopped and bool(self._fast._lib.fp_served_live(self.index))

    def flush(self) -> None:
        """Hand the requests made since the last flush to ``on_made``."""
        counts = (ctypes.c_ulong * 3)()
        self._fast._lib.fp_take_counts(self.index, counts)
        if counts[0]:
            self._on_made(counts[0], counts[1], counts[2])

    def release(self) -> None:
        """Answer no more reads, and free the slot for another open."""
        self._fast._lib.fp_unserve(self.index)
        self.stopped = True
        self.flush()
        self._fast._release_slot(self)

    def broke(self, errno_value: int) -> None:
        self.stopped = True
        self._on_broken(errno_value)


#: FP_PATH_MAX of the C side: the longest path argument it reads.
_PATH_MAX: Final = 4096


class _StopFacts(ctypes.Structure):
    """``struct fp_stop_facts``: what fp_wait learned of the stop it returned."""

    _fields_ = [
        ("pid", ctypes.c_long),
        ("has_nr", ctypes.c_long),
        ("nr", ctypes.c_ulong),
        ("has_registers", ctypes.c_long),
        ("registers", _ptrace.UserRegisters),
        ("has_descriptor", ctypes.c_long),
        ("descriptor", ctypes.c_long),
        ("dev", ctypes.c_ulonglong),
        ("ino", ctypes.c_ulonglong),
        ("broken_slot", ctypes.c_long),
        ("broken_errno", ctypes.c_long),
        ("has_path", ctypes.c_long),
        ("path_address", ctypes.c_ulong),
        ("path_length", ctypes.c_long),
        ("path", ctypes.c_char * _PATH_MAX),
    ]


class FastPath:
    """One loaded copy of the compiled loop, configured for one run."""

    def __init__(self, library: ctypes.CDLL) -> None:
        self._lib = library
        library.fp_clear.restype = None
        library.fp_set_call.restype = ctypes.c_int
        library.fp_add_prefix.argtypes = [ctypes.c_char_p]
        library.fp_add_prefix.restype = ctypes.c_int
        library.fp_answered.restype = ctypes.c_ulong
        library.fp_clear_cwds.restype = None
        library.fp_set_cwd.argtypes = [ctypes.c_int, ctypes.c_char_p]
        library.fp_set_cwd.restype = ctypes.c_int
        library.fp_set_placeholders.argtypes = [
            ctypes.POINTER(ctypes.c_ulonglong),
            ctypes.c_size_t,
        ]
        library.fp_set_placeholders.restype = None
        library.fp_wait.argtypes = [
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_int),
            ctypes.POINTER(_StopFacts),
        ]
        library.fp_wait.restype = ctypes.c_long
        library.fp_held.argtypes = [
            ctypes.POINTER(ctypes.c_int),
            ctypes.c_size_t,
            ctypes.POINTER(ctypes.c_ulonglong),
            ctypes.c_size_t,
            ctypes.POINTER(ctypes.c_ubyte),
        ]
        library.fp_held.restype = ctypes.c_long
        library.fp_set_call.argtypes = [ctypes.c_long] + [ctypes.c_int] * 5
        library.fp_serve.argtypes = [
            ctypes.c_long,
            ctypes.c_ulonglong,
            ctypes.c_ulonglong,
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_ulonglong,
            ctypes.c_ulonglong,
            ctypes.c_longlong,
            ctypes.c_int,
        ]
        library.fp_serve.restype = ctypes.c_int
        library.fp_unserve.argtypes = [ctypes.c_long]
        library.fp_unserve.restype = None
        library.fp_take_counts.argtypes = [ctypes.c_long, ctypes.POINTER(ctypes.c_ulong)]
        library.fp_take_counts.restype = None
        library.fp_served_live.argtypes = [ctypes.c_long]
        library.fp_served_live.restype = ctypes.c_int
        library.fp_served_offsets.restype = ctypes.c_void_p
        library.fp_served_total.restype = ctypes.c_ulong
        self._offsets = (ctypes.c_longlong * _MAX_SERVED).from_address(
            int(library.fp_served_offsets())
        )
        self._quads = (ctypes.c_ulonglong * (4 * _MAX_PLACEHOLDERS))()
        self._cells = [
            ctypes.c_longlong.from_buffer(self._offsets, index * ctypes.sizeof(ctypes.c_longlong))
            for index in range(_MAX_SERVED)
        ]
        self._free_slots = list(range(_MAX_SERVED - 1, -1, -1))
        self._slots: dict[int, DirectSlot] = {}
        self._served_seen = 0  # fp_served_total when the slots' counts were last taken
        self._status = ctypes.c_int(0)
        self._status_ref = ctypes.byref(self._status)
        self._facts = _StopFacts()
        self._facts_ref = ctypes.byref(self._facts)
        self._wait = library.fp_wait

    def configure(self, calls: Mapping[int, FastCall], prefixes: Iterable[str]) -> None:
        """Answer ``calls`` (by number) for paths under none of ``prefixes`` (logical paths in
        normal form; "/" covers everything).

        Raises:
            ValueError: a prefix is not absolute, or they do not fit the C side's space.
        """
        self._lib.fp_clear()
        self.set_placeholders([])
        for nr, call in calls.items():
            kind = (
                _KIND_DESCRIPTOR
                if call.descriptor
                else _KIND_PROGRAM
                if call.program
                else _KIND_PATH
            )
            if (
                self._lib.fp_set_call(
                    nr, kind, call.argument, call.empty_path_flags, call.reads, call.serves
                )
                != 0
            ):
                raise ValueError(f"syscall number {nr} out of the fast path's range")
        for prefix in prefixes:
            if not prefix.startswith("/"):
                raise ValueError(f"not an absolute prefix: {prefix!r}")
            trimmed = prefix.rstrip("/") or "/"
            if self._lib.fp_add_prefix(os.fsencode(trimmed)) != 0:
                raise ValueError("too many mount prefixes for the fast path")

    @property
    def answered(self) -> int:
        """Trapped calls resumed by the C side since ``configure``."""
        return int(self._lib.fp_answered())

    def set_cwds(self, plain: Mapping[int, str]) -> None:
        """The tasks (by tid) whose working directory is plainly local, and that directory;
        the relative paths of any other task go to Python."""
        self._lib.fp_clear_cwds()
        for tid, cwd in plain.items():
            if self._lib.fp_set_cwd(tid, os.fsencode(cwd)) != 0:
                return  # no room: the tasks left out go to Python, which is always right

    @property
    def served(self) -> int:
        """Reads of remote files the C side answered itself since it was loaded."""
        return int(self._lib.fp_served_total())

    def set_placeholders(self, keys: Iterable[tuple[int, int, bool, int]]) -> None:
        """The (device, inode, filled, slot) of every remote file's placeholder: descriptors
        of these go to Python (but reads of a filled one, and reads of one with a slot of
        :meth:`serve`, -1 for none), any other descriptor is the kernel's."""
        flat: list[ctypes.c_ulonglong | int] = [
            int(number)
            for dev, ino, filled, slot in keys
            for number in (dev, ino, filled, slot + 1)
        ]
        if len(flat) > len(self._quads):  # more than the C side keeps: it learns that too
            self._lib.fp_set_placeholders((ctypes.c_ulonglong * len(flat))(*flat), len(flat) // 4)
            return
        self._quads[: len(flat)] = flat  # pushed at every open and close: no new array
        self._lib.fp_set_placeholders(self._quads, len(flat) // 4)

    def serve(self, open_file: DirectOpen) -> DirectSlot | None:
        """Let the C side answer reads of one remote open itself from now on, as
        ``open_file`` says: on its driver's connection, those of at least ``min_count``
        bytes that end at or before ``limit``, the open's offset starting at ``offset``;
        ``on_broken(errno)`` when a read left the connection out of step, ``on_made`` with
        the requests made. None: no slot free, or the C side refused (the agent answers
        that open's reads itself)."""
        reads = open_file.reads
        if not self._free_slots or len(reads.request_start) > 64:
            return None
        index = self._free_slots.pop()
        timeout_ms = max(1, min(2**31 - 1, round(reads.timeout * 1000)))
        refused = self._lib.fp_serve(
            index,
            open_file.placeholder[0],
            open_file.placeholder[1],
            reads.socket_fd,
            reads.request_start,
            len(reads.request_start),
            open_file.min_count,
            reads.max_count,
            -1 if open_file.limit is None else open_file.limit,
            timeout_ms,
        )
        if refused:
            self._free_slots.append(index)
            return None
        cell = self._cells[index]
        cell.value = open_file.offset
        slot = self._slots[index] = DirectSlot(
            self, index, cell, open_file.on_broken, open_file.on_made
        )
        return slot

    def _release_slot(self, slot: DirectSlot) -> None:
        if self._slots.get(slot.index) is slot:
            del self._slots[slot.index]
            self._free_slots.append(slot.index)

    def _count_served(self) -> None:
        """After reads answered in C: every slot's requests go to its driver's counters
        (a driver tells from them whether anything was asked between two of its calls)."""
        total = int(self._lib.fp_served_total())
        if total != self._served_seen:
            self._served_seen = total
            for slot in list(self._slots.values()):
                slot.flush()

    def _broken(self, index: int, errno_value: int) -> None:
        """A read of slot ``index`` left its connection out of step: the C side stopped
        every slot on it; their opens and the driver hear of it."""
        slot = self._slots.get(index)
        if slot is not None:
            slot.flush()
            slot.broke(errno_value)

    def held(self, pids: Sequence[int], keys: Sequence[tuple[int, int]]) -> list[bool]:
        """Which of the (device, inode) ``keys`` a descriptor of the tasks ``pids`` refers
        to: :func:`reference_agent.files.scan_held`, in compiled code."""
        if not keys:
            return []
        pid_array = (ctypes.c_int * len(pids))(*pids)
        flat = (ctypes.c_ulonglong * (2 * len(keys)))(*(n for key in keys for n in key))
        marks = (ctypes.c_ubyte * len(keys))()
        self._lib.fp_held(pid_array, len(pids), flat, len(keys), marks)
        return [bool(mark) for mark in marks]

    def waiter(
        self, files: _Placeholders, plain_cwds: Callable[[], Mapping[int, str]]
    ) -> Callable[[], Event]:
        """A ``wait_event`` replacement for the tracer loop: the next stop the agent must see.

        Before each wait it tells the C side, when they changed, the placeholders of the
        remote files open and which tasks have a plainly local working directory. What the
        C side read at the stop it returns goes on with it, in the event.
        """
        wait, status, status_ref = self._wait, self._status, self._status_ref
        facts, facts_ref = self._facts, self._facts_ref
        pushed_cwds: list[Mapping[int, str]] = [{}]
        pushed_version = [-1]

        def wait_event() -> Event:
            cwds = plain_cwds()
            if cwds != pushed_cwds[0]:
                self.set_cwds(cwds)
                pushed_cwds[0] = cwds
            if files.version != pushed_version[0]:
                self.set_placeholders(files.placeholder_keys())
                pushed_version[0] = files.version
            while True:
                found = wait(1 if len(files) else 0, status_ref, facts_ref)
                if found >= 0:
                    self._count_served()
                    if facts.broken_slot >= 0 and facts.pid == found:
                        self._broken(facts.broken_slot, facts.broken_errno)
                    return _event(found, status.value, facts)
                if found != -errno.EINTR:  # EINTR: Python's signal handlers run, then again
                    raise OSError(-found, os.strerror(-found))

        return wait_event


def _event(pid: int, status: int, facts: _StopFacts) -> Event:
    """The stop fp_wait returned, with what it learned of it."""
    if facts.pid != pid:
        return _ptrace.decode_status(pid, status)
    return _ptrace.decode_status(
        pid,
        status,
        facts.nr if facts.has_nr else None,
        _ptrace.registers_of(facts.registers) if facts.has_registers else None,
        (facts.path_address, ctypes.string_at(facts.path, facts.path_length))
        if facts.has_path
        else None,
        (facts.descriptor, facts.dev, facts.ino) if facts.has_descriptor else None,
    )


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "aviary"


def _build(source: bytes, target: Path) -> str | None:
    """Compile ``source`` into ``target``; None, or why it could not be."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        return "no C compiler (gcc) on the PATH"
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        c_file = Path(scratch) / "fastpath.c"
        c_file.write_bytes(source)
        built = Path(scratch) / target.name
        try:
            result = subprocess.run(
                [gcc, "-O2", "-shared", "-fPIC", "-o", str(built), str(c_file)],
                capture_output=True,
                text=True,
                timeout=_COMPILE_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"gcc failed: {exc}"
        if result.returncode != 0:
            lines = result.stderr.strip().splitlines()
            return f"gcc failed: {lines[-1] if lines else result.returncode}"
        os.replace(built, target)  # atomic: a concurrent run loads either copy whole
    return None


def load(cache_dir: Path | None = None) -> FastPath | str:
    """The compiled fast path, built on first use; or the reason it is not available."""
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        return "the fast path is built for x86-64 Linux only"
    try:
        source = _SOURCE.read_bytes()
    except OSError as exc:
        return f"its source is missing: {exc}"
    digest = hashlib.sha256(source).hexdigest()[:16]
    target = (cache_dir or _cache_dir()) / f"fastpath-{digest}.so"
    if not target.exists():
        try:
            failure = _build(source, target)
        except OSError as exc:
            failure = f"cannot build into {target.parent}: {exc}"
        if failure is not None:
            return failure
    try:
        return FastPath(ctypes.CDLL(str(target)))
    except OSError as exc:
        return f"cannot load {target}: {exc}"


class _Options(Protocol):
    """What ``install`` reads of the agent's options."""

    @property
    def fast_path(self) -> bool: ...
    @property
    def cache(self) -> str: ...
    @property
    def trace(self) -> object: ...
    @property
    def name_list(self) -> object: ...
    @property
    def identity(self) -> object: ...


class _HasLogical(Protocol):
    @property
    def logical(self) -> str | None: ...


class _Named(Protocol):
    @property
    def name(self) -> str: ...


def why_not(options: _Options, sandboxed: bool) -> str | None:
    """Why a run with ``options`` must see every trapped call in Python, or None."""
    if not options.fast_path:
        return "turned off (--no-fast-path)"
    if sandboxed:
        return "the sandbox checks every call"
    if options.trace is not None:
        return "--trace records every call"
    if options.name_list is not None:
        return "--name-list records every path"
    if options.identity is not None:
        return "the identity options rewrite stat results"
    if options.cache == "whole":
        return "--cache whole"
    return None


def install(
    loop: TracerLoop,
    table: Mapping[int, _Named],
    namespace: Namespace,
    options: _Options,
    *,
    sandboxed: bool,
    files: _Placeholders,
    cwds: Mapping[int, _HasLogical],
) -> FastPath | str:
    """Put the compiled loop in front of ``loop``'s waits; or say why it is not there."""
    reason = why_not(options, sandboxed)
    if reason is not None:
        return reason
    fast = load()
    if isinstance(fast, str):
        return fast
    calls = {nr: FAST_CALLS[entry.name] for nr, entry in table.items() if entry.name in FAST_CALLS}
    prefixes = [mount.logical for mount in namespace.mounts]
    prefixes += namespace.service_prefixes
    prefixes.append("/proc")  # a remote descriptor's /proc/PID/fd link names a remote file
    try:
        fast.configure(calls, prefixes)
    except ValueError as exc:
        return str(exc)
    plain: dict[str, bool] = {}  # by logical directory: whether the namespace maps it onto itself

    def plain_cwds() -> dict[int, str]:
        found = {}
        for tid, cwd in cwds.items():
            logical = cwd.logical
            if logical is None:
                continue  # unknown: its relative paths fail, in Python
            is_plain = plain.get(logical)
            if is_plain is None:
                target = namespace.resolve(logical)
                is_plain = plain[logical] = (
                    isinstance(target, LocalTarget) and target.path == logical
                )
            if is_plain:
                found[tid] = logical
        return found

    loop.wait_event = fast.waiter(files, plain_cwds)
    return fast
