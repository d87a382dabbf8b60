"""The agent: a traced program tree, its namespace, its drivers and its remote files.

``Agent.run(argv)`` starts the program under the tracer loop with a seccomp
filter that traps exactly the syscalls of :mod:`reference_agent.table`, and
answers each trapped call at its seccomp stop: natively when it concerns only
local objects, emulated through a driver when it concerns a remote one, or
refused loudly when the agent has no emulation for it ("holes are loud").
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol
from urllib.parse import quote

from drivers import Driver, driver_for_service, parse_url
from reference_agent import _fastpath, _ptrace
from reference_agent._abi import AT_FDCWD
from reference_agent._loop import Park, Rewrite, TracerLoop
from reference_agent._ptrace import Event, ExecEvent, Exited, ForkEvent, Killed, Registers
from reference_agent.call import NATIVE, Call, Native, Outcome, Resolved
from reference_agent.dotdot import physical_dotdots, physical_path
from reference_agent.files import RemoteFile, RemoteFileTable, moved_path
from reference_agent.identity import Identity
from reference_agent.interpreters import plan_exec
from reference_agent.landlock import Ruleset
from reference_agent.locks import FileKey, LockTable, Owner, Waiter
from reference_agent.mount_rules import MountPlan
from reference_agent.namespace import LocalTarget, Namespace, Refused, RemoteTarget, logical_path
from reference_agent.process_facts import directory_of, shares_fs
from reference_agent.race_guards import RaceGuards
from reference_agent.read_cache import MAX_BLOCK
from reference_agent.read_memory import SpareBlocks
from reference_agent.recording import NameList
from reference_agent.sandbox import Guard, SandboxRules, guard_for
from reference_agent.startup import find_program, physical_directory
from reference_agent.whole_cache import WholeFileCache

if TYPE_CHECKING:
    from reference_agent.table import Entry


class SyscallTable(Protocol):
    """What the agent needs of the syscall table; ``reference_agent.table`` is the one."""

    def dispatch_table(self, features: Set[str], /) -> Mapping[str, Entry]: ...

    def trapped_numbers(self, cache: str, features: Set[str], /) -> set[int]: ...

    def guarded_calls(self) -> Mapping[str, Entry]: ...


__all__ = [
    "NATIVE",
    "Agent",
    "AgentOptions",
    "Call",
    "Native",
    "Outcome",
    "Resolved",
]

#: Fake device numbers for remote endpoints: major 0xA5, minor from the endpoint.
REMOTE_DEV_MAJOR = 0xA5
#: Events that may wait for one collection of remote files (Agent.release_unheld).
EVENTS_PER_COLLECTION = 64


@dataclass(slots=True)
class AgentOptions:
    #: "off": every read/write goes to the driver; "cto": a read buffer per open
    #: (read_cache.py); "whole": copy on open.
    cache: str = "off"
    trace: IO[str] | None = None
    summary: bool = False
    cpu: int | None = None
    timeout: float = 30.0
    cache_dir: Path | None = None
    #: The ids, user and host names the program is shown (None: the real ones).
    identity: Identity | None = None
    #: Records every path resolved (``--name-list``), for portable packages.
    name_list: NameList | None = None
    #: st_blksize reported for remote files, the hint programs such as cp size their buffers
    #: by (the seeds' Figure 6); None reports what the driver says.
    block_size: int | None = None
    #: --deny/--allow-only/--read-only/--hide (None: no sandbox; mountlist access letters
    #: are enforced all the same).
    sandbox: SandboxRules | None = None
    #: --cache-dir: whole-file copies of read-only remote files kept across runs.
    shared_cache: Path | None = None
    #: --chown: "fail" (EPERM) or "ignore" (success, the change dropped) for remote owners.
    chown: str = "fail"
    #: Resume trapped calls on plainly local paths in compiled code (``_fastpath``).
    fast_path: bool = True


@dataclass(slots=True)
class Cwd:
    """A working directory, one object shared by the tasks made with CLONE_FS.

    ``logical`` is None for a task whose creation the agent did not see (its creator
    died before the fork event): its relative paths fail rather than guess.
    ``removed``: the directory was removed through the agent (rmdir): relative paths fail
    (ENOENT), as in a removed directory, even once a new one has its name.
    """

    logical: str | None
    removed: bool = False


@dataclass
class _Stats:
    calls: int = 0
    errors: int = 0
    micros: float = 0.0


@dataclass
class Agent:
    """Everything the handlers need; one per ``aviary run``."""

    namespace: Namespace
    options: AgentOptions = field(default_factory=AgentOptions)
    report: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)

    def __post_init__(self) -> None:
        self.files = RemoteFileTable()
        self.drivers: dict[str, Driver] = {}
        self.cwds: dict[int, Cwd] = {}
        self._root_seen = False
        self._placeholders = 0
        self._scratch_dir: Path | None = None
        #: Local stand-ins for logical directories (an empty one per service, /chirp), by
        #: real path: an *at call relative to a descriptor of one resolves from the logical.
        self._stand_ins: dict[str, str] = {}
        self.loop: TracerLoop | None = None
        self.stats: dict[tuple[str, str], _Stats] = defaultdict(_Stats)
        self.holes_reported: set[str] = set()
        self._traced_ops: Counter[str] = Counter()  # driver operations already in the trace
        self.copies = 0  # local copies made for --cache whole
        self.guard: Guard | None = None
        self.races: RaceGuards | None = None  # with a guard: sealed copies, rename gate
        self.locks = LockTable()  # record locks on remote files, between this run's processes
        self._names_set_apart = 0  # unlinked names whose open files are known apart (_unnamed)
        self._events_waiting = 0  # events whose collection waits (release_unheld)
        #: --cache cto: blocks of closed opens' read buffers, for the next opens' reads.
        self.read_spares = SpareBlocks(keep=4, largest=MAX_BLOCK)
        self.fast_path: _fastpath.FastPath | str = "not started"  # or why it is off
        shared = self.options.shared_cache
        self.whole_cache = WholeFileCache(shared) if shared is not None else None

    # -- running ----------------------------------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        table: SyscallTable,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> int:
        """Run ``argv`` to the end of its last descendant; return its exit status.

        Args:
            argv: the program, looked up in ``env``'s PATH through the namespace.
            table: the syscalls to trap and their handlers (``reference_agent.table``).
            env: its environment (None: this process's).
            cwd: its logical starting directory (None: this process's).

        Raises:
            OSError: the program could not be started (ENOENT, EACCES...), naming it.
        """
        features = self.options.identity.features if self.options.identity else frozenset()
        self._table: dict[int, Entry] = {
            _ptrace.syscall_number(name): entry
            for name, entry in table.dispatch_table(features).items()
        }
        agent_dirs = [str(d) for d in (self.options.cache_dir, self.options.shared_cache) if d]
        self.guard = guard_for(
            self.options.sandbox, self.namespace, table.guarded_calls(), agent_dirs
        )
        trapped = table.trapped_numbers(self.options.cache, features)
        if self.guard is not None:
            trapped |= self.guard.trapped_numbers()
        self.loop = TracerLoop(trapped, self._on_syscall, self._on_event)
        if self.guard is not None:
            self.races = RaceGuards(
                table.guarded_calls(), self.loop.requeue, self.loop.retry, self.report_once
            )
        self.fast_path = _fastpath.install(
            self.loop, self._table, self.namespace, self.options,
            sandboxed=self.guard is not None, files=self.files,
            cwds=self.cwds,
        )  # fmt: skip
        if isinstance(self.fast_path, _fastpath.FastPath):
            self.files.held_scan = self.fast_path.held
            self.files.direct = self.fast_path
        start_cwd = logical_path(cwd) if cwd is not None else os.getcwd()
        self._root_cwd = Cwd(start_cwd)
        program = find_program(
            self.namespace, argv[0], os.environ if env is None else env, start_cwd
        )
        if program is not None and self.options.name_list is not None:
            self.options.name_list.record(program[0], "execve")
        if program is not None and self.guard is not None:
            refusal = self.guard.check_program(program[0], program[1])
            if refusal is not None:
                raise OSError(refusal, os.strerror(refusal), argv[0])
        argv, executable = self._through_interpreters(argv, program)
        ruleset = self.guard.landlock_ruleset(self.report) if self.guard is not None else None
        mounts = self.guard.mount_plan() if self.guard is not None else None
        try:
            return self.loop.run(
                argv,
                env=env,
                cwd=physical_directory(self.namespace, start_cwd),
                cpu=self.options.cpu,
                executable=executable,
                before_exec=_kernel_rules(mounts, ruleset),
            )
        finally:
            if ruleset is not None:
                ruleset.close()
            self.files.close_all()
            for driver in self.drivers.values():
                driver.close_driver()
            if self.options.summary:
                self.print_summary()
            if self._scratch_dir is not None:
                shutil.rmtree(self._scratch_dir, ignore_errors=True)

    def _through_interpreters(
        self, argv: Sequence[str], program: tuple[str, str] | None
    ) -> tuple[Sequence[str], str | None]:
        """The first exec's argv and local file, its interpreters found as execve's are."""
        if program is None:
            return argv, None  # a remote program: the kernel's own search, as before
        logical, local = program
        plan = plan_exec(self.namespace, local, logical, argv)
        if isinstance(plan, int):
            raise OSError(-plan, os.strerror(-plan), argv[0])
        if plan is None:
            return argv, local
        return [str(arg) for arg in plan.argv], plan.file

    def _cwd(self, pid: int) -> Cwd:
        cwd = self.cwds.get(pid)
        if cwd is None:
            # The first task is the program; any other one unknown here was made by a
            # creator that died before its fork event: its directory is not known.
            cwd = self.cwds[pid] = self._root_cwd if not self._root_seen else Cwd(None)
            self._root_seen = True
        return cwd

    def _on_event(self, event: Event) -> None:
        if self.races is not None:
            self.races.follow(event)
        if isinstance(event, ForkEvent):
            # The child is held by the loop until this returns: its directory is in place
            # before it can run a single syscall.
            parent = self._cwd(event.pid)
            if shares_fs(event):
                self.cwds[event.child] = parent  # CLONE_FS: one directory for both
            else:
                self.cwds[event.child] = Cwd(parent.logical, parent.removed)
        elif isinstance(event, ExecEvent):
            if event.former_pid != event.pid and event.former_pid in self.cwds:
                self.cwds[event.pid] = self.cwds.pop(event.former_pid)
            if self.guard is not None:
                self._refuse_loaded(event.pid, self.guard)
            self.release_unheld()
        elif isinstance(event, Exited | Killed):
            self.cwds.pop(event.pid, None)
            self.locks.cancel(event.pid)
            self.wake_lock_waiters(self.locks.release(Owner("process", event.pid)))
            self.release_unheld()

    def _refuse_loaded(self, pid: int, guard: Guard) -> None:
        """Kill a process whose exec loaded a file the sandbox refuses, before it runs."""
        refusal = guard.check_exec(pid)
        if refusal is not None:
            guard.refusals += 1
            self.report(
                f"aviary: sandbox: pid {pid} loaded a refused file "
                f"({errno.errorcode.get(refusal, refusal)}); killed"
            )
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def live_pids(self) -> list[int]:
        return list(self.loop._live) if self.loop is not None else []

    def collect_files(self) -> None:
        """Release remote files whose last descriptor is gone."""
        self._events_waiting = 0
        if len(self.files):
            for remote in self.files.collect(self.live_pids()):
                self.wake_lock_waiters(self.locks.release(Owner("description", remote.key)))

    def release_unheld(self) -> None:
        """A descriptor may have gone (a close, a dup2 over it, an exec, an exit): release the
        remote files no descriptor holds any more, now or with the next collection.

        Finding that out stats every descriptor of every live task, and a linker closes
        hundreds of inputs in a row. Releasing a file opened read-only, or written through
        a driver that sent every write at once (Chirp, SFTP), with no lock anywhere, has no
        effect anyone can see but the server's handle closing
        (:attr:`RemoteFile.quiet_release`); while every open remote file is such a file, up
        to :data:`EVENTS_PER_COLLECTION` of these events wait for one collection (the end of
        the run collects the rest). Other releases may finish writes (FTP uploads at close),
        send a local copy back or free a busy name (XRootD), and a lock's release lets a
        waiter go: those are collected at once.
        """
        if not self.defer_release():
            self.collect_files()

    def defer_release(self) -> bool:
        """Count a release event for a later collection, if it may wait (see
        :meth:`release_unheld`); False, counting nothing, when it must be collected now. A
        close that may wait counts itself at its entry and needs no stop at its exit."""
        if (
            self._events_waiting < EVENTS_PER_COLLECTION
            and self.files.all_quiet
            and self.locks.is_empty()
        ):
            self._events_waiting += 1
            return True
        return False

    def wake_lock_waiters(self, granted: list[Waiter]) -> None:
        """Let callers parked on a lock return: their locks are now theirs."""
        for waiter in granted:
            if self.loop is not None:
                self.loop.wake(waiter.token, 0)

    def _on_syscall(self, pid: int, nr: int, registers: Registers) -> Outcome:
        entry = self._table.get(nr)
        guard = self.guard
        if entry is None and guard is None:
            return None
        stop = self.loop.stop if self.loop is not None else None  # None: a parked call again
        call = Call(pid, nr, entry.name if entry else _ptrace.syscall_name(nr), registers, stop)
        began = time.perf_counter()
        try:
            # The sandbox first: it refuses, or pins the path arguments the handler then reads.
            outcome: Outcome = self.races.before(call) if self.races is not None else None
            if outcome is None and guard is not None:
                outcome = guard.check(self, call)
            if outcome is None and entry is not None:
                outcome = entry.handler(self, call)
            if outcome is None and call.registers is not registers:
                outcome = Rewrite(call.registers)  # run natively on the checked copies
        except OSError as exc:
            outcome = -(exc.errno or errno.EIO)
        except Exception as exc:  # a bug in a handler must not take the program down
            about = f" on {call.subject}" if call.subject else ""
            self.report(
                f"aviary: internal error in {call.name}{about}: {type(exc).__name__}: {exc}"
            )
            outcome = -errno.EIO
        if self.races is not None:
            outcome = self.races.settle(call, outcome)
        elapsed = (time.perf_counter() - began) * 1e6
        if self.options.trace is not None or self.options.summary:
            self._record(call, outcome, elapsed)
        return outcome

    def _record(self, call: Call, outcome: Outcome, micros: float) -> None:
        result: int | str = (
            outcome
            if isinstance(outcome, int)
            else "parked"
            if isinstance(outcome, Park)
            else "native"
        )
        stats = self.stats[(call.name, call.mount)]
        stats.calls += 1
        stats.micros += micros
        if isinstance(outcome, int) and outcome < 0:
            stats.errors += 1
        if self.options.trace is not None:
            line = {
                "t": round(time.time(), 6),
                "pid": call.pid,
                "syscall": call.name,
                "driver": call.mount,
                "path": call.subject,
                "result": result,
                "us": round(micros, 1),
            }
            line.update(self._driver_work_since_last_record())
            self.options.trace.write(json.dumps(line) + "\n")

    def _driver_work_since_last_record(self) -> dict[str, object]:
        """The driver operations (and round trips) since the previous trace line.

        Since the previous line, not within this call: a remote file is closed
        after the close syscall returns, and that close belongs in the trace too.
        """
        now: Counter[str] = Counter()
        for driver in self.drivers.values():
            for name, counters in driver.counters.snapshot().items():
                now[name] += counters.calls
                now["(round trips)"] += counters.round_trips
        new = now - self._traced_ops
        self._traced_ops = now
        if not new:
            return {}
        trips = new.pop("(round trips)", 0)
        return {"ops": dict(new), "rt": trips}

    def print_summary(self) -> None:
        lines = [f"{'syscall':<16} {'mount':<32} {'calls':>8} {'errors':>7} {'agent us':>10}"]
        for (name, mount), s in sorted(self.stats.items(), key=lambda kv: -kv[1].calls):
            lines.append(f"{name:<16} {mount:<32} {s.calls:>8} {s.errors:>7} {s.micros:>10.0f}")
        fast = self.fast_path
        lines.append(
            f"aviary: fast path: {fast.answered} calls answered in compiled code"
            f" ({fast.served} of them reads of remote files)"
            if isinstance(fast, _fastpath.FastPath) else f"aviary: fast path off: {fast}"
        )  # fmt: skip
        if self.whole_cache is not None:
            lines.append(f"aviary: {self.whole_cache.summary()}")
        if self.guard is not None:
            lines.append(f"aviary: sandbox: {self.guard.refusals} calls refused")
        self.report("\n".join(lines))

    # -- helpers for handlers ------------------------------------------------------------------

    def report_once(self, key: str, line: str) -> None:
        """Say ``line`` the first time ``key`` comes up in this run."""
        if key not in self.holes_reported:
            self.holes_reported.add(key)
            self.report(line)

    def hole(self, call: Call, what: str, code: int = errno.ENOSYS) -> int:
        """Refuse a call the agent cannot emulate on a remote object, and say so once."""
        key = f"{call.name}:{what}"
        if key not in self.holes_reported:
            self.holes_reported.add(key)
            self.report(
                f"aviary: {call.name} on {what}: not supported by the agent ({errno.errorcode[code]})"
            )
        return -code

    def driver_for(self, call: Call, target: RemoteTarget) -> Driver:
        """The driver of ``target``'s endpoint (connected on first use), which ``call`` reaches."""
        call.mount = target.endpoint
        driver = self.drivers.get(target.endpoint)
        if driver is None:
            cls = driver_for_service(target.scheme)
            login = ""
            if target.user:
                login = (
                    quote(target.user, safe="")
                    + (f":{quote(target.password, safe='')}" if target.password else "")
                    + "@"
                )
            location = parse_url(f"{cls.url_schemes[0]}://{login}{target.host}:{target.port}/")
            driver = cls.from_location(location, timeout=self.options.timeout)
            self.drivers[target.endpoint] = driver
        return driver

    def remote_dev(self, target_endpoint: str) -> int:
        return os.makedev(REMOTE_DEV_MAJOR, zlib.crc32(target_endpoint.encode()) & 0xFF)

    def remote_file(self, call: Call, fd: int) -> RemoteFile | None:
        remote = self.files.lookup(call.pid, fd, call.seen_behind(fd))
        call.subject = f"fd {fd}" if remote is None else f"fd {fd} ({remote.logical})"
        if remote is not None:
            call.mount = remote.driver.describe()
        return remote

    def renamed(
        self, driver: Driver, old: str, new: str, old_logical: str, new_logical: str
    ) -> None:
        """A rename through this agent moved ``old`` to ``new`` (remote paths, and the same
        in the namespace): files open under ``new`` lose their name; open files and
        directories below ``old``, and every working directory there, follow it, as the
        kernel's would (a relative path then lands in the moved directory, never in a new
        one made under the old name)."""
        if old != new:
            self._unnamed(driver, new)  # what the new name held is replaced
        self.files.renamed(driver, old, new, old_logical, new_logical)

        def moved_lock(key: FileKey) -> FileKey | None:
            name = key[1]
            if key[0] != id(driver) or not isinstance(name, str):
                return None  # another endpoint's, or known by inode: renames do not move it
            moved = moved_path(name, old, new)
            return None if moved is None else (key[0], moved)

        self.locks.rekey(moved_lock)
        for cwd in {id(cwd): cwd for cwd in self.cwds.values()}.values():
            if cwd.logical is not None and not cwd.removed:
                moved = moved_path(cwd.logical, old_logical, new_logical)
                if moved is not None:
                    cwd.logical = moved

    def content_file(self, call: Call, fd: int) -> RemoteFile | None:
        """The RemoteFile behind ``fd`` whose bytes the agent moves; None for a local
        descriptor and for a ``--cache whole`` copy, whose bytes the kernel serves (its
        size, its truncation, copies in and out of it are the copy's until close)."""
        remote = self.remote_file(call, fd)
        return None if remote is None or remote.local_copy is not None else remote

    def cwd_of(self, pid: int) -> str:
        """The logical working directory of ``pid``.

        Raises:
            OSError: ENOENT when the agent does not know it; a relative path then fails
                instead of reaching whatever local directory the kernel holds.
        """
        cwd = self._cwd(pid)
        if cwd.removed:
            raise OSError(errno.ENOENT, "working directory removed")
        logical = cwd.logical
        if logical is None:
            self.report_once(
                f"cwd:{pid}",
                f"aviary: pid {pid}: working directory unknown; its relative paths fail (ENOENT)",
            )
            raise OSError(errno.ENOENT, "working directory unknown")
        return logical

    def set_cwd(self, pid: int, logical: str) -> None:
        cwd = self._cwd(pid)
        cwd.logical, cwd.removed = logical, False

    def removed(self, driver: Driver, path: str, logical: str) -> None:
        """``path`` (``logical`` in the namespace) was unlinked or removed through the
        agent: files open under it lose their name, working directories there are gone."""
        self._unnamed(driver, path)
        for cwd in self.cwds.values():
            if cwd.logical == logical:
                cwd.removed = True

    def _unnamed(self, driver: Driver, path: str) -> None:
        """``path`` no longer names the files open under it: they, and the locks on them
        where the protocol has no inode numbers, are known by a name set apart instead (a
        new file made under ``path`` is another file)."""
        self._names_set_apart += 1
        former = f"{path}\0unlinked {self._names_set_apart}"
        self.files.unnamed(driver, path, former)
        gone: FileKey = (id(driver), path)
        self.locks.rekey(lambda key: (key[0], former) if key == gone else None)

    def physical(self, call: Call, logical: str) -> str | int:
        """``logical`` with its remote links followed (``dotdot.physical_path``), or the
        errno that walk meets."""
        return physical_path(logical, self.namespace.resolve, lambda t: self.driver_for(call, t))

    def scratch_dir(self) -> Path:
        """A private local directory of this run for the agent's own files."""
        if self.options.cache_dir is not None:
            return self.options.cache_dir
        if self._scratch_dir is None:
            self._scratch_dir = Path(tempfile.mkdtemp(prefix="aviary-agent-"))
        return self._scratch_dir

    def service_placeholder(self, service: str) -> str:
        """The empty local directory a descriptor of ``/service`` (``/chirp``) is opened on."""
        path = self.scratch_dir() / "services" / service
        path.mkdir(parents=True, exist_ok=True)
        self._stand_ins[str(path)] = "/" + service
        return str(path)

    def stand_in_of(self, pid: int, fd: int) -> str | None:
        """The logical directory (``/chirp``) a local stand-in descriptor stands for."""
        if not self._stand_ins:
            return None
        return self._stand_ins.get(directory_of(pid, fd) or "")

    def cwd_placeholder(self) -> str:
        """A fresh empty local directory for the kernel's working directory of a task whose
        logical one is remote; the caller removes it once the task is in it, so that a
        relative path the agent does not see fails (ENOENT) instead of creating anything."""
        self._placeholders += 1
        path = self.scratch_dir() / f"remote-cwd-{self._placeholders}"
        path.mkdir(mode=0o700)
        return str(path)

    def resolve(self, call: Call, dirfd: int, path: str) -> Resolved:
        """Resolve a path argument relative to ``dirfd`` (AT_FDCWD or a descriptor)."""
        behind = self.files.behind_proc_link(call.pid, path) if path[:6] == "/proc/" else None
        if behind is not None:  # a remote descriptor's /proc link names the remote file
            remote, below = behind
            if remote.is_link:  # the link itself: never followed to its target
                return Resolved(path, Refused(errno.ENOTDIR if below else errno.EOPNOTSUPP))
            path = remote.logical + below
        if path.startswith("/"):
            base = "/"
        elif dirfd == AT_FDCWD:
            base = self.cwd_of(call.pid)
        else:
            remote_dir = self.remote_file(call, dirfd)
            if remote_dir is not None:
                if path and not remote_dir.is_dir:
                    # The kernel refuses a name below a file's descriptor before any lookup
                    # (the file's name may be gone: unlinked while open).
                    return Resolved(path, Refused(errno.ENOTDIR))
                base = remote_dir.logical
                if "/.." in f"/{path}":
                    # The name it was opened by may pass through links: ".." is physical.
                    walked_base = self.physical(call, base)
                    if isinstance(walked_base, int):
                        return Resolved(path, Refused(walked_base))
                    base = walked_base
            else:
                # A local directory descriptor: its name plus ``path`` may still lead into
                # a mount (rsync walks down from "/" with *at calls). Its name is a real
                # path, and a logical one only where the namespace maps it onto itself
                # (a directory opened through a mount stays the kernel's business).
                local_base = directory_of(call.pid, dirfd)
                stand_in = self._stand_ins.get(local_base or "")
                if stand_in is not None:
                    base = stand_in
                elif (
                    local_base is None
                    or not self._is_plain_local(local_base)
                    or self._is_plain_local(logical_path(path, local_base))
                ):
                    if self.options.name_list is not None:
                        self.options.name_list.record_at(call.pid, dirfd, path, call.name)
                    return Resolved(path, NATIVE)
                else:
                    base = local_base
        logical = logical_path(path, base) if path else base
        call.subject = logical
        if self.options.name_list is not None:
            self.options.name_list.record(logical, call.name)
        target = self.namespace.resolve(logical)
        if "/.." in f"/{path}":
            walked = physical_dotdots(
                path, base, self.namespace.resolve, lambda t: self.driver_for(call, t)
            )
            if isinstance(walked, int):
                return Resolved(logical, Refused(walked))
            if walked != logical:  # a link stepped out of: ".." is its target's parent
                logical = call.subject = walked
                target = self.namespace.resolve(logical)
        if isinstance(target, LocalTarget):
            if target.path == logical and (
                path.startswith("/")
                or (dirfd == AT_FDCWD and self._is_plain_local(self.cwd_of(call.pid)))
            ):
                return Resolved(logical, NATIVE)
            return Resolved(logical, target, rewrite=self._local_rewrite(target, path, base))
        return Resolved(logical, target)

    def _local_rewrite(self, target: LocalTarget, path: str, base: str) -> str:
        """The local path put in place of ``path``, keeping what ends it for the kernel:
        "d/." (rename: EBUSY), "file/" (ENOTDIR) and "d/.." (rename: EBUSY, never the
        rename of the collapsed name)."""
        stripped = path.rstrip("/")
        if stripped.rpartition("/")[2] == "..":
            inner = self.namespace.resolve(logical_path(stripped[:-2] or ".", base))
            if isinstance(inner, LocalTarget):
                return inner.path.rstrip("/") + "/.."
        return target.path + _kept_ending(path)

    def _is_plain_local(self, logical: str) -> bool:
        target = self.namespace.resolve(logical)
        return isinstance(target, LocalTarget) and target.path == logical


def _kernel_rules(mounts: MountPlan | None, ruleset: Ruleset | None) -> Callable[[], None] | None:
    """What the program's child applies before its exec: the mounts first (Landlock forbids them)."""
    if mounts is None and ruleset is None:
        return None

    def apply() -> None:
        if mounts is not None:
            mounts.apply()
        if ruleset is not None:
            ruleset.restrict_self()

    return apply


def _kept_ending(path: str) -> str:
    """The "/." or "/" a rewritten local path must keep: the kernel answers differently for
    "d/." (rename: EBUSY) and "file/" (ENOTDIR) than for the collapsed name."""
    stripped = path.rstrip("/")
    if stripped.rpartition("/")[2] == ".":
        return "/."
    return "/" if path.endswith("/") and stripped else ""
