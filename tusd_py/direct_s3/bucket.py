"""What the direct routes need of the S3 store: its client, bucket and key prefix, and URLs
presigned with the store's own credentials and addressing."""

from __future__ import annotations

from typing import Any, Protocol
from urllib.parse import quote

from tusd_py.stores.s3.client import S3Client


class S3StoreLike(Protocol):
    """The part of `S3Store` this package uses (nothing of its PATCH machinery)."""

    bucket: str
    prefix: str
    client: S3Client


class DirectBucket:
    def __init__(self, store: S3StoreLike, presign_expiry: float) -> None:
        self.store = store
        self.expiry = int(presign_expiry)
        self._bucket_url: str | None = None

    @property
    def name(self) -> str:
        return self.store.bucket

    @property
    def _s3(self) -> Any:
        s3 = self.store.client.s3
        if s3 is None:
            raise RuntimeError("S3Store.open() was not called")
        return s3

    async def part_url(self, key: str, multipart_id: str, number: int) -> str:
        """A URL the browser PUTs part `number` to; S3 answers its ETag."""
        url: str = await self._s3.generate_presigned_url(
            "upload_part",
            Params={
                "Bucket": self.name,
                "Key": key,
                "UploadId": multipart_id,
                "PartNumber": number,
            },
            ExpiresIn=self.expiry,
        )
        return url

    async def post_form(self, key: str, content_type: str, max_size: int) -> dict[str, Any]:
        """A presigned POST for one small object: S3 refuses a body over `max_size` bytes."""
        form: dict[str, Any] = await self._s3.generate_presigned_post(
            Bucket=self.name,
            Key=key,
            Fields={"Content-Type": content_type},
            Conditions=[
                {"Content-Type": content_type},
                ["content-length-range", 0, max_size],
            ],
            ExpiresIn=self.expiry,
        )
        return form

    async def bucket_url(self) -> str:
        """The bucket's URL with a trailing slash (Uppy appends the key to it)."""
        if self._bucket_url is None:
            # A POST form is made without a request: its URL is the bucket's, in the client's
            # own addressing style (path or virtual host).
            form = await self._s3.generate_presigned_post(Bucket=self.name, Key="k")
            self._bucket_url = str(form["url"]).rstrip("/") + "/"
        return self._bucket_url

    async def object_url(self, key: str) -> str:
        return await self.bucket_url() + quote(key)
