"""The shared, content-addressed image cache.

Layout under the site's cache directory; the five directories are made by the cache's owner
(root, or the owner of the cache directory: `stardock images init`), 1777 when shared, like /tmp:
anybody may add, nobody but the owner of a file (or of the directory) may remove or rename it:

    entries/<key>-u<uid>[.<suffix>]   a published entry: meta.json, the artifact, the definition,
                                      the spec; read-only; a real directory whose owner is uid;
                                      public (0555/0444) or private to uid (0500/0400), as its
                                      meta.json records (visibility.py decides), modes set
                                      before the rename that publishes it
    tmp/<key>-u<uid>.<random>         builds in progress (published by an atomic rename), 0700
    locks/<key>.u<uid>.lock           a user's builds of a key build once (per user: anybody can
                                      flock a file they can open, so a shared lock is a DoS)
    used/<entry>.u<uid>               touched whenever uid uses an entry (for pruning)
    inuse/<entry>.j<job>.u<uid>       jobs that will run an entry (pruning keeps those entries)

locks/, used/ and inuse/ hold empty files: their names (a key, a uid, a job id) are all they show.
A key is a digest of the whole spec: anybody can confirm a guess of a spec with it, never read one
(so a value worth guessing belongs in the spec's secrets:, which the key names but never holds).

Everything below the cache directory may have been planted by another user: nothing is followed
through a symbolic link, files and directories are judged by fstat of the descriptor then used,
metadata is read with a bound and validated, and whatever is not what stardock makes is skipped
(never fatal, never blocking). Trust: the key is computable by anyone, so an entry is used only
when its directory belongs to the user, to root, or to a builder the site trusts, and only while
its artifact (exactly the engine's artifact file, inside the entry, owned by the same user) still
matches the digest recorded when it was published.
"""
from __future__ import annotations

from stardock_hpc.cache.entries import (
    ARTIFACTS,
    ENTRY_LOCK,
    JOB_RE,
    PRIVATE,
    PUBLIC,
    SUBDIRS,
    CacheError,
    Entry,
    Invalid,
    image_tag,
    validate_meta,
)
from stardock_hpc.cache.writing import Cache

__all__ = ["ARTIFACTS", "ENTRY_LOCK", "JOB_RE", "PRIVATE", "PUBLIC", "SUBDIRS", "Cache", "CacheError", "Entry",
           "Invalid", "image_tag", "validate_meta"]
