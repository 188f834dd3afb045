"""localstripe for the tests: `python -m tests.localstripe_server`; it prints the port it bound.

localstripe 1.15 (PyPI) runs as is on Python 3.11 with stripe-python 16, but its `start()`
binds `::` (every interface) and, even with `--from-scratch`, pickles its whole store to the
fixed path /tmp/localstripe.pickle after every write, a file that every instance on the machine
shares. This wrapper serves the same app on 127.0.0.1 only and keeps the store in memory. It binds
a free port itself, so two test workers never race for one port.
"""

from __future__ import annotations

import socket

from aiohttp import web
from localstripe import resources, server


def main() -> None:
    resources.Store.dump_to_disk = lambda self: None  # type: ignore[method-assign]
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    web.run_app(server.app, sock=sock, print=None, access_log=None)


if __name__ == "__main__":
    main()
