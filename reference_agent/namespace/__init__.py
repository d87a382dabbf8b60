"""The agent's namespace: mount table and lexical path resolution (see README.md)."""

from reference_agent.namespace._mounts import (
    Access,
    Mount,
    MountlistError,
    Special,
    parse_mountlist,
    read_mountlist,
)
from reference_agent.namespace._resolve import (
    DEFAULT_SERVICES,
    LocalTarget,
    Namespace,
    Refused,
    RemoteTarget,
    ServiceDirectory,
    Target,
    logical_path,
)

__all__ = [
    "DEFAULT_SERVICES",
    "Access",
    "LocalTarget",
    "Mount",
    "MountlistError",
    "Namespace",
    "Refused",
    "RemoteTarget",
    "ServiceDirectory",
    "Special",
    "Target",
    "logical_path",
    "parse_mountlist",
    "read_mountlist",
]
