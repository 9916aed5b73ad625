"""Concatenation: a final upload's object built from finished partials' objects in S3."""

from __future__ import annotations

from typing import Any

from tusd_py.errors import TusError
from tusd_py.info import UploadInfo
from tusd_py.stores.s3.client import CHECKSUM_KEY, S3Client
from tusd_py.stores.s3.errors import MISSING_KEY, inconsistent
from tusd_py.stores.s3.limits import MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE
from tusd_py.stores.s3.part_uploads import PartUploads
from tusd_py.stores.s3.parts import PartBuffer, append_object
from tusd_py.stores.s3.upload import S3Upload


async def concatenate(
    client: S3Client, part_uploads: PartUploads, final: UploadInfo, partials: list[UploadInfo]
) -> None:
    """Build the final's object from the partials' objects as one multipart upload.

    A stretch of at least 5 MiB of one partial becomes UploadPartCopy parts: S3 copies the
    bytes itself (ranges of at most 5 GiB). Shorter stretches cannot be a part on their own,
    so they are read back and gathered, with neighbouring bytes, into uploaded parts of at
    least 5 MiB; only the last part may be shorter. The multipart upload is completed here,
    so finish() then finds the object whole. Part numbers depend only on the partials, so a
    retry after a failure overwrites the same parts.
    """
    upload = S3Upload.from_info(final)
    if upload.multipart_id is None:
        return  # zero-length: create() wrote the empty object
    if await client.list_parts(upload) is None:
        if await client.object_size(upload.key, upload.id, upload.where) == final.length:
            return  # completed by an earlier attempt whose response was lost
        raise inconsistent(final.id, "its multipart upload is gone but the object is not whole")
    parts: list[dict[str, Any]] = []
    pending = part_uploads.new_buffer(upload)
    try:
        for partial in partials:
            size = partial.length or 0
            position = 0
            if 0 < pending.size < MIN_PART_SIZE:
                # Top the gathered bytes up to a valid part from this partial's head.
                position = min(size, MIN_PART_SIZE - pending.size)
                await _read_into(client, partial, 0, position, pending)
            if pending.size >= MIN_PART_SIZE:
                parts.append(await _upload_gathered(client, upload, len(parts) + 1, pending))
                pending = part_uploads.new_buffer(upload)
            if size - position >= MIN_PART_SIZE:
                for start, end in _copy_ranges(position, size):
                    parts.append(
                        await _copy_part(client, upload, len(parts) + 1, partial, start, end)
                    )
            elif position < size:
                await _read_into(client, partial, position, size, pending)
        if pending.size:
            parts.append(await _upload_gathered(client, upload, len(parts) + 1, pending))
    finally:
        pending.release()
    max_parts = int(final.storage.get("max_parts", MAX_PARTS))
    if len(parts) > max_parts:
        raise TusError(
            400,
            "too-many-parts",
            f"the partials of {final.id!r} need {len(parts)} S3 parts; this store may use "
            f"{max_parts} (--s3-max-parts)",
        )
    await client.complete(upload, parts)


async def _read_into(
    client: S3Client, partial: UploadInfo, start: int, end: int, buffer: PartBuffer
) -> None:
    source = S3Upload.from_info(partial)
    response = await client.call(
        "get_object",
        partial.id,
        missing=MISSING_KEY,
        **source.where,
        Key=source.key,
        Range=f"bytes={start}-{end - 1}",
    )
    if response is None:
        raise inconsistent(partial.id, "the finished partial upload's object is missing")
    await append_object(response, buffer, partial.id)


async def _upload_gathered(
    client: S3Client, upload: S3Upload, number: int, buffer: PartBuffer
) -> dict[str, Any]:
    try:
        return await client.upload_part(upload, number, buffer)
    finally:
        buffer.release()


async def _copy_part(
    client: S3Client, upload: S3Upload, number: int, partial: UploadInfo, start: int, end: int
) -> dict[str, Any]:
    source = S3Upload.from_info(partial)
    response = await client.call(
        "upload_part_copy",
        upload.id,
        **upload.where,
        Key=upload.key,
        UploadId=upload.multipart_id,
        PartNumber=number,
        CopySource={"Bucket": source.bucket or client.bucket, "Key": source.key},
        CopySourceRange=f"bytes={start}-{end - 1}",
    )
    result = response["CopyPartResult"]
    part = {"PartNumber": number, "ETag": str(result["ETag"]), "Size": end - start}
    # S3 computes the copied range's checksum itself when the final's multipart upload has one.
    if result.get(CHECKSUM_KEY):
        part[CHECKSUM_KEY] = result[CHECKSUM_KEY]
    return part


def _copy_ranges(start: int, end: int) -> list[tuple[int, int]]:
    """[start, end) cut into equal UploadPartCopy ranges of at most 5 GiB (each >= 5 MiB)."""
    count = -(-(end - start) // MAX_PART_SIZE)
    step = -(-(end - start) // count)
    return [(s, min(s + step, end)) for s in range(start, end, step)]
