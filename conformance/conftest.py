"""``pytest conformance --driver NAME``: the plugin lives in conformance/plugin.py."""

from conformance.plugin import *  # noqa: F403 - hooks and fixtures are found by name
from conformance.plugin import _record_property  # noqa: F401 - an autouse fixture
