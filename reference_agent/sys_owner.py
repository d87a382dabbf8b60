"""Ownership changes on remote files, as ``--chown`` asks.

Chirp and the other protocols give a client no way to set a file's owner: the
server keeps its own. A change is therefore EPERM (``--chown fail``, the
default: the program learns the truth). ``--chown ignore`` lets programs that
copy ownership as root (tar, cp -a, rsync -a) go on: the change is dropped,
the call answers success, and the run says so once on stderr.
"""

from __future__ import annotations

import errno

from reference_agent import sys_path
from reference_agent.agent import Agent
from reference_agent.call import Call, Outcome

__all__ = ["CHOWN_CHOICES", "sys_chown", "sys_fchown"]

#: The values of ``--chown``: what a remote ownership change answers.
CHOWN_CHOICES = ("fail", "ignore")


def _as_chosen(agent: Agent, outcome: Outcome, remote: bool) -> Outcome:
    if outcome == -errno.EPERM and remote and agent.options.chown == "ignore":
        agent.report_once(
            "chown ignore",
            "aviary: --chown ignore: ownership changes of remote files are dropped "
            "(the server keeps its own owners)",
        )
        return 0
    return outcome


def sys_chown(agent: Agent, call: Call) -> Outcome:
    """Chown implements Linux syscalls chown(2), lchown(2) and fchownat(2), as --chown says."""
    outcome = sys_path.sys_chown(agent, call)
    return _as_chosen(agent, outcome, call.on_remote_mount)


def sys_fchown(agent: Agent, call: Call) -> Outcome:
    """Fchown implements Linux syscall fchown(2), as --chown says."""
    outcome = sys_path.sys_fchown(agent, call)
    return _as_chosen(agent, outcome, agent.remote_file(call, call.fd(0)) is not None)
