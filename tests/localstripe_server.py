"""localstripe for the tests: `python -m tests.localstripe_server PORT`.

localstripe 1.15 (PyPI) runs as is on Python 3.11 with stripe-python 16, but its `start()`
binds `::` (every interface) and, even with `--from-scratch`, pickles its whole store to the
fixed path /tmp/localstripe.pickle after every write, a file that every instance on the machine
shares. This wrapper serves the same app on 127.0.0.1 only and keeps the store in memory.
"""

from __future__ import annotations

import sys

from aiohttp import web
from localstripe import resources, server


def main(port: int) -> None:
    resources.Store.dump_to_disk = lambda self: None  # type: ignore[method-assign]
    web.run_app(server.app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main(int(sys.argv[1]))
