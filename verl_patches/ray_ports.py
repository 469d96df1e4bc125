"""Give each local Ray cluster a free dashboard-agent port, so two stacks can share a machine.

ray 2.60 ``ray/_private/parameter.py::RayParams.__init__`` defaults ``dashboard_agent_listen_port``
to the fixed 52365 and ``ray.init()`` offers no argument to change it. When another local Ray
cluster on the host already holds 52365 (e.g. another engineer's eval stack), our raylet's dashboard
agent fails to bind, the raylet exits ("one Ray agent failed") and the run dies. We wrap
``RayParams.__init__`` so that, when the caller left the default, a currently free port is picked.
Only the process that starts the cluster (the driver's ``ray.init``) constructs ``RayParams``.
"""

import functools
import socket

from verl_patches._guard import Target, already_patched, mark_patched, verify
from verl_patches.import_hook import when_imported

TARGET = Target(
    dist="ray",
    version="2.60.0",
    module="ray._private.parameter",
    attr="RayParams.__init__",
    source_sha="265892dabdc870d7",
)
RAY_DEFAULT_AGENT_PORT = 52365


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def patch_module(module) -> None:
    RayParams = module.RayParams
    if already_patched(RayParams.__init__):
        return
    original = verify(TARGET)

    @functools.wraps(original)
    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if self.dashboard_agent_listen_port == RAY_DEFAULT_AGENT_PORT:
            self.dashboard_agent_listen_port = free_port()

    RayParams.__init__ = mark_patched(__init__)


def apply() -> None:
    when_imported(TARGET.module, patch_module)
