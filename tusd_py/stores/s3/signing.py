"""SigV4 for part and segment uploads whose SHA-256 was computed beforehand, off the loop.

Over plain HTTP botocore signs the SHA-256 of every request body, which S3 checks. For an 8 MiB
part it reads the body back in 1 MiB copies and hashes it on the event loop, where no other
request of the process moves meanwhile (what that cost: docs/performance.md, item 13). The
store hashes bodies in a worker thread instead (parts.digest_params) and passes the digest as
the extra `PAYLOAD_SHA256` parameter of `upload_part` or `put_object`; the handlers here move it
into the request's context and sign with it. What goes on the wire is unchanged: a signed
payload.
"""

from __future__ import annotations

from typing import Any

import botocore.auth
from botocore.auth import S3SigV4Auth
from botocore.handlers import set_operation_specific_signer

# The extra parameter of these operations (taken out before botocore validates the parameters).
PAYLOAD_SHA256 = "TusdPyPayloadSha256"
_OPERATIONS = ("UploadPart", "PutObject")  # parts, and the segments of incomplete parts
_CONTEXT_KEY = "tusd_py_payload_sha256"
_SIGNATURE_VERSION = "tusd-py-s3v4"  # a name of our own: botocore's "s3v4" stays as it is


class _S3SigV4KnownPayload(S3SigV4Auth):  # type: ignore[misc]  # botocore is untyped
    """botocore's S3 SigV4, taking the payload's SHA-256 from the context instead of hashing."""

    def payload(self, request: Any) -> str:
        digest = request.context.get(_CONTEXT_KEY)
        if (
            digest is None
            or self._is_streaming_checksum_payload(request)
            or not self._should_sha256_sign_payload(request)
        ):
            return str(super().payload(request))
        return str(digest)


def _take_digest(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    digest = params.pop(PAYLOAD_SHA256, None)
    if digest is not None:
        context[_CONTEXT_KEY] = digest


def _choose_signer(context: dict[str, Any], **kwargs: Any) -> Any:
    if _CONTEXT_KEY not in context:
        return None  # botocore's choice
    # botocore's own choice, made here because the first answer wins: ours replaces plain "s3v4".
    chosen = set_operation_specific_signer(context=context, **kwargs)
    return _SIGNATURE_VERSION if chosen == "s3v4" else chosen


def install(events: Any) -> None:
    """Register the handlers on an S3 client's event system (`client.meta.events`)."""
    botocore.auth.AUTH_TYPE_MAPS.setdefault(_SIGNATURE_VERSION, _S3SigV4KnownPayload)
    for operation in _OPERATIONS:
        events.register(f"provide-client-params.s3.{operation}", _take_digest)
        events.register(f"choose-signer.s3.{operation}", _choose_signer)
