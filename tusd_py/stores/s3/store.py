"""`S3Store`: the DataStore methods over one bucket (the package's doc comment tells the layout)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator
from typing import TYPE_CHECKING, Any

import botocore.session
from botocore.exceptions import ProfileNotFound

from tusd_py.errors import TusError, storage_unavailable, upload_exists
from tusd_py.ids import is_valid_upload_id
from tusd_py.info import UploadInfo
from tusd_py.redis_connect import client_for
from tusd_py.stores.base import Commit, DataStore
from tusd_py.stores.s3 import concat
from tusd_py.stores.s3.client import S3Client
from tusd_py.stores.s3.errors import (
    MISSING_KEY,
    NO_UPLOAD,
    STREAM_ERRORS,
    error_detail,
    inconsistent,
    invalid_storage,
    s3_unavailable,
)
from tusd_py.stores.s3.keys import key_problem, render_key, template_problem
from tusd_py.stores.s3.limits import (
    MAX_PART_SIZE,
    MAX_PARTS,
    MIB,
    MIN_PART_SIZE,
    check_fits,
    choose_part_size,
)
from tusd_py.stores.s3.objects import ObjectSettings, describe_object
from tusd_py.stores.s3.part_uploads import PartUploads
from tusd_py.stores.s3.tails import REDIS_TAIL_MAX_PART, RedisTails, SegmentTails
from tusd_py.stores.s3.upload import (
    CHECKSUM_SHA256,
    DEFAULT_TAILS,
    S3Upload,
    info_key,
    object_key,
)
from tusd_py.stores.s3.writer import PatchWriter
from tusd_py.validation import ConfigError

if TYPE_CHECKING:
    from tusd_py.config import Config, S3AddressingStyle, S3Checksum, S3Tails

# What a conditional PUT answers when the object exists (AWS, and some S3-compatible services).
_EXISTS = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})

DEFAULT_PART_SIZE = 8 * MIB
DEFAULT_BUFFER_SIZE = 64 * MIB
READ_SIZE = 256 * 1024
# Ranged GetObjects in a row that bring no byte before a download gives up (each is itself
# retried by botocore); a continuation that makes progress starts the count again. Each one that
# brought nothing waits READ_RESUME_PAUSE times its number first.
MAX_READ_RESUMES = 5
READ_RESUME_PAUSE = 0.1

log = logging.getLogger("tusd_py.stores.s3")


class S3Store(DataStore):
    """Uploads as S3 multipart uploads (AWS or any S3-compatible service), via aiobotocore.

    Credentials come from the standard AWS chain (environment, profile, instance role, ...).
    """

    storage_type = "s3store"
    shared_medium = True
    storage_choices = frozenset({"Key", "Bucket"})

    def __init__(
        self,
        bucket: str,
        *,
        endpoint: str | None = None,
        region: str | None = None,
        prefix: str = "",
        part_size: int = DEFAULT_PART_SIZE,
        max_concurrency: int = 4,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        max_object_size: int | None = None,
        spool_dir: str | None = None,
        max_attempts: int = 5,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        max_connections: int = 64,
        max_parts: int = MAX_PARTS,
        min_part_size: int = MIN_PART_SIZE,
        objects: ObjectSettings | None = None,
        key_template: str = "",
        allowed_buckets: tuple[str, ...] = (),
        ca_bundle: str | None = None,
        addressing_style: S3AddressingStyle = "auto",
        checksum: S3Checksum = "auto",
    ) -> None:
        if not 0 < part_size <= MAX_PART_SIZE:
            raise ValueError(f"part_size must be between 1 byte and 5 GiB, got {part_size}")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if not 1 <= max_parts <= MAX_PARTS:
            raise ValueError(f"max_parts must be between 1 and {MAX_PARTS}, got {max_parts}")
        if not 0 < min_part_size <= MAX_PART_SIZE:
            raise ValueError(f"min_part_size must be between 1 byte and 5 GiB, got {min_part_size}")
        self.max_parts = max_parts
        if key_template and (problem := template_problem(key_template)):
            raise ValueError(f"the key template {key_template!r} cannot work: {problem}")
        self.key_template = key_template
        self.allowed_buckets = frozenset(allowed_buckets)
        self.min_part_size = min_part_size
        self.bucket = bucket
        self.prefix = prefix
        self.part_size = part_size
        self.max_object_size = max_object_size
        self.client = S3Client(
            bucket,
            endpoint=endpoint,
            region=region,
            max_attempts=max_attempts,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_connections=max_connections,
            objects=objects,
            ca_bundle=ca_bundle,
            addressing_style=addressing_style,
            checksum=checksum,
        )
        self.parts = PartUploads(
            self.client,
            buffer_size=buffer_size,
            spool_dir=spool_dir,
            max_concurrency=max_concurrency,
        )
        self.tails_choice: S3Tails = "auto"
        #: Seconds a presigned download URL lives; None: downloads stream through the server.
        self.download_expiry: int | None = None

    @classmethod
    def from_config(cls, config: Config) -> S3Store:
        assert config.s3_bucket
        if config.s3_key_template and (problem := template_problem(config.s3_key_template)):
            raise ConfigError(
                f"the key template {config.s3_key_template!r} cannot work: {problem}",
                "s3_key_template",
            )
        try:  # botocore would raise this only once the server starts, as a traceback
            botocore.session.get_session().get_scoped_config()
        except ProfileNotFound as exc:
            raise ValueError(
                f"the AWS profile {exc.kwargs['profile']!r} is not in the AWS config or "
                "credentials file (AWS_PROFILE)"
            ) from None
        store = cls(
            config.s3_bucket,
            endpoint=config.s3_endpoint,
            region=config.s3_region,
            prefix=config.s3_prefix,
            part_size=config.s3_part_size,
            max_concurrency=config.s3_max_concurrency,
            buffer_size=config.s3_buffer_size,
            max_object_size=config.max_size or None,
            max_parts=config.s3_max_parts,
            min_part_size=config.s3_min_part_size,
            objects=ObjectSettings(
                sse=config.s3_sse,
                sse_kms_key_id=config.s3_sse_kms_key_id,
                storage_class=config.s3_storage_class,
            ),
            key_template=config.s3_key_template,
            allowed_buckets=tuple(config.s3_allowed_buckets),
            ca_bundle=config.s3_ca_bundle,
            addressing_style=config.s3_addressing_style,
            checksum=config.s3_checksum,
        )
        store.tails_choice = config.s3_tails
        if config.s3_download == "redirect":
            store.download_expiry = int(config.s3_download_expiry)
        return store

    def describe(self, info: UploadInfo) -> dict[str, str]:
        key = str(info.storage.get("key") or self.prefix + info.id)
        bucket = str(info.storage.get("bucket") or self.bucket)
        return {"Type": self.storage_type, "Bucket": bucket, "Key": key}

    async def declare_length(self, info: UploadInfo) -> None:
        upload = S3Upload.from_info(info)
        check_fits(info.length, upload.part_size, int(info.storage.get("max_parts", MAX_PARTS)))

    def use_redis(self, config: Config) -> None:
        """Keep incomplete parts in Redis unless `--s3-tails s3` (tails.py)."""
        if config.redis_url and self.tails_choice != "s3":
            client = client_for(config, decode=False)  # tails are bytes
            self.use_redis_tails(RedisTails(client, config.redis_prefix))

    def use_redis_tails(self, tails: RedisTails) -> None:
        """Keep the incomplete parts of new uploads (with parts up to REDIS_TAIL_MAX_PART) in
        Redis instead of S3 segments; closed with the store."""
        self.parts.use_redis_tails(tails)

    @property
    def buffered_bytes(self) -> int:
        """Bytes of part data (and cached tails) held in memory right now."""
        return self.parts.buffered_bytes

    @property
    def request_counts(self) -> Counter[str]:
        """Logical S3 calls by operation (botocore's retries not included): what a PATCH costs."""
        return self.client.request_counts

    async def open(self) -> None:
        await self.client.open()

    async def ready(self) -> None:
        await self.client.check_bucket()

    async def close(self) -> None:
        await self.parts.close()
        await self.client.close()

    # -- DataStore ------------------------------------------------------------------------------

    async def create(self, info: UploadInfo) -> None:
        bucket, key = await self._placement(info)
        where: dict[str, Any] = {} if bucket == self.bucket else {"Bucket": bucket}
        part_size = choose_part_size(
            info.length,
            self.part_size,
            self.max_object_size,
            max_parts=self.max_parts,
            min_part_size=self.min_part_size,
        )
        check_fits(info.length, MAX_PART_SIZE, self.max_parts)
        in_redis = self.parts.redis_tails is not None and part_size <= REDIS_TAIL_MAX_PART
        storage: dict[str, Any] = {
            "type": "s3",
            "bucket": bucket,
            "key": key,
            "part_size": part_size,
            "max_parts": self.max_parts,
            "multipart_upload_id": None,
            "tails": RedisTails.kind if in_redis else SegmentTails.kind,
            "checksum": CHECKSUM_SHA256 if self.client.checksum else None,
        }
        info.storage = storage
        # The `.info` is written only where none exists (a conditional PUT), so an id a
        # pre-create hook chose that names an existing upload is refused before that upload's
        # object is touched: a second multipart upload on its key changes nothing until it is
        # completed, and is aborted here.
        if info.length == 0:
            # Complete at once: S3 cannot complete a multipart upload without parts.
            await self._save_new_info(info)
            await self.client.call(
                "put_object",
                info.id,
                **where,
                Key=key,
                Body=b"",
                **describe_object(info),
                **self.client.checksum_of(b""),
            )
            return
        response = await self.client.call(
            "create_multipart_upload",
            info.id,
            **where,
            Key=key,
            **describe_object(info),
            **self.client.creation_params(),
        )
        storage["multipart_upload_id"] = response["UploadId"]
        if where or key != object_key(self.prefix, info.id):
            # The marker (keys.py): an empty multipart upload on `<prefix><id>`, which the
            # expiry sweep's one ListMultipartUploads finds like any other.
            marker = await self.client.call(
                "create_multipart_upload", info.id, Key=object_key(self.prefix, info.id)
            )
            storage["marker_upload_id"] = marker["UploadId"]
        try:
            await self._save_new_info(info)
        except TusError as exc:
            if exc.code == "upload-exists":
                with contextlib.suppress(TusError):
                    await self.client.call(
                        "abort_multipart_upload",
                        None,
                        **where,
                        Key=key,
                        UploadId=response["UploadId"],
                    )
                with contextlib.suppress(TusError):
                    await self._drop_marker(info)
            raise

    async def _placement(self, info: UploadInfo) -> tuple[str, str]:
        """Bucket and object key of a new upload: what a pre-create hook chose (in
        `info.storage`, checked here), else the key template's, else `<prefix><id>` in the
        store's bucket (keys.py)."""
        chosen = info.storage
        bucket = chosen.get("Bucket", self.bucket)
        if bucket != self.bucket and bucket not in self.allowed_buckets:
            allowed = ", ".join(repr(b) for b in [self.bucket, *self.allowed_buckets])
            raise invalid_storage(
                f"Bucket {bucket!r}, which is not one this store may write to ({allowed}; "
                "--s3-allowed-buckets)"
            )
        key = chosen.get("Key")
        if key is None:
            if not self.key_template:
                return bucket, object_key(self.prefix, info.id)
            key = render_key(self.key_template, self.prefix, info.id, info.created_at)
        problem = key_problem(key, self.prefix)
        if problem is not None:
            raise invalid_storage(f"Key {key!r}, which {problem}")
        # A template's keys hold the upload's id, so only a hook's key can be another's.
        if "Key" in chosen and await self._key_taken(info.id, bucket, key):
            raise TusError(
                409,
                "storage-key-taken",
                f"the object key {key!r} chosen for this upload is already in use in the bucket",
            )
        return bucket, key

    async def _key_taken(self, upload_id: str, bucket: str, key: str) -> bool:
        """An object or an open multipart upload (another unfinished upload) on `key`."""
        where: dict[str, Any] = {"Bucket": bucket}
        if await self.client.object_size(key, upload_id, where) is not None:
            return True
        response = await self.client.call(
            "list_multipart_uploads", upload_id, **where, Prefix=key, MaxUploads=1000
        )
        return any(item["Key"] == key for item in response.get("Uploads", []))

    async def _save_new_info(self, info: UploadInfo) -> None:
        body = info.to_json().encode()
        stored = await self.client.call(
            "put_object",
            info.id,
            Key=info_key(self.prefix, info.id),
            Body=body,
            ContentType="application/json",
            IfNoneMatch="*",
            **self.client.checksum_of(body),
            missing=_EXISTS,
        )
        if stored is None:
            raise upload_exists(info.id)

    async def save_info(self, info: UploadInfo) -> None:
        body = info.to_json().encode()
        await self.client.call(
            "put_object",
            info.id,
            Key=info_key(self.prefix, info.id),
            Body=body,
            ContentType="application/json",
            **self.client.checksum_of(body),
        )

    async def load_info(self, upload_id: str) -> UploadInfo | None:
        key = info_key(self.prefix, upload_id)
        response = await self.client.call("get_object", upload_id, missing=MISSING_KEY, Key=key)
        if response is None:
            return None
        try:
            async with response["Body"] as body:
                data = await body.read()
        except STREAM_ERRORS as exc:
            raise s3_unavailable("GetObject", upload_id, exc) from exc
        return UploadInfo.from_json(data)

    async def stored_offset(self, info: UploadInfo) -> int:
        upload = S3Upload.from_info(info)
        parts = None if upload.multipart_id is None else await self.client.list_parts(upload)
        if parts is None:  # completed (or zero-length): the object is the truth
            return await self.client.object_size(upload.key, upload.id, upload.where) or 0
        sizes = {int(part["PartNumber"]): int(part["Size"]) for part in parts}
        offset = 0
        for number in range(1, MAX_PARTS + 1):
            size = sizes.get(number)
            if size is None:  # not uploaded (yet): its committed bytes are in its tail
                size = await self.parts.tails(upload).length(upload, number)
            offset += min(size, upload.part_size)
            if size < upload.part_size:
                break  # a short part or an incomplete one ends what is stored
        return offset if info.length is None else min(offset, info.length)

    async def last_write(self, info: UploadInfo) -> float | None:
        upload = S3Upload.from_info(info)
        parts = None if upload.multipart_id is None else await self.client.list_parts(upload)
        if parts is None:
            return None  # completed: its expiry no longer matters
        times = [part["LastModified"].timestamp() for part in parts]
        tail = await self.parts.tails(upload).last_write(upload)
        return max(times if tail is None else [*times, tail], default=None)

    async def write(self, info: UploadInfo, chunks: AsyncIterable[bytes], commit: Commit) -> int:
        upload = S3Upload.from_info(info)
        await self.parts.release_tails(upload, info.offset)
        return await PatchWriter(self.client, self.parts, info, upload, commit).run(chunks)

    async def finish(self, info: UploadInfo) -> None:
        await self._complete(info)
        await self._drop_marker(info)

    async def _complete(self, info: UploadInfo) -> None:
        upload = S3Upload.from_info(info)
        if upload.multipart_id is None:
            return  # zero-length: the empty object was written by create()
        length = info.length
        if length is None:
            raise inconsistent(info.id, "cannot finish an upload whose length is unknown")
        await self.parts.settle(upload.id)
        parts = await self.client.list_parts(upload)
        if parts is None:
            # Completed already: a retried CompleteMultipartUpload whose response was lost, or a
            # finish() repeated after a crash.
            if await self.client.object_size(upload.key, upload.id, upload.where) == length:
                return
            raise inconsistent(info.id, "its multipart upload is gone but the object is not whole")
        by_number = {int(part["PartNumber"]): part for part in parts}
        run: list[dict[str, Any]] = []
        for number, start in enumerate(range(0, length, upload.part_size), start=1):
            expected = min(upload.part_size, length - start)
            part = by_number.get(number)
            if part is None or int(part["Size"]) != expected:
                # Still in segments: the last bytes when the length was declared after they
                # arrived (deferred length), a part whose background upload failed or ran on
                # another instance, or a crash between commit and finish.
                part = await self.parts.upload_from_tail(upload, number, expected)
            run.append(part)
        await asyncio.gather(
            self.client.complete(upload, run), self.parts.tails(upload).delete(upload)
        )
        self.parts.forget(upload.id)

    async def terminate(self, info: UploadInfo) -> None:
        await self.parts.cancel(info.id)
        key = str(info.storage.get("key") or object_key(self.prefix, info.id))
        upload = S3Upload(
            info.id,
            key,
            None,
            1,
            str(info.storage.get("tails", DEFAULT_TAILS)),
            self._other_bucket(info),
        )
        calls = [
            self.client.call("delete_object", info.id, **upload.where, Key=key),
            self.client.call("delete_object", info.id, Key=info_key(self.prefix, info.id)),
        ]
        calls.append(self.parts.tails(upload).delete(upload))
        calls.append(self._drop_marker(info))
        multipart_id = info.storage.get("multipart_upload_id")
        if multipart_id:
            calls.append(
                self.client.call(
                    "abort_multipart_upload",
                    info.id,
                    missing=NO_UPLOAD,
                    **upload.where,
                    Key=key,
                    UploadId=multipart_id,
                )
            )
        await asyncio.gather(*calls)

    async def read(self, info: UploadInfo, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes [start, end) of the finished object, as one stream even when S3's body breaks
        off: each GetObject that ends early is continued by a ranged GetObject from the byte it
        reached (pinned to the first one's ETag), so the client never sees the break."""
        upload = S3Upload.from_info(info)
        position, etag, failures = start, None, 0
        while position < end:
            pinned: dict[str, str] = {"IfMatch": etag} if etag else {}
            response = await self.client.call(
                "get_object",
                info.id,
                missing=MISSING_KEY,
                **upload.where,
                Key=upload.key,
                Range=f"bytes={position}-{end - 1}",
                **pinned,
            )
            if response is None:
                raise inconsistent(info.id, "the finished upload's object is missing from S3")
            etag = etag or response.get("ETag")
            reached, cause = position, None
            try:
                async with response["Body"] as body:
                    async for chunk in body.iter_chunks(READ_SIZE):
                        position += len(chunk)
                        yield chunk
            except STREAM_ERRORS as exc:
                cause = exc
            if position >= end:
                return
            cause = cause or EOFError(f"the body ended at byte {position} of {end}")
            failures = 0 if position > reached else failures + 1
            if failures >= MAX_READ_RESUMES:
                raise storage_unavailable(
                    f"S3 GetObject of upload {info.id!r} broke off at byte {position} of {end} "
                    f"and {failures} continuations brought no byte ({error_detail(cause)})",
                    operation="S3 GetObject",
                ) from cause
            log.info(
                "S3 GetObject of upload %r broke off at byte %d of %d (%s); continuing from there",
                info.id,
                position,
                end,
                error_detail(cause),
            )
            await asyncio.sleep(READ_RESUME_PAUSE * failures)

    async def download_url(
        self, info: UploadInfo, content_type: str, disposition: str
    ) -> str | None:
        """With `--s3-download redirect`: a presigned GetObject URL of the finished object that
        answers with these headers (they are part of its signature); else None."""
        if self.download_expiry is None:
            return None
        upload = S3Upload.from_info(info)
        return await self.client.presigned_get(
            upload.key,
            self.download_expiry,
            **upload.where,
            ResponseContentType=content_type,
            ResponseContentDisposition=disposition,
            ResponseCacheControl="no-store",
        )

    async def list_upload_ids(self) -> AsyncIterator[str]:
        token: str | None = None
        while True:
            params: dict[str, Any] = {"Prefix": self.prefix, "Delimiter": "/"}
            if token:
                params["ContinuationToken"] = token
            response = await self.client.call("list_objects_v2", None, **params)
            for item in response.get("Contents", []):
                name = str(item["Key"])[len(self.prefix) :]
                if name.endswith(".info") and is_valid_upload_id(name[: -len(".info")]):
                    yield name[: -len(".info")]
            token = response.get("NextContinuationToken")
            if not response.get("IsTruncated") or not token:
                return

    async def list_unfinished_ids(self) -> AsyncIterator[str]:
        """The open multipart uploads under the prefix: every unfinished upload has one from
        its creation until finish() completes it (a zero-length upload never has one, and is
        finished at once), so finished uploads cost nothing here. One ListMultipartUploads per
        1,000 unfinished uploads."""
        seen: set[str] = set()
        params: dict[str, Any] = {"Prefix": self.prefix}
        while True:
            response = await self.client.call("list_multipart_uploads", None, **params)
            for item in response.get("Uploads", []):
                upload_id = str(item["Key"])[len(self.prefix) :]
                if is_valid_upload_id(upload_id) and upload_id not in seen:
                    seen.add(upload_id)
                    yield upload_id
            if not response.get("IsTruncated") or not response.get("NextKeyMarker"):
                return
            params["KeyMarker"] = response["NextKeyMarker"]
            params["UploadIdMarker"] = response.get("NextUploadIdMarker", "")

    async def forget_unfinished(self, upload_id: str) -> None:
        """Nothing to forget: S3 stops listing a multipart upload once it is completed, and a
        chosen key's marker goes when its upload finishes or is deleted (keys.py)."""

    async def _drop_marker(self, info: UploadInfo) -> None:
        marker = info.storage.get("marker_upload_id")
        if marker:
            await self.client.call(
                "abort_multipart_upload",
                info.id,
                missing=NO_UPLOAD,
                Key=object_key(self.prefix, info.id),
                UploadId=marker,
            )

    def _other_bucket(self, info: UploadInfo) -> str | None:
        """The bucket a pre-create hook placed the upload in, when not the store's."""
        bucket = info.storage.get("bucket")
        return None if bucket in (None, self.bucket) else str(bucket)

    async def concatenate(self, final: UploadInfo, partials: list[UploadInfo]) -> None:
        """Build the final's object from the partials' (concat.py)."""
        await concat.concatenate(self.client, self.parts, final, partials)
