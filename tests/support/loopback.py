"""Keep salt-factories' own sockets on loopback.

Its log server and event listener bind 0.0.0.0 by default; snap's tests and
demo keep every socket on 127.0.0.1.
"""

import functools

from saltfactories.plugins import event_listener, log_server

_EventListener = event_listener.EventListener


def loopback_event_listener(**kwargs):
    listener = _EventListener(**kwargs)
    listener.host = "127.0.0.1"
    listener.address = f"tcp://127.0.0.1:{listener.port}"
    return listener


def install():
    """Patch the module globals salt-factories builds both services through."""
    if not isinstance(log_server.LogServer, functools.partial):
        log_server.LogServer = functools.partial(log_server.LogServer, log_host="127.0.0.1")
    event_listener.EventListener = loopback_event_listener
