"""Run one program under the agent: the syscall table wired to the tracer.

The agent (``agent``) knows how to trace and answer a call; the table
(``table``) knows which calls to trap and who answers each. This module is the
one place that puts them together, so neither imports the other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from reference_agent import table
from reference_agent.agent import Agent, AgentOptions
from reference_agent.namespace import Namespace

__all__ = ["run_program"]


def run_program(
    namespace: Namespace,
    options: AgentOptions,
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> int:
    """Run ``argv`` under a new agent with ``namespace``; return its exit status.

    Raises:
        OSError: the program could not be started, naming it.
    """
    return Agent(namespace, options).run(argv, table, env=env, cwd=cwd)
