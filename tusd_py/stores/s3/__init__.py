"""S3 store: each upload is one S3 multipart upload; PATCH bodies become parts as they arrive.

Layout under the configured prefix, per upload:
    <id>        the object: an open multipart upload until finish() completes it (or the key a
                template or a pre-create hook chose; <id> is then an empty marker: keys.py)
    <id>.info   the upload's info as JSON (the copy state is rebuilt from)
    <id>.part.<n>.<pos>
                a segment of the incomplete part n: bytes [pos, pos + its size) of part n that a
                PATCH brought but that do not fill the part yet, when the upload keeps its tails
                in S3; with Redis they are Redis strings instead (tails.py). Each PATCH that
                ends inside a part writes only its own bytes as a new segment; the segments of a
                part, chained from position 0, hold its committed head.

With S3 checksums (`--s3-checksum`, recorded per upload in `info.storage["checksum"]`), the
multipart upload is created with SHA256 and every part and segment carries its SHA-256, which S3
verifies; the completed object keeps S3's composite checksum (docs/s3.md, Checksums).

Every non-trailing part has exactly the upload's part size (fixed at creation, recorded in
`info.storage`), so part N always holds bytes [(N-1)*size, N*size) and a retry re-uploads the same
part numbers. The committed offset only ever covers bytes S3 acknowledged: whole parts and
segments.

Small PATCHes (a client with chunkSize 1 MiB and 8 MiB parts) therefore cost each byte one
segment write and one part upload, instead of re-sending the whole growing tail on every PATCH;
with tails in Redis the segment write is a Redis SET, not an S3 PUT. The PATCH that fills a part
whose head came from earlier PATCHes writes its own bytes as a segment, commits, answers, and
leaves the part's upload (from memory: this process still holds the head) running in the
background; finish() waits for it, and rebuilds from the segments any part that a background
upload (or another instance, or a crash) did not deliver.

S3 requests per PATCH with tails in S3 (not counting the state store's own writes; with tails in
Redis, the segment requests below are Redis round trips instead):
    - one UploadPart per whole part the body fills, up to `max_concurrency` in flight;
    - when the PATCH starts inside a part: a ListObjectsV2 and a GET per segment of that part,
      unless this process wrote that head itself and still has it cached in idle buffer memory;
    - when the PATCH ends inside a part of an unfinished upload: one PUT of a segment;
    - when it fills a part started by earlier PATCHes: one PUT of a segment, and the UploadPart
      of that part in the background;
    - when the PATCH completes the upload: the last (short) part is an UploadPart; finish() then
      sends ListParts (one per 1000 parts), CompleteMultipartUpload, and a ListObjectsV2 (plus a
      DeleteObjects per 1000 segments, if there are any).

Known limit: S3 has no conditional part writes, so a writer that lost its lock without noticing
(lease expired while S3 was slow) can still overwrite a part or a segment before its commit fails.
The bytes it writes are the same client's bytes at the same offsets, so a well-behaved client is
unaffected; the offset it could not commit stays where the current lock holder put it.

Modules, one concept each:
    store.py         S3Store: the DataStore methods; read() continues a GetObject body that
                     breaks off with a ranged GetObject from the byte it reached
    writer.py        PatchWriter: one PATCH body cut into parts, uploaded, committed in order
    part_uploads.py  PartUploads: what outlives a PATCH (buffer budget, tail cache, tail stores,
                     background part uploads, tails waiting to be released)
    concat.py        concatenation by UploadPartCopy and gathered parts
    client.py        S3Client: the aiobotocore client, `call` (error mapping, request counts),
                     the multipart operations and presigned download URLs
    parts.py         PartBuffer, Budget and the digests of part bodies (Content-MD5, the
                     signed SHA-256, or S3's own SHA-256 checksum with --s3-checksum)
    tails.py         where the incomplete part waits: S3 segments or Redis
    upload.py        S3Upload (what `info.storage` records) and key names
    keys.py          object keys chosen by --s3-key-template or a pre-create hook
    signing.py       SigV4 with a payload hash computed off the event loop
    objects.py       what written objects carry: encryption, storage class, the upload
                     object's Content-Type/-Disposition and metadata
    limits.py        S3's multipart limits (as configured), choose_part_size, the 413
    errors.py        what failed S3 calls become
"""

from tusd_py.stores.s3.limits import (
    MAX_OBJECT_SIZE,
    MAX_PART_SIZE,
    MAX_PARTS,
    MIB,
    MIN_PART_SIZE,
    choose_part_size,
)
from tusd_py.stores.s3.part_uploads import PartUploads
from tusd_py.stores.s3.store import DEFAULT_BUFFER_SIZE, DEFAULT_PART_SIZE, S3Store
from tusd_py.stores.s3.tails import REDIS_TAIL_MAX_PART, RedisTails, SegmentTails
from tusd_py.stores.s3.upload import S3Upload

__all__ = [
    "DEFAULT_BUFFER_SIZE",
    "DEFAULT_PART_SIZE",
    "MAX_OBJECT_SIZE",
    "MAX_PARTS",
    "MAX_PART_SIZE",
    "MIB",
    "MIN_PART_SIZE",
    "REDIS_TAIL_MAX_PART",
    "PartUploads",
    "RedisTails",
    "S3Store",
    "S3Upload",
    "SegmentTails",
    "choose_part_size",
]
