"""The interpreter's switch interval, shortened while a helper thread works beside the main
one (issue 11).

A batch's graph rows written behind the resolver (``storage.base.Tx.write_behind``) run in a
thread that spends most of its time outside the GIL, waiting for the server. Each time it
comes back (the server took a block of COPY data), it needs the GIL for a moment; the main
thread, busy in Python resolving records, keeps it up to the switch interval, 5 ms by
default. Measured (PostgreSQL, the example, 50k rows): at 5 ms a batch's first write lasted
as long as the whole rest of its resolution, one write a batch; at 0.2 ms three, and the
load ran 8% faster. While any such thread runs, the interval is at most
``HELPER_SWITCH_INTERVAL``; the last one to end puts back what it was (threads of one
process count together: a worker process may run several loaders).

(The file's hash beside the store's opening, ``sources.identity.SourceAhead``, measured no
different with it: it reads and hashes 4 MiB at a time, a dozen GIL waits a file.)
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator

HELPER_SWITCH_INTERVAL = 0.0002  # seconds

_lock = threading.Lock()
_users = 0
_saved = 0.005


@contextlib.contextmanager
def short_switch_interval() -> Iterator[None]:
    """Within it, the switch interval is at most ``HELPER_SWITCH_INTERVAL``."""
    global _users, _saved
    with _lock:
        if _users == 0:
            _saved = sys.getswitchinterval()
            sys.setswitchinterval(min(_saved, HELPER_SWITCH_INTERVAL))
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                sys.setswitchinterval(_saved)
