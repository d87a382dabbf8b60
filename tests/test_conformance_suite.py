"""The conformance suite itself: it passes on good drivers and catches broken ones by name."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conformance.plugin import CHECKOUT, EVIDENCE_LIMIT, failure_evidence
from conformance.results import ResultSet, compare_to_baseline, load_results, render_table

ROOT = Path(__file__).resolve().parent.parent


def run_suite(
    tmp_path: Path, *options: str, examples: int = 15
) -> tuple[subprocess.CompletedProcess[str], dict[str, dict[str, str]]]:
    results = tmp_path / "results"
    command = [
        sys.executable, "-m", "pytest", "conformance", "-q", "-p", "no:cacheprovider",
        "--results-dir", str(results), "--examples", str(examples), "--hypothesis-seed", "20261122",
        "--hypothesis-profile", "aviary-verdict", *options,
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    outcomes = {}
    for path in sorted(results.glob("*.json")) if results.exists() else []:
        document = json.loads(path.read_text())
        outcomes[path.stem] = {p["property"]: p["outcome"] for p in document["properties"]}
    return done, outcomes


def test_local_passes_entirely_both_ways(tmp_path: Path) -> None:
    done, outcomes = run_suite(tmp_path, "--driver", "local")
    assert done.returncode == 0, done.stdout[-3000:]
    assert set(outcomes) == {"local-none-direct", "local-none-agent"}
    for results in outcomes.values():
        assert "failed" not in results.values() and "gap" not in results.values()
        assert results["oracle_comparison"] == "passed"


@pytest.mark.parametrize("server", ["cctools", "aviary"])
def test_chirp_passes_with_its_declared_gaps(tmp_path: Path, server: str) -> None:
    done, outcomes = run_suite(tmp_path, "--driver", "chirp", "--server", server)
    assert done.returncode == 0, done.stdout[-3000:]
    direct = outcomes[f"chirp-{server}-direct"]
    agent = outcomes[f"chirp-{server}-agent"]
    for results in (direct, agent):
        assert "failed" not in results.values()
        assert results["rename_while_open"] == "passed"
        assert results["create_mode_honoured"] == "gap"
        assert results["oracle_comparison"] == "passed"
    assert direct["stat_completeness[st_dev]"] == "passed"
    assert agent["stat_completeness[st_dev]"] == "gap"


@pytest.mark.parametrize(
    ("driver", "caught_by"),
    [
        ("StatSizeZero", "random_access"),
        ("ReaddirDropsDotfiles", "listing_names[dotfiles]"),
        ("RenameCopies", "open_close_name_binding"),
        ("PwriteIgnoresOffset", "random_access"),
        ("WrongErrno", "errno[missing_file]"),
        ("PreadOffByOne", "random_access"),
        ("AppendIgnored", "append"),
        ("ReadPastEndFails", "range_reads"),
        ("CreateModeIgnored", "create_mode_honoured"),
        ("MissingParentWrongErrno", "errno[missing_parent_create]"),
        ("ListingDropsLongNames", "oracle_comparison"),
        ("RenameIntoFileWrongErrno", "errno_matrix[rename_onto-file_as_parent]"),
        ("CloseStampsTheClock", "utimens_while_open"),
    ],
)
def test_broken_drivers_are_caught_by_name(tmp_path: Path, driver: str, caught_by: str) -> None:
    options = ("--driver", f"tests.broken_drivers:{driver}", "--through", "direct")
    done, outcomes = run_suite(tmp_path, *options, examples=100)
    assert done.returncode != 0
    (results,) = outcomes.values()
    assert results[caught_by] == "failed", {k: v for k, v in results.items() if v != "passed"}
    # The random comparison lists, stats and reads the whole tree after every step and
    # compares every errno, so it catches these whatever the seed; the others it finds
    # only when a random sequence happens to hold the right handle at the right offset.
    if driver in ("StatSizeZero", "WrongErrno", "CreateModeIgnored", "PreadOffByOne"):
        assert results["oracle_comparison"] == "failed"


def test_a_failing_comparison_records_its_steps(tmp_path: Path) -> None:
    """The results file (and Figure 5 under its table) keep what names the difference: the
    assertion's message and the replayable steps, not only the last line of the trace."""
    options = ("--driver", "tests.broken_drivers:StatSizeZero", "--through", "direct")
    _, outcomes = run_suite(tmp_path, *options, "-k", "oracle_comparison", examples=20)
    assert outcomes["stat-size-zero-none-direct"]["oracle_comparison"] == "failed"
    (document,) = load_results(tmp_path / "results")
    evidence = document.evidence["oracle_comparison"]
    assert evidence.startswith("AssertionError: "), evidence
    assert "the trees differ" in evidence or "system gave" in evidence, evidence
    assert "state = FilesystemComparison()" in evidence and "@reproduce_failure" in evidence
    assert len(evidence) <= EVIDENCE_LIMIT
    markdown, _ = render_table([document])
    assert "## Why each NO" in markdown and "state = FilesystemComparison()" in markdown


def test_failure_evidence_names_every_failure_of_a_group_within_its_bound() -> None:
    first, second = AssertionError("rename: EISDIR, the model ENOTEMPTY"), ValueError("x" * 9000)
    first.add_note("state.rename(new='/d', old='/d/x')")
    text = failure_evidence(ExceptionGroup("two", [first, second]))
    assert text.startswith("2 distinct failures:\nAssertionError: rename: EISDIR")
    assert "state.rename(new='/d', old='/d/x')" in text and "ValueError: xxx" in text
    assert len(text) <= EVIDENCE_LIMIT + 100 and "more characters)" in text


def test_failure_evidence_names_lines_relative_to_the_checkout() -> None:
    failure = AssertionError("stat: size 0, the model 3")
    failure.add_note(f"    {CHECKOUT / 'conformance' / 'test_machine.py'}:163")
    text = failure_evidence(failure)
    assert "    conformance/test_machine.py:163" in text and str(CHECKOUT) not in text


def test_unknown_driver_is_a_usage_error(tmp_path: Path) -> None:
    done, _ = run_suite(tmp_path, "--driver", "gopher")
    assert done.returncode == 4  # pytest's usage error
    assert "unknown driver 'gopher'" in done.stderr and "chirp" in done.stderr
    done, _ = run_suite(tmp_path, "--driver", "tests.broken_drivers:NotADriver")
    assert done.returncode == 4 and "not a subclass" in done.stderr


def test_table_and_gate(tmp_path: Path) -> None:
    good = ResultSet("chirp", "cctools", "direct", {"append": "passed", "stat": "gap"}, {})
    worse = ResultSet(
        "chirp", "cctools", "direct", {"append": "failed", "stat": "gap"}, {"append": "lost data"}
    )
    markdown, table_csv = render_table([good])
    assert "| append | yes |" in markdown and "| stat | gap |" in markdown
    assert table_csv.splitlines()[0] == "property,chirp/cctools/direct"
    regressions, _ = compare_to_baseline([worse], [good])
    assert [str(r) for r in regressions] == [
        "chirp/cctools/direct: append was passed, now failed: lost data"
    ]
    assert compare_to_baseline([good], [good]) == ([], [])
    assert compare_to_baseline([good], []) == ([], ["chirp/cctools/direct"])
    assert load_results(tmp_path) == []


def test_the_suite_runs_from_any_directory(tmp_path: Path) -> None:
    """The installed plugin (entry point pytest11) makes ``--pyargs conformance`` work outside
    the checkout, and writes results where it runs, not into the checkout."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--pyargs", "conformance", "--driver", "local",
         "--through", "direct", "-q", "-p", "no:cacheprovider", "-k", "append or random_access"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout
    assert list((tmp_path / "results" / "conformance").glob("*.json"))


def test_other_test_runs_do_not_load_the_suite(tmp_path: Path) -> None:
    test = tmp_path / "test_x.py"
    test.write_text(
        "def test_x(request):\n    assert request.config.getoption('driver') == 'local'\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    assert not (tmp_path / "results").exists()


def test_a_declared_gap_is_not_shrunk(tmp_path: Path) -> None:
    """A known failure only has to fail again: shrinking it would re-run remote operations."""
    command = [
        sys.executable, "-m", "pytest", "conformance", "-q", "-p", "no:cacheprovider",
        "--results-dir", str(tmp_path), "--driver", "webdav", "--server", "wsgidav",
        "--through", "direct", "--examples", "5", "--hypothesis-show-statistics",
        "-k", "unlink_while_open",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "xfailed" in done.stdout.splitlines()[-1]
    assert "during generate phase" in done.stdout and "1 failing" in done.stdout
    assert "during shrink phase" not in done.stdout


#: Opens a read-only system must refuse or allow as Linux does, on a file, a directory
#: and a missing name.
_READ_ONLY_OPENS = textwrap.dedent(
    """
    import json, os, sys
    writable, read_only = sys.argv[1], sys.argv[2]
    FLAGS = [os.O_RDONLY | os.O_CREAT, os.O_RDONLY | os.O_CREAT | os.O_EXCL, os.O_WRONLY,
             os.O_RDWR | os.O_CREAT, os.O_RDONLY | os.O_TRUNC, os.O_WRONLY | os.O_APPEND]
    def attempt(path, flags):
        try:
            os.close(os.open(path, flags, 0o644))
            return None
        except OSError as exc:
            return exc.errno
    rows = []
    for name in ("file", "dir", "missing"):
        for flags in FLAGS:
            existed = os.path.lexists(f"{writable}/{name}")
            is_dir = os.path.isdir(f"{writable}/{name}")
            on_writable = attempt(f"{writable}/{name}", flags & ~os.O_TRUNC)
            if not existed and os.path.lexists(f"{writable}/{name}"):
                os.unlink(f"{writable}/{name}")
            answer = attempt(f"{read_only}/{name}", flags)
            rows.append([name, flags, existed, is_dir, on_writable, answer])
    print(json.dumps(rows))
    """
)


def test_the_read_only_model_answers_opens_as_linux_on_a_read_only_mount(tmp_path: Path) -> None:
    """``read_only_open_answers`` (the random comparison's model of HTTP) against the kernel:
    the same tree, writable and bind-mounted read-only in a mount namespace of this test."""
    from conformance.test_machine import read_only_open_answers

    tree, view = tmp_path / "tree", tmp_path / "view"
    tree.mkdir()
    view.mkdir()
    (tree / "file").write_text("x")
    (tree / "dir").mkdir()
    script = (
        'mount --bind "$1" "$2" && mount -o remount,bind,ro "$2" && exec "$3" -c "$4" "$1" "$2"'
    )
    done = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script, "sh", tree, view, sys.executable, _READ_ONLY_OPENS],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert len(rows) == 18
    for name, flags, existed, is_dir, on_writable, on_read_only in rows:
        answers = read_only_open_answers(flags, existed, is_dir, on_writable)
        assert on_read_only in answers, (name, flags, on_read_only, answers)
    # What the model said before it learnt these: EROFS, where Linux opens an existing file
    # with O_CREAT for reading, and answers EISDIR to O_TRUNC of a directory.
    assert ["file", os.O_RDONLY | os.O_CREAT, True, False, None, None] in rows
    assert ["dir", os.O_RDONLY | os.O_TRUNC, True, True, None, errno.EISDIR] in rows
