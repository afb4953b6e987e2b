"""The marker object the sync agent keeps under its prefix (`.~vmlab-agent-marker`, never restored): put once the
store holds what the manifest records, its absence later means the bucket or prefix lost its objects (deleted,
re-created) and nothing the manifest says is there can be trusted.

Example::

    put_marker(store)                   # after a restore, or once everything is uploaded again
    if not marker_there(options, tracker):
        ...                             # a full pass uploads everything again
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING

from vmlab.agent.keys import MARKER_KEY
from vmlab.agent.stores import Store
from vmlab.errors import VmlabError

if TYPE_CHECKING:
    from vmlab.agent.daemon import SyncOptions, Tracker

log = logging.getLogger("vmlab.agent")


def put_marker(store: Store) -> bool:
    """Put the marker object whose absence later tells that the store lost what was uploaded."""
    body = b"vmlab-agent: this prefix is synced; do not delete\n"
    try:
        store.put(MARKER_KEY, body, hashlib.md5(body, usedforsecurity=False).hexdigest())
        return True
    except VmlabError as e:
        log.error("cannot put the marker object: %s", e)
        return False


def marker_there(options: SyncOptions, tracker: Tracker) -> bool:
    """One check of the marker (S3: a HEAD, or on a 403 a listing of exactly its key). Gone: the bucket or prefix
    was emptied or re-created, so no copy the manifest records can be trusted: every file is uploaded again, and
    the status says so until that is done. Known paths stay known (a file deleted meanwhile may have been put
    into the new bucket before the check: its delete must still be sent), except held deletes: their files are
    gone here and the store lost its copies, so nothing is left to hold. A check that fails proves nothing
    either way: the status says `unverified` (never "in sync") until a check answers."""
    try:
        there = options.store.exists(MARKER_KEY)
    except VmlabError as e:
        log.warning("cannot check the marker object: %s", e)
        tracker.status.unverified = str(e)
        return True
    tracker.status.unverified = ""
    if there:
        return True
    if not options.manifest.entries:  # nothing was uploaded from here yet: a first sync, nothing can be lost
        return put_marker(options.store)
    log.error("%s lost its objects (the marker is gone: deleted or re-created?): uploading everything again",
              options.store.url)
    assert options.guard is not None
    for rel in options.guard.held:
        options.manifest.forget(rel)
    options.manifest.distrust()
    options.guard.held.clear()
    options.guard.save()
    tracker.status.lost = True
    tracker.status.last_sync = 0.0
    return False
