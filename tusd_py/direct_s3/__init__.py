"""Direct-to-S3 uploads beside tus: the routes `@uppy/aws-s3` calls with `companionEndpoint`.

The browser PUTs multipart parts (or POSTs a small file) straight to the bucket with URLs this
server presigns; the server never sees the bytes. Unlike Uppy Companion, the server chooses the
key and the upload id and keeps a record of each upload in the same state backend as tus uploads
(an `UploadInfo` whose `storage` says `direct`), so signing, listing, completing and aborting are
refused unless the request names an upload that exists, with its key. The record is what makes
the rest the same as for tus: hooks (pre-create, pre-access, post-finish, ...), metrics, and the
expiry sweep, which aborts the multipart upload of an abandoned direct upload like a tus one.

Modules:
    bucket.py   DirectBucket: the S3 store's client and key layout, and the presigning
    records.py  creating, finding and checking the record of a direct upload
    routes.py   the Starlette routes and their JSON answers
"""

from tusd_py.direct_s3.routes import direct_s3_routes

__all__ = ["direct_s3_routes"]
