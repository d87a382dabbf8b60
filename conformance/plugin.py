"""The pytest plugin behind ``pytest conformance --driver NAME``.

Options: ``--driver`` (a registered name or ``package.module:Class``; default
``local``), ``--server`` (which real server of the driver's protocol, e.g.
``cctools`` or ``aviary`` for chirp; ``all`` for every one), ``--through``
(``direct``, ``agent``, ``both`` or ``mount``), ``--mount`` (with ``--through
mount``: a directory where a file system is mounted, or a FUSE client that the
suite mounts over the driver's real server: ``rclone``, ``sshfs``),
``--agent-command`` (what runs a program under the agent), ``--examples`` (the
hypothesis budget of the state machine) and ``--results-dir``.

Fixtures: ``system`` is the system under test, seen from a fresh directory of
its own (a :class:`~conformance.rooted.Rooted` driver, directly or through the
agent's executor); ``oracle`` is the local driver on a fresh temporary
directory; ``backing`` is where the system's files really are on this machine
(the server's data directory), so probes can tell exact stat fields from
synthesised ones.

Known gaps come from ``gaps.toml`` and mark their properties strict-xfail;
every run writes ``RESULTS_DIR/<driver>-<server>-<through>.json``.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import shlex
import sys
import tempfile
import tomllib
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import Phase, settings

from conformance.model import cached_reads
from conformance.rooted import Rooted
from conformance.through_agent import AgentExecutor
from drivers import (
    Capabilities,
    Driver,
    UnknownDriverError,
    driver_names,
    load_driver,
    parse_url,
    service_of,
)
from drivers.local import LocalDriver
from servers import SERVERS, ServerHandle, ServerUnavailable, give_to, start_server
from servers.mounts import MOUNTERS, Mounted, mount_capabilities, mount_way_name, start_mount

GAPS_FILE = Path(__file__).with_name("gaps.toml")
#: The gaps of the ways through (the agent's syscalls, FUSE mounts), merged into GAPS_FILE's.
THROUGH_GAPS_FILE = Path(__file__).with_name("gaps_through.toml")
DEFAULT_EXAMPLES = 25
#: Results go here unless told otherwise: never over tracked files (the baseline is
#: reports/baseline, changed only by ``aviary gate --update-baseline``).
DEFAULT_RESULTS_DIR = "results/conformance"
#: ``--hypothesis-profile aviary-verdict``: find a failure, do not shrink it, remember nothing.
#: For runs that only ask whether a seeded bug is caught (the suite's own tests): shrinking a
#: megabyte-sized counterexample costs minutes, and a shared example database would make the
#: verdict depend on earlier runs.
settings.register_profile("aviary-verdict", phases=(Phase.explicit, Phase.generate), database=None)
LOCAL_SCHEMES = ("file", "local")


def add_options(parser: pytest.Parser) -> None:
    """The suite's options (added for every pytest run by ``conformance.entry``)."""
    group = parser.getgroup("conformance", "aviary conformance suite")
    group.addoption(
        "--driver", default="local", help="driver name or package.module:Class (default local)"
    )
    group.addoption(
        "--server", default=None, help="server implementation (e.g. cctools, aviary; 'all')"
    )
    group.addoption(
        "--through",
        default="both",
        choices=("direct", "agent", "both", "mount"),
        help="default both; mount: through a mounted file system (see --mount)",
    )
    group.addoption(
        "--mount",
        default=None,
        help="with --through mount: a directory where a file system is mounted, or a FUSE "
        f"client to mount over the driver's server ({', '.join(MOUNTERS)})",
    )
    group.addoption(
        "--agent-command",
        default=None,
        help="the command that runs a program under the agent (default: aviary run)",
    )
    group.addoption(
        "--agent-cache",
        default="off",
        choices=("off", "cto"),
        help="the agent's --cache mode for the agent way (default off); cto is compared with "
        "the close-to-open model of the driver's promises",
    )
    group.addoption(
        "--examples", type=int, default=DEFAULT_EXAMPLES, help="hypothesis examples per machine"
    )
    group.addoption(
        "--results-dir",
        default=DEFAULT_RESULTS_DIR,
        help=f"where results JSON goes (default {DEFAULT_RESULTS_DIR}, not tracked by git)",
    )
    group.addoption(
        "--server-backend",
        default="native",
        choices=("native", "docker"),
        help="run the installed servers (default) or the same servers from container images",
    )


@dataclass
class Setup:
    """What this run tests: one driver class, its servers, the ways through."""

    driver_spec: str
    driver_name: str
    driver_class: type[Driver]
    protocol: str | None  # None: the driver needs no server (local)
    servers: list[str]
    throughs: list[str]
    gaps: dict[str, dict[str, str]]
    backend: str = "native"
    mount: str | None = None  # --mount: a mounter's name or a directory
    agent_command: list[str] = field(default_factory=list)
    agent_cache: str = "off"  # --agent-cache: the agent's --cache mode
    outcomes: dict[str, list[dict[str, str]]] = field(default_factory=dict)


def _servers_for(protocol: str, wanted: str | None) -> list[str]:
    known = [key.split("/", 1)[1] for key in SERVERS if key.startswith(protocol + "/")]
    if not known:
        raise pytest.UsageError(f"no real server is known for protocol {protocol!r}")
    if wanted is None:
        return known[:1]
    if wanted == "all":
        return known
    if wanted not in known:
        raise pytest.UsageError(
            f"unknown server {wanted!r} for {protocol}; known: {', '.join(known)}"
        )
    return [wanted]


def pytest_configure(config: pytest.Config) -> None:
    spec = config.getoption("--driver")
    try:
        cls = load_driver(spec)
    except UnknownDriverError as exc:
        raise pytest.UsageError(f"{exc} (registered: {', '.join(driver_names())})") from None
    scheme = cls.url_schemes[0] if cls.url_schemes else "file"
    protocol = None if scheme in LOCAL_SCHEMES else scheme
    servers = _servers_for(protocol, config.getoption("--server")) if protocol else ["none"]
    through = config.getoption("--through")
    throughs = ["direct", "agent"] if through == "both" else [through]
    mount = config.getoption("--mount")
    if through == "mount":
        throughs = [mount_way_name(protocol, mount)]
    elif mount is not None:
        raise pytest.UsageError("--mount is for --through mount")
    with GAPS_FILE.open("rb") as f:
        gaps = tomllib.load(f)
    with THROUGH_GAPS_FILE.open("rb") as f:
        for section, entries in tomllib.load(f).items():
            # ["remote/THROUGH"]: every driver that reaches a server, one way through.
            if section.startswith("remote/"):
                if protocol is None:
                    continue
                section = cls.name + section.removeprefix("remote")
            gaps.setdefault(section, {}).update(entries)
    agent_command = (
        shlex.split(config.getoption("--agent-command"))
        if config.getoption("--agent-command")
        else [sys.executable, "-m", "harness.cli", "run"]
    )
    agent_cache = config.getoption("--agent-cache")
    if agent_cache != "off":
        agent_command += ["--cache", agent_cache]
    backend = config.getoption("--server-backend")
    if backend == "docker":
        from servers.containers import docker_client

        try:
            docker_client()
        except ServerUnavailable as exc:
            raise pytest.UsageError(f"--server-backend docker: {exc}") from None
    config.stash[SETUP_KEY] = Setup(
        spec, cls.name, cls, protocol, servers, throughs, gaps, backend, mount, agent_command,
        agent_cache,
    )  # fmt: skip


SETUP_KEY = pytest.StashKey[Setup]()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    setup = metafunc.config.stash[SETUP_KEY]
    # A test module that chooses its own ways (the errno matrix: not direct) says so with
    # its own pytest_generate_tests.
    if "way" in metafunc.fixturenames and not hasattr(metafunc.module, "pytest_generate_tests"):
        combos = list(itertools.product(setup.servers, setup.throughs))
        metafunc.parametrize(
            "way", combos, ids=[f"{s}-{t}" for s, t in combos], scope="session", indirect=True
        )


def _gap_reason(setup: Setup, way_through: str, prop: str, server: str = "") -> str | None:
    # ["DRIVER/SERVER"] holds one server's own gaps (nginx's PROPFIND hides dotfiles);
    # ["DRIVER/SERVER/THROUGH"] those of one server one way through only.
    sections: tuple[str, ...] = (setup.driver_name, f"{setup.driver_name}/{way_through}")
    specific: tuple[str, ...] = (
        f"{setup.driver_name}/{server}",
        f"{setup.driver_name}/{server}/{way_through}",
    )
    if way_through not in ("direct", "agent"):
        # A mount (["DRIVER/rclone"]) does not use the driver: only its own gaps hold.
        sections, specific = (f"{setup.driver_name}/{way_through}",), (specific[1],)
    for section in (*sections, *specific):
        reason = setup.gaps.get(section, {}).get(prop)
        if reason:
            return reason
    return None


def property_name(item: pytest.Item) -> str:
    """The property a test checks: its name with parameters, less the server and way through."""
    name = getattr(item, "originalname", item.name).removeprefix("test_")
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return name
    ids = str(callspec.id)
    way = callspec.params.get("way")
    if way is not None:
        ids = ids.replace(f"{way[0]}-{way[1]}", "", 1).replace("--", "-").strip("-")
    return f"{name}[{ids}]" if ids else name


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    setup = config.stash[SETUP_KEY]
    # A module that chooses its own ways (the errno matrices: direct, or every other way)
    # has none in some runs: its placeholder items are not properties of this run.
    wayless = [item for item in items if _without_way(item)]
    if wayless:
        config.hook.pytest_deselected(items=wayless)
        items[:] = [item for item in items if not _without_way(item)]
    for item in items:
        callspec = getattr(item, "callspec", None)
        way = callspec.params.get("way") if callspec else None
        through = way[1] if way else "direct"
        reason = _gap_reason(setup, through, property_name(item), way[0] if way else "")
        if reason:
            item.add_marker(pytest.mark.xfail(reason=f"declared gap: {reason}", strict=True))


def declared_gap(item: pytest.Item) -> bool:
    """Whether the item is a declared gap (a strict xfail from gaps.toml) in this run."""
    marker = item.get_closest_marker("xfail")
    return marker is not None and str(marker.kwargs.get("reason", "")).startswith("declared gap")


#: A declared gap only has to show that it still fails: shrinking a known failure costs
#: minutes (each shrink step re-runs remote operations) and changes no verdict.
GAP_PHASES = (Phase.explicit, Phase.reuse, Phase.generate)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    test = getattr(item, "obj", None)
    chosen = getattr(test, "_hypothesis_internal_use_settings", None)
    if chosen is None or not declared_gap(item):
        return (yield)
    # Parametrized items share one function object: set for this call, then put back.
    test._hypothesis_internal_use_settings = settings(  # type: ignore[union-attr]
        chosen, phases=[p for p in chosen.phases if p in GAP_PHASES]
    )
    try:
        return (yield)
    finally:
        test._hypothesis_internal_use_settings = chosen  # type: ignore[union-attr]


def _without_way(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    way = callspec.params.get("way") if callspec else None
    return way is not None and not isinstance(way, tuple)


#: Where a failed report keeps ``failure_evidence`` of its exception until it is recorded.
FAILURE_ATTRIBUTE = "aviary_failure"
#: The most a failure's evidence keeps: the messages and the shrunk steps, not whole traces.
EVIDENCE_LIMIT = 4000
#: The checkout, cut from the paths in evidence so results read the same on every machine.
CHECKOUT = Path(__file__).resolve().parent.parent


def failure_evidence(exc: BaseException, limit: int = EVIDENCE_LIMIT) -> str:
    """What names a failure: the assertion's message and what hypothesis noted (the shrunk,
    replayable example: a state machine's steps, the ``@reproduce_failure`` blob), for each
    distinct failure of a group; at most ``limit`` characters."""
    if isinstance(exc, BaseExceptionGroup):
        parts = exc.exceptions
        share = max(limit // len(parts), 200)
        text = f"{len(parts)} distinct failures:\n" + "\n--\n".join(
            failure_evidence(part, share) for part in parts
        )
    else:
        notes = "\n".join(str(note) for note in getattr(exc, "__notes__", ()))
        text = f"{type(exc).__name__}: {exc}".strip() + (f"\n{notes}" if notes else "")
        text = text.replace(f"{CHECKOUT}{os.sep}", "")
    if len(text) <= limit:
        return text
    cut = f"\n... ({len(text) - limit} more characters)"
    return text[: max(limit - len(cut), 0)] + cut


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and call.excinfo is not None:
        setattr(report, FAILURE_ATTRIBUTE, failure_evidence(call.excinfo.value))
    return report


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "call" and not (report.when == "setup" and report.outcome != "passed"):
        return
    config = _CONFIG.get("config")
    if config is None:
        return
    setup = config.stash[SETUP_KEY]
    key = dict(report.user_properties).get("way", "none-direct")
    outcome = (
        ("gap" if report.skipped else "xpass") if hasattr(report, "wasxfail") else report.outcome
    )
    evidence = "; ".join(str(v) for k, v in report.user_properties if k == "evidence")
    if report.failed and not evidence:
        evidence = getattr(report, FAILURE_ATTRIBUTE, "") or (
            str(report.longrepr).strip().splitlines()[-1][:500] if report.longrepr else ""
        )
    if hasattr(report, "wasxfail") and not evidence:
        evidence = str(report.wasxfail)
    prop = dict(report.user_properties).get("property", report.nodeid)
    setup.outcomes.setdefault(str(key), []).append(
        {"property": str(prop), "outcome": outcome, "evidence": evidence}
    )


_CONFIG: dict[str, pytest.Config] = {}


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    _CONFIG["config"] = session.config


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    setup = session.config.stash.get(SETUP_KEY, None)
    if setup is None or not setup.outcomes:
        return
    results_dir = Path(session.config.getoption("--results-dir"))
    results_dir.mkdir(parents=True, exist_ok=True)
    for key, outcomes in setup.outcomes.items():
        server, through = key.rsplit("-", 1)  # server names may hold "-" (pure-ftpd)
        document = {
            "driver": setup.driver_name,
            "driver_spec": setup.driver_spec,
            "server": server,
            "through": through,
            "properties": sorted(outcomes, key=lambda o: o["property"]),
        }
        path = results_dir / f"{setup.driver_name}-{server}-{through}.json"
        path.write_text(json.dumps(document, indent=2) + "\n")


@pytest.fixture(autouse=True)
def _record_property(request: pytest.FixtureRequest) -> None:
    request.node.user_properties.append(("property", property_name(request.node)))
    callspec = getattr(request.node, "callspec", None)
    way = callspec.params.get("way") if callspec else None
    request.node.user_properties.append(("way", f"{way[0]}-{way[1]}" if way else "none-direct"))


# -- the systems under test ------------------------------------------------------------------


@dataclass
class Way:
    """One server and one way through, for the whole session."""

    setup: Setup
    server_name: str
    through: str
    server: ServerHandle | None
    local_root: Path | None  # for drivers without a server
    direct: Driver
    base: str = ""  # where test directories go in the direct driver's namespace
    executor: AgentExecutor | None = None
    #: --through mount: the mounted file system (its directory, and who mounted it).
    mounted: Mounted | None = None
    #: The protocol cannot write (http): probes make their scenario behind the server's back.
    read_only: bool = False
    _counter: itertools.count[int] = field(default_factory=itertools.count)

    def fresh(self) -> tuple[Driver, Path, str]:
        """A fresh directory: the system rooted in it, where its files really are, its name."""
        name = f"t{next(self._counter)}"
        base = self.server.data_dir if self.server else self.local_root
        assert base is not None
        backing = base / name
        if self.mounted is not None:
            self.mounted.driver.mkdir(f"{self.mounted.path}/{name}", 0o777)
            return Rooted(self.mounted.driver, f"{self.mounted.path}/{name}"), backing, name
        try:
            self.direct.mkdir(f"{self.base}/{name}", 0o777)
        except OSError as exc:
            if exc.errno != errno.EROFS:
                raise
            # A read-only protocol (http): make the directory behind the server's back.
            self.read_only = True
            backing.mkdir()
            give_to(self.server.as_user if self.server else None, backing)
        if self.through == "direct":
            return Rooted(self.direct, f"{self.base}/{name}"), backing, name
        assert self.executor is not None
        return Rooted(self.executor, name), backing, name

    @property
    def capabilities(self) -> Capabilities:
        """What the driver promises on this server: the model the random comparison applies."""
        caps = self.setup.driver_class.capabilities_on(self.server_name)
        if self.mounted is not None:
            return mount_capabilities(self.setup.mount or "", caps)
        if self.through == "agent" and self.setup.agent_cache == "cto":
            return cached_reads(caps)  # reads from a buffer per open
        return caps

    def new_connection(self) -> Driver | None:
        """A connection of its own to the same server (the direct way; None otherwise)."""
        if self.through != "direct" or self.server is None:
            return None
        return self.setup.driver_class.from_location(parse_url(self.server.url()), timeout=30)

    def close(self) -> None:
        if self.executor is not None:
            self.executor.close_driver()
        if self.mounted is not None:
            self.mounted.close()
        self.direct.close_driver()
        if self.server is not None:
            self.server.stop()


def _start(setup: Setup, server_name: str, through: str, tmp: Path) -> Way:
    server: ServerHandle | None = None
    if setup.protocol is None:
        root = tmp / "local-root"
        root.mkdir()
        # The driver under test sees the whole machine ("file:///"); tests run below root.
        direct: Driver = setup.driver_class.from_location(parse_url("file:///"))
        way = Way(setup, server_name, through, None, root, direct, base=str(root))
        prefix = str(root)
    else:
        key = f"{setup.protocol}/{server_name}"
        try:
            if setup.backend == "docker":
                from servers.containers import start_in_container

                server = start_in_container(key)
            else:
                server = start_server(key)
        except ServerUnavailable as exc:
            if os.environ.get("CI"):
                pytest.fail(f"{key} is required in CI: {exc}")
            pytest.skip(f"{key} not installed: {exc.hint}")
        os.environ.update(server.client_env)  # keys and such, for the driver and the agent
        direct = setup.driver_class.from_location(parse_url(server.url()), timeout=30)
        way = Way(setup, server_name, through, server, None, direct)
        login = f"{server.spec.user}@" if server.spec.user and not server.spec.password else ""
        if server.spec.user and server.spec.password:
            login = f"{quote(server.spec.user, safe='')}:{quote(server.spec.password, safe='')}@"
        prefix = f"/{service_of(setup.driver_class)}/{login}127.0.0.1:{server.port}"
    if through == "agent":
        way.executor = AgentExecutor(prefix, command=setup.agent_command)
    elif through not in ("direct", "agent"):
        try:
            way.mounted = start_mount(setup.mount or "", setup.protocol, server, tmp)
        except ServerUnavailable as exc:
            way.close()
            pytest.fail(f"{through}: {exc}")
    return way


@pytest.fixture(scope="session")
def way(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Way]:
    server_name, through = request.param
    setup = request.config.stash[SETUP_KEY]
    started = _start(
        setup, server_name, through, tmp_path_factory.mktemp(f"{server_name}-{through}")
    )
    try:
        yield started
    finally:
        started.close()


@pytest.fixture
def system(way: Way) -> Iterator[Driver]:
    driver, _, _ = way.fresh()
    yield driver


@pytest.fixture
def backing(system: Driver, way: Way) -> Path:
    """The directory on this machine that holds the system's files."""
    assert isinstance(system, Rooted)
    base = way.server.data_dir if way.server else way.local_root
    assert base is not None
    return base / system.root.rsplit("/", 1)[-1]


@pytest.fixture
def seed(system: Driver, backing: Path, way: Way) -> Iterator[Driver]:
    """Who makes a probe's scenario: the system itself, or for a read-only protocol the
    server's own directory (so that reading, listing and stat are still probed)."""
    if not way.read_only:
        yield system
        return
    with LocalDriver(str(backing)) as local:
        yield local  # made by this process with umask 022: readable by the server's account


@pytest.fixture
def oracle() -> Iterator[LocalDriver]:
    with tempfile.TemporaryDirectory(prefix="aviary-oracle-") as root, LocalDriver(root) as driver:
        previous = os.umask(0o022)
        try:
            yield driver
        finally:
            os.umask(previous)


class Evidence:
    """What a probe saw, recorded with its outcome in the results file."""

    def __init__(self, node: pytest.Item) -> None:
        self._node = node

    def add(self, line: str) -> None:
        self._node.user_properties.append(("evidence", line))


@pytest.fixture
def evidence(request: pytest.FixtureRequest) -> Evidence:
    return Evidence(request.node)
