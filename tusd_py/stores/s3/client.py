"""The S3 client as the store uses it: one aiobotocore client, one `call` that retries, counts
and maps errors, and the operations on one multipart upload built on it."""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import TYPE_CHECKING, Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from tusd_py.errors import gone
from tusd_py.metrics import s3_request
from tusd_py.stores.s3 import signing
from tusd_py.stores.s3.errors import MISSING_KEY, NO_UPLOAD, bucket_problem, s3_unavailable
from tusd_py.stores.s3.objects import ObjectSettings
from tusd_py.stores.s3.parts import CHECKSUM_ALGORITHM, PartDigest, checksum_params, part_digest

if TYPE_CHECKING:
    from tusd_py.config import S3AddressingStyle, S3Checksum
    from tusd_py.stores.s3.parts import PartBuffer
    from tusd_py.stores.s3.upload import S3Upload


# The calls that create an object (or the multipart upload that becomes one): each gets the
# configured encryption and storage class.
_WRITES_OBJECT = frozenset({"put_object", "create_multipart_upload"})
# The start-up and /ready checks answer within this (each of connect and read), without retries.
PROBE_TIMEOUT = 3.0


def checksums_on(choice: S3Checksum, endpoint: str | None) -> bool:
    """Whether bodies carry S3's SHA-256 checksum: "auto" is on for AWS, which verifies and
    keeps them, and off with an S3-compatible endpoint, where support varies (docs/s3.md)."""
    if choice == "auto":
        return endpoint is None
    return choice == "sha256"


def addressing(style: S3AddressingStyle, endpoint: str | None) -> str:
    """botocore's addressing style: "auto" is virtual-hosted on AWS (where path-style is being
    retired) and path-style on an S3-compatible endpoint (most accept nothing else by default,
    and a bucket in the host name needs wildcard DNS and a wildcard certificate)."""
    if style != "auto":
        return style
    return "path" if endpoint else "virtual"


# Where a part's SHA-256 checksum travels: UploadPart's and UploadPartCopy's answers, ListParts'
# entries and CompleteMultipartUpload's parts all name it so.
CHECKSUM_KEY = "ChecksumSHA256"


def completed_part(part: dict[str, Any]) -> dict[str, Any]:
    """A part as CompleteMultipartUpload takes it: with its checksum where it has one (S3
    requires each part's checksum when the multipart upload was created with an algorithm;
    ListParts gives it for parts uploaded by earlier PATCHes)."""
    entry = {"PartNumber": part["PartNumber"], "ETag": part["ETag"]}
    if part.get(CHECKSUM_KEY):
        entry[CHECKSUM_KEY] = part[CHECKSUM_KEY]
    return entry


class S3Client:
    """One bucket through one aiobotocore client, opened by `open()` and closed by `close()`."""

    def __init__(
        self,
        bucket: str,
        *,
        endpoint: str | None,
        region: str | None,
        max_attempts: int,
        connect_timeout: float,
        read_timeout: float,
        max_connections: int,
        objects: ObjectSettings | None = None,
        ca_bundle: str | None = None,
        addressing_style: S3AddressingStyle = "auto",
        checksum: S3Checksum = "auto",
    ) -> None:
        self.bucket = bucket
        self.objects = objects or ObjectSettings()
        self.endpoint = endpoint
        self.region = region
        # None lets botocore choose: AWS_CA_BUNDLE (or the profile's ca_bundle), else certifi's.
        self.verify = ca_bundle
        # Content-MD5 lets S3 check each body and, on HTTPS, spares botocore hashing it for the
        # signature. Over plain HTTP botocore signs the body's SHA-256 anyway, which S3 checks the
        # same way: an MD5 on top would only cost CPU (docs/performance.md, item 3). Bodies are
        # hashed in a worker thread either way (parts.PartDigest).
        self.content_md5 = not (endpoint or "").lower().startswith("http://")
        #: S3's flexible checksum (SHA-256) on every part and object the store writes; it then
        #: replaces the Content-MD5 as what S3 checks (docs/s3.md, Checksums).
        self.checksum = checksums_on(checksum, endpoint)
        # One session for the store's clients: each session parses botocore's S3 model and
        # endpoint rules (~12 MiB of RSS) for itself, so a session per client held it twice.
        self._session = get_session()
        self._config = AioConfig(
            region_name=region,
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=max_connections,
            s3={"addressing_style": addressing(addressing_style, endpoint)},
            # Many S3-compatible services reject the CRC trailers newer botocore sends by
            # default; parts carry Content-MD5 instead.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._stack: contextlib.AsyncExitStack | None = None
        #: The aiobotocore client while open.
        self.s3: Any = None
        self._probe: Any = None  # the check's client, made on first use
        self._presigner: Any = None  # signs download URLs (SigV4), made on first use
        #: Logical S3 calls by operation (botocore's retries not included): what a PATCH costs.
        self.request_counts: Counter[str] = Counter()

    def digest_for(self, upload: S3Upload) -> PartDigest:
        """What vouches for each body of the upload's parts and segments (parts.PartDigest)."""
        return part_digest(self.content_md5, upload.checksum)

    @property
    def digest(self) -> PartDigest:
        """What vouches for the bodies of new uploads and of the store's own objects."""
        return part_digest(self.content_md5, self.checksum)

    def checksum_of(self, data: bytes) -> dict[str, Any]:
        """The flexible checksum parameters of a small body, when checksums are on."""
        return checksum_params(self.digest, data)

    async def open(self) -> None:
        stack = contextlib.AsyncExitStack()
        self.s3 = await stack.enter_async_context(
            self._session.create_client(
                "s3",
                endpoint_url=self.endpoint,
                region_name=self.region,
                config=self._config,
                verify=self.verify,
            )
        )
        signing.install(self.s3.meta.events)
        self._stack = stack

    async def close(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
        self._stack = None
        self.s3 = self._probe = self._presigner = None

    async def call(
        self,
        operation: str,
        upload_id: str | None,
        *,
        missing: frozenset[str] = frozenset(),
        **params: Any,
    ) -> Any:
        """One S3 call with botocore's retries; errors become `TusError`s.

        Returns None for the error codes in `missing`; a vanished multipart upload is 410.
        """
        if self.s3 is None:
            raise RuntimeError("S3Store.open() was not called")
        self.request_counts[operation] += 1
        if operation in _WRITES_OBJECT:  # every object: `.info`, segments, the upload's own
            params = {**self.objects.every_object(), **params}
        # The store's bucket unless the call names another (an upload a hook placed there).
        params = {"Bucket": self.bucket, **params}
        try:
            with s3_request(operation):  # tusd_s3_request_duration_seconds
                return await getattr(self.s3, operation)(**params)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in missing:
                return None
            if code in NO_UPLOAD and upload_id is not None:
                raise gone(upload_id) from exc
            raise s3_unavailable(operation, upload_id, exc, params["Bucket"]) from exc
        except BotoCoreError as exc:
            raise s3_unavailable(operation, upload_id, exc, params["Bucket"]) from exc

    async def check_bucket(self) -> None:
        """HeadBucket without retries and with short timeouts (the start-up and /ready checks):
        a `TusError` that says what is wrong, at once rather than after a minute of retries."""
        if self._stack is None:
            raise RuntimeError("S3Store.open() was not called")
        if self._probe is None:
            self._probe = await self._stack.enter_async_context(
                self._session.create_client(
                    "s3",
                    endpoint_url=self.endpoint,
                    region_name=self.region,
                    verify=self.verify,
                    config=self._config.merge(
                        AioConfig(
                            retries={"mode": "standard", "total_max_attempts": 1},
                            connect_timeout=PROBE_TIMEOUT,
                            read_timeout=PROBE_TIMEOUT,
                        )
                    ),
                )
            )
        self.request_counts["head_bucket"] += 1
        try:
            with s3_request("head_bucket"):
                await self._probe.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise bucket_problem(exc, self.bucket, self.endpoint) from exc

    async def presigned_get(self, key: str, expires_in: int, **params: str) -> str:
        """A GetObject URL that anyone holding it may use for `expires_in` seconds; `params`
        (ResponseContentType, ResponseContentDisposition, ...) are part of its signature.

        Signed with SigV4 by a client of its own: botocore presigns with SigV2 by default where
        the region allows it, which newer regions and many S3-compatible services refuse."""
        if self._stack is None:
            raise RuntimeError("S3Store.open() was not called")
        if self._presigner is None:
            self._presigner = await self._stack.enter_async_context(
                self._session.create_client(
                    "s3",
                    endpoint_url=self.endpoint,
                    region_name=self.region,
                    verify=self.verify,
                    config=self._config.merge(AioConfig(signature_version="s3v4")),
                )
            )
        self.request_counts["presign_get_object"] += 1
        url = await self._presigner.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": key, **params},
            ExpiresIn=expires_in,
        )
        return str(url)

    # -- one multipart upload -----------------------------------------------------------------

    async def upload_part(
        self, upload: S3Upload, number: int, buffer: PartBuffer
    ) -> dict[str, Any]:
        """Send part `number` from `buffer`; its entry for CompleteMultipartUpload (PartNumber,
        ETag, Size, and its checksum when the multipart upload has one)."""
        digest = await buffer.digest_params(whole=True)  # a part is never appended to again
        response = await self.call(
            "upload_part",
            upload.id,
            **upload.where,
            Key=upload.key,
            UploadId=upload.multipart_id,
            PartNumber=number,
            Body=buffer.body(),
            ContentLength=buffer.size,
            **digest,
        )
        part = {"PartNumber": number, "ETag": str(response["ETag"]), "Size": buffer.size}
        checksum = response.get(CHECKSUM_KEY) or digest.get(CHECKSUM_KEY)
        if checksum:
            part[CHECKSUM_KEY] = checksum
        return part

    def creation_params(self) -> dict[str, Any]:
        """What CreateMultipartUpload of an upload's object adds: the checksum algorithm that
        S3 then requires (and verifies) on every part."""
        return {"ChecksumAlgorithm": CHECKSUM_ALGORITHM} if self.checksum else {}

    async def list_parts(self, upload: S3Upload) -> list[dict[str, Any]] | None:
        """Every part of the multipart upload in order, or None when it no longer exists."""
        parts: list[dict[str, Any]] = []
        marker = 0
        while True:
            response = await self.call(
                "list_parts",
                upload.id,
                missing=NO_UPLOAD,
                **upload.where,
                Key=upload.key,
                UploadId=upload.multipart_id,
                PartNumberMarker=marker,
            )
            if response is None:
                return None
            parts.extend(response.get("Parts", []))
            if not response.get("IsTruncated"):
                break
            marker = int(response["NextPartNumberMarker"])
        parts.sort(key=lambda part: int(part["PartNumber"]))
        return parts

    async def object_size(
        self, key: str, upload_id: str, where: dict[str, Any] | None = None
    ) -> int | None:
        response = await self.call(
            "head_object", upload_id, missing=MISSING_KEY, **(where or {}), Key=key
        )
        return None if response is None else int(response["ContentLength"])

    async def complete(self, upload: S3Upload, parts: list[dict[str, Any]]) -> None:
        """Complete the multipart upload from `parts` (PartNumber, ETag, Size), in order."""
        if not parts:  # a deferred-length upload that turned out empty
            await self.call(
                "put_object",
                upload.id,
                **upload.where,
                Key=upload.key,
                Body=b"",
                **self.checksum_of(b""),
            )
            await self.call(
                "abort_multipart_upload",
                upload.id,
                missing=NO_UPLOAD,
                **upload.where,
                Key=upload.key,
                UploadId=upload.multipart_id,
            )
            return
        done = await self.call(
            "complete_multipart_upload",
            upload.id,
            missing=NO_UPLOAD,
            **upload.where,
            Key=upload.key,
            UploadId=upload.multipart_id,
            MultipartUpload={"Parts": [completed_part(p) for p in parts]},
        )
        if done is None:
            # botocore retried a completion that had succeeded; check the object is there.
            expected = sum(int(p["Size"]) for p in parts)
            if await self.object_size(upload.key, upload.id, upload.where) != expected:
                raise gone(upload.id)
