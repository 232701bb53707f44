"""Imported by the fork server, first: adopt the supervisor's main script once.

Every fork request carries the path of the parent's main script, and a child
whose ``__main__`` is not that file runs it again (``runpy``) before its
target, so that objects defined there can be unpickled. For ``foundation up``
that is the console script, which imports the whole CLI: paid on every
worker start. The fork server's own ``__main__`` preload was meant to avoid
this but never receives the path, so this module does it: it runs the script
once, here, as ``__mp_main__`` (its ``if __name__ == "__main__"`` part does not
run), and every forked child then finds it already in place.
"""

from __future__ import annotations

import logging
import os

from multiprocess import process, spawn

from broker import die_with_parent

MAIN_ENV = "FOUNDATION_FORK_MAIN"  # set by supervisor.forkserver

# First thing, before the (possibly slow) import below: the fork server must
# not outlive a supervisor killed meanwhile. (workers.preload does it again.)
die_with_parent()

_path = os.environ.get(MAIN_ENV)
if _path:
    # As the fork server's own preload does: a script that starts processes
    # at import time fails loudly instead of forking from here.
    process.current_process()._inheriting = True
    try:
        spawn.import_main_path(_path)
    except Exception:  # noqa: BLE001 - the fork server must survive; each child then runs it itself
        logging.getLogger("foundation.forkserver").exception("preloading %s failed", _path)
    finally:
        del process.current_process()._inheriting
