"""Where an upload's object goes: `<prefix><id>` by default, `--s3-key-template`, or the key a
pre-create hook chose (`ChangeFileInfo.Storage.Key`), each checked before anything is written.

A chosen key is a whole object key that starts with `--s3-prefix`, so a store's objects stay
where its permissions, lifecycle rules and listings look. The `.info` stays at `<prefix><id>.info`
(an upload is found by its id) and records the key; segments sit beside the object
(`<key>.part.<n>.<pos>`). An upload whose key is not `<prefix><id>` (or whose bucket is
not the store's) also keeps an empty multipart upload open on `<prefix><id>` while it is
unfinished, its marker (`info.storage["marker_upload_id"]`): the expiry sweep lists the open
multipart uploads under the prefix by key, and finds the upload's id there as for any other.
A hook may also place the upload in another bucket listed in `--s3-allowed-buckets`
(`info.storage["bucket"]`); its object and segments go there, its `.info` and marker stay in the
store's bucket.
"""

from __future__ import annotations

import re
import string
import time

from tusd_py.stores.names import name_problem

# S3 allows 1,024 bytes; room is left for the segment names `<key>.part.<n>.<pos>`.
MAX_KEY_BYTES = 960
TEMPLATE_FIELDS = frozenset({"prefix", "id", "yyyy", "mm", "dd", "hh"})
# Names the store gives its own objects: a chosen key must not look like one.
_OWN_NAMES = re.compile(r"(\.info|\.part\.\d+\.\d+)$")


def template_problem(template: str) -> str | None:
    """Why `--s3-key-template` cannot work, or None."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        return f"it is not a valid template ({exc})"
    fields = [name for _, name, _, _ in parsed if name is not None]
    unknown = sorted(set(fields) - TEMPLATE_FIELDS)
    if unknown:
        return f"it names {{{unknown[0]}}}; it may use " + ", ".join(
            f"{{{name}}}" for name in sorted(TEMPLATE_FIELDS)
        )
    if "id" not in fields:
        return "it must contain {id}, so that every upload gets a key of its own"
    if not template.startswith("{prefix}"):
        return "it must start with {prefix}, so that the keys stay under --s3-prefix"
    return None


def render_key(template: str, prefix: str, upload_id: str, created_at: float) -> str:
    when = time.gmtime(created_at)
    return template.format(
        prefix=prefix,
        id=upload_id,
        yyyy=f"{when.tm_year:04}",
        mm=f"{when.tm_mon:02}",
        dd=f"{when.tm_mday:02}",
        hh=f"{when.tm_hour:02}",
    )


def key_problem(key: str, prefix: str) -> str | None:
    """Why `key` cannot be an upload's object key under `prefix`, or None."""
    problem = name_problem(key, MAX_KEY_BYTES)
    if problem is not None:
        return problem
    if not key.startswith(prefix) or key == prefix:
        return f"does not start with the store's prefix {prefix!r} followed by a name"
    if _OWN_NAMES.search(key):
        return "is named like one of the store's own objects (.info, .part.<n>.<pos>)"
    return None
