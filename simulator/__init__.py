"""The bundled contact-center API simulator (demo, tests, local development)."""

from followup.simulator.server import make_app, serve
from followup.simulator.state import SimState, parse_client

# id:secret:scopes (conversations) or permissions (genesys): one with what a call needs, one
# without it.
DEFAULT_CLIENTS = (
    "followup-demo:demo-secret:conversation:write user:call:center:write",
    "followup-noscope:demo-secret:user:call:center:write",
)
DEFAULT_GENESYS_CLIENTS = (
    "followup-demo:demo-secret:conversation:call:add analytics:conversationDetail:view",
    "followup-noscope:demo-secret:conversation:view",
)
DEFAULT_USERS = ("u-67890", "u-1001", "u-1002", "u-1003", "u-1004")

__all__ = [
    "DEFAULT_CLIENTS",
    "DEFAULT_GENESYS_CLIENTS",
    "DEFAULT_USERS",
    "SimState",
    "make_app",
    "parse_client",
    "serve",
]
