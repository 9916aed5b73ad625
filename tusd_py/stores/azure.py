"""Azure Blob Storage store: each upload is one block blob; PATCH bodies become staged blocks.

Configuration
    --azure-container   the container; created when the store opens if it does not exist yet
    --azure-endpoint    the blob service URL (default https://<account>.blob.core.windows.net;
                        Azurite: http://127.0.0.1:10000/devstoreaccount1)
    --azure-prefix      prepended to every blob name, verbatim (end it with "/" for a folder)
    --azure-blob-access-tier
                        hot, cool, cold or archive: set on the blob once the upload finishes
                        (default: the account's inferred tier)
Credentials, the first that is set: AZURE_STORAGE_CONNECTION_STRING (account key or SAS);
AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY; AZURE_STORAGE_ACCOUNT (or --azure-endpoint) alone,
with the default Azure credential chain of the optional `azure-identity` package (managed
identity, workload identity, the Azure CLI's login, ...), imported only then.

Layout in the container, per upload:
    <prefix><id>        a block blob: the bytes committed so far, as its committed block list
    <prefix><id>.info   the upload's info as JSON (the copy state is rebuilt from)
    <prefix>.index/unfinished/<id>
                        an empty blob while the upload is unfinished, put beside its blob at
                        creation and deleted when it finishes or is deleted: the expiry sweep
                        lists these (one List Blobs per 5,000) instead of reading every `.info`
    <prefix>.index/built
                        the index covers uploads stored before it existed: the first sweep
                        reads every `.info` once to build it

Implementation
    The committed block list is the commit. A block is named by where it sits: its id is the
    base64 of "<offset:020d>+<size:010d>", so every id has the same length (Azure requires it),
    the list of committed blocks says by itself which bytes the blob holds, and a retried PATCH
    stages the same ids again. No state of the store lives in memory between requests: each
    PATCH reads the committed list (Get Block List), gathers the body into blocks of the
    upload's block size (8 MiB, grown at creation so the declared length fits in 50,000 blocks;
    the last block of a PATCH may be short, as Azure has no minimum), stages each block while the
    next one arrives, and every 32 MiB or second, and at the end, commits all blocks so far with
    one Put Block List, then the offset. Put Block List is conditional on the blob's ETag from
    the Get Block List (or from the previous Put Block List), so a writer that lost its lock
    without noticing cannot replace a list another request committed: its commit fails with
    409 lock-lost. Blocks staged but never committed (a failed PATCH) are dropped by the next
    Put Block List, or by Azure after a week.

    Creation puts the blob, the index entry (at the same time) and the `.info`. Requests per
    PATCH (the state store's own writes not counted): one Get Block List, one Put Block per
    block, one Put Block List per commit. A PATCH whose offset falls inside a block (possible
    only after a commit that failed after its Put Block List) also downloads that block's head
    and stages it again with the new bytes. finish() deletes the index entry, and sends Set
    Blob Tier when --azure-blob-access-tier is set. A zero-length upload is an empty blob,
    written at creation like every upload's blob.

    Concatenation fills the final blob with blocks copied from the partials' blobs by Azure
    itself (Put Block From URL, ranges of up to 100 MiB, the source authorised by a short SAS
    signed with the account key or by the credential's bearer token), then one Put Block List.
    Azurite does not implement Put Block From URL (it answers APINotImplemented): after that
    answer the store copies through itself instead, one block-size range at a time (download the
    range, Put Block), a few ranges at once. Block ids follow offsets in the final blob either
    way, so a retry writes the same blocks.

Considerations
    A blob holds at most 50,000 blocks and every PATCH ends a block, so many small PATCHes cap
    the size: a client sending 1 MiB chunks can upload about 48 GiB. A PATCH past the limit is
    refused with 413; send larger chunks (or one PATCH). Blocks are held in memory while staged
    (at most two blocks per PATCH, 8 MiB each by default); block sizes stop growing at 64 MiB,
    so this store accepts uploads up to 64 MiB x 50,000 (3.05 TiB), less than Azure's 190.7 TiB.
    Azure's own retries (three, with short backoff) run inside each request; a service still
    failing after them is answered 503 with Retry-After, and the upload resumes from its last
    committed offset. Archive-tier blobs cannot be read until rehydrated: with
    --azure-blob-access-tier archive, GET of a finished upload fails until then.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib
import importlib.util
import io
import logging
import os
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import aiohttp
from azure.core import MatchConditions
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobBlock, BlobSasPermissions, ContentSettings, generate_blob_sas
from azure.storage.blob.aio import BlobClient, BlobServiceClient, ContainerClient, ExponentialRetry

from tusd_py.errors import TusError, lock_lost, storage_unavailable, upload_exists
from tusd_py.ids import is_valid_upload_id
from tusd_py.info import UploadInfo
from tusd_py.stores.base import Commit, DataStore

if TYPE_CHECKING:
    from tusd_py.config import Config

log = logging.getLogger("tusd_py.stores.azure")

MIB = 1024**2
BLOCK_SIZE = 8 * MIB
MAX_BLOCK_SIZE = 64 * MIB  # this store's cap (Azure allows 4000 MiB): blocks are held in memory
MAX_BLOCKS = 50_000  # committed blocks per blob (Azure)
MAX_BLOB_SIZE = MAX_BLOCKS * MAX_BLOCK_SIZE
COPY_SIZE = 100 * MIB  # one Put Block From URL (the limit of older service versions)
COPY_CONCURRENCY = 4
COMMIT_SIZE = 32 * MIB
COMMIT_INTERVAL = 1.0
READ_SIZE = 4 * MIB
ACCESS_TIERS = {"hot": "Hot", "cool": "Cool", "cold": "Cold", "archive": "Archive"}
_TOKEN_SCOPE = "https://storage.azure.com/.default"
_ERRORS = (AzureError, aiohttp.ClientError)


def choose_block_size(length: int | None, configured: int, max_size: int | None = None) -> int:
    """The largest block of a new upload: at least `configured`, grown (in whole MiB, up to
    MAX_BLOCK_SIZE) so that the declared length, or `max_size` when it is deferred, fits in
    MAX_BLOCKS full blocks."""
    target = length if length is not None else (max_size or 0)
    needed = -(-target // MAX_BLOCKS)
    if needed <= configured:
        return configured
    return min(-(-needed // MIB) * MIB, MAX_BLOCK_SIZE)


@dataclass(frozen=True)
class Block:
    """A block of a blob, named by the bytes it holds: [offset, offset + size)."""

    offset: int
    size: int

    @property
    def end(self) -> int:
        return self.offset + self.size

    @property
    def id(self) -> str:
        return base64.b64encode(f"{self.offset:020d}+{self.size:010d}".encode()).decode()

    @classmethod
    def parse(cls, block_id: str) -> Block:
        offset, size = base64.b64decode(block_id, validate=True).decode().split("+")
        return cls(int(offset), int(size))


def _detail(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else type(exc).__name__
    if isinstance(exc, HttpResponseError) and exc.status_code:
        code = getattr(exc, "error_code", None) or ""
        return f"HTTP {exc.status_code} {code}: {first}".replace("  ", " ")
    return first


def _body(data: bytes) -> io.BytesIO:
    """A request body aiohttp sends in pieces (raw bytes over 1 MiB make it warn that it may
    block the loop); seekable, so the SDK rewinds it for a retry."""
    return io.BytesIO(data)


def _inconsistent(upload_id: str, what: str) -> TusError:
    return TusError(500, "storage-inconsistent", f"upload {upload_id!r}: {what}")


@contextlib.contextmanager
def _azure_errors(operation: str, upload_id: str | None) -> Iterator[None]:
    """Map what the Azure SDK raises (after its own retries) to a `TusError`."""
    try:
        yield
    except ResourceModifiedError as exc:
        # Only conditional writes fail like this: another request changed the blob.
        if upload_id is None:
            raise storage_unavailable(
                f"Azure {operation} failed: {_detail(exc)}", operation=f"Azure {operation}"
            ) from exc
        raise lock_lost(upload_id) from exc
    except _ERRORS as exc:
        subject = f" for upload {upload_id!r}" if upload_id else ""
        problem = _misconfiguration(exc)
        if problem is not None:
            raise TusError(
                500,
                "storage-misconfigured",
                f"Azure {operation}{subject} failed: {problem} ({_detail(exc)}); the server's "
                "storage is misconfigured, which retrying will not fix: tell its operator",
                operation=f"Azure {operation}",
            ) from exc
        what = f"Azure {operation} failed ({_detail(exc)})"
        if upload_id:
            what = (
                f"Azure {operation}{subject} failed even after retries ({_detail(exc)}); "
                "the upload is intact up to its current offset, resume it shortly"
            )
        raise storage_unavailable(what, operation=f"Azure {operation}") from exc


# Error codes (x-ms-error-code) that only a configuration change fixes. A wrong key is
# AuthenticationFailed on Azure and AuthorizationFailure on Azurite: one message for both.
_REFUSED = frozenset(
    {
        "AuthenticationFailed",
        "InvalidAuthenticationInfo",
        "AuthorizationFailure",
        "AuthorizationPermissionMismatch",
        "AuthorizationResourceTypeMismatch",
    }
)


def _misconfiguration(exc: BaseException) -> str | None:
    """What is wrong with the configuration when `exc` comes from it, else None."""
    code = getattr(exc, "error_code", None)
    if code == "ContainerNotFound":
        return "the container does not exist (or was deleted while the server ran)"
    if code in _REFUSED:
        return (
            "Azure refused the credentials or what they may do: check "
            "AZURE_STORAGE_CONNECTION_STRING (or AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY) "
            "and their permissions"
        )
    return None


def _parse_connection_string(text: str) -> dict[str, str]:
    fields = (part.split("=", 1) for part in text.split(";") if "=" in part)
    return {name.strip(): value.strip() for name, value in fields}


def _default_credential() -> Any:
    # Imported only when used: azure-identity is optional (credentials_problem says so).
    identity = importlib.import_module("azure.identity.aio")
    return identity.DefaultAzureCredential()


class _BlockWriter:
    """One PATCH: gathers the body into blocks, stages each while the next arrives, and commits
    the blocks staged so far with a Put Block List conditional on the blob's ETag."""

    def __init__(
        self,
        blob: BlobClient,
        info: UploadInfo,
        commit: Commit,
        committed: list[Block],
        etag: str,
        block_size: int,
    ) -> None:
        self.blob = blob
        self.info = info
        self._commit = commit
        self.blocks = committed  # the committed blocks below the PATCH's first byte, then staged
        self.etag = etag
        self.block_size = block_size
        self.committed = info.offset
        self.staged_upto = info.offset
        self.pending: asyncio.Task[None] | None = None
        self.pending_commits = False  # the pending task is committing (not only staging)
        self.abandoned = False  # the body failed: commit nothing more
        self.last_commit = asyncio.get_running_loop().time()

    async def run(self, chunks: AsyncIterable[bytes], head: bytes, head_start: int) -> int:
        """Write `head` (already stored bytes from `head_start` to the PATCH's offset, re-staged
        when the PATCH starts inside a block) and the body; return the new offset."""
        pieces: list[bytes | memoryview] = [head] if head else []
        size, block_start, received = len(head), head_start, self.info.offset
        try:
            async for chunk in chunks:
                if not chunk:
                    continue
                pieces.append(chunk)
                size += len(chunk)
                received += len(chunk)
                while size >= self.block_size:
                    data, size = _cut(pieces, self.block_size), size - self.block_size
                    await self._stage(Block(block_start, len(data)), data)
                    block_start += len(data)
        except BaseException:
            await self._abandon()
            raise
        if received == self.info.offset:
            return self.info.offset  # no bytes: nothing to stage or commit
        try:
            if size:
                await self._stage(Block(block_start, size), b"".join(pieces))
            await self._settle()
            if self.staged_upto > self.committed:
                await self._put_block_list()
        except BaseException:
            await self._abandon()
            raise
        return self.staged_upto

    async def _stage(self, block: Block, data: bytes) -> None:
        await self._settle()  # one block in flight while the next arrives; raises its failure
        if len(self.blocks) >= MAX_BLOCKS:
            raise TusError(
                413,
                "upload-too-large",
                f"upload {self.info.id!r} has {MAX_BLOCKS} blocks, Azure's limit for one blob, "
                f"at offset {block.offset}: upload in larger chunks",
            )
        loop = asyncio.get_running_loop()
        due = (
            self.staged_upto + block.size - self.committed >= COMMIT_SIZE
            or loop.time() - self.last_commit >= COMMIT_INTERVAL
        )
        self.pending = asyncio.create_task(self._stage_and_commit(block, data, due))

    async def _stage_and_commit(self, block: Block, data: bytes, commit: bool) -> None:
        with _azure_errors("Put Block", self.info.id):
            await self.blob.stage_block(block.id, _body(data), length=len(data))
        self.blocks.append(block)
        self.staged_upto = block.end
        if commit and not self.abandoned:
            self.pending_commits = True
            await self._put_block_list()

    async def _put_block_list(self) -> None:
        with _azure_errors("Put Block List", self.info.id):
            result = await self.blob.commit_block_list(
                [BlobBlock(block.id) for block in self.blocks],
                etag=self.etag,
                match_condition=MatchConditions.IfNotModified,
            )
        self.etag = str(result["etag"])
        self.last_commit = asyncio.get_running_loop().time()
        upto = self.staged_upto
        await self._commit(upto)
        self.committed = upto

    async def _settle(self) -> None:
        task = self.pending
        if task is None:
            return
        try:
            await task
        finally:
            if task.done():  # not when this request was cancelled meanwhile: _abandon sees it
                self.pending, self.pending_commits = None, False

    async def _abandon(self) -> None:
        self.abandoned = True
        task, self.pending = self.pending, None
        if task is None:
            return
        if not self.pending_commits:
            task.cancel()  # only staging: its block will never be committed
        with contextlib.suppress(BaseException):
            await task  # a commit already under way finishes (it covers bytes that arrived)


def _cut(pieces: list[bytes | memoryview], size: int) -> bytes:
    """Take the first `size` bytes out of `pieces` (which hold at least that many) as one block."""
    taken, total = 0, 0
    while total + len(pieces[taken]) <= size:
        total += len(pieces[taken])
        taken += 1
        if total == size:
            break
    block = pieces[:taken]
    del pieces[:taken]
    if total < size:
        first = memoryview(pieces[0])
        block.append(first[: size - total])
        pieces[0] = first[size - total :]
    return b"".join(block)


class AzureStore(DataStore):
    """Uploads as block blobs in one Azure Blob Storage container, via azure-storage-blob."""

    storage_type = "azurestore"
    shared_medium = True

    def __init__(
        self,
        container: str,
        *,
        endpoint: str | None = None,
        prefix: str = "",
        access_tier: str | None = None,
        connection_string: str | None = None,
        account: str | None = None,
        account_key: str | None = None,
        block_size: int = BLOCK_SIZE,
        max_size: int | None = None,
        retries: int = 3,
        connect_timeout: int = 10,
        read_timeout: int = 60,
    ) -> None:
        if access_tier is not None and access_tier.lower() not in ACCESS_TIERS:
            choices = ", ".join(ACCESS_TIERS)
            raise ValueError(
                f"azure blob access tier must be one of {choices}, not {access_tier!r}"
            )
        if not 0 < block_size <= MAX_BLOCK_SIZE:
            raise ValueError(f"block_size must be between 1 byte and 64 MiB, got {block_size}")
        self.container = container
        self.endpoint = endpoint
        self.prefix = prefix
        self._unfinished_prefix = prefix + ".index/unfinished/"
        self.access_tier = None if access_tier is None else ACCESS_TIERS[access_tier.lower()]
        self.block_size = block_size
        self.max_size = max_size
        self._connection_string = connection_string
        self._account = account
        self._account_key = account_key
        self._client_options: dict[str, Any] = {
            "retry_policy": ExponentialRetry(
                initial_backoff=1, increment_base=2, retry_total=retries, random_jitter_range=1
            ),
            "connection_timeout": connect_timeout,
            "read_timeout": read_timeout,
            # Downloads in pieces of this size: the SDK's first GET would otherwise be 32 MiB.
            "max_single_get_size": READ_SIZE,
            "max_chunk_get_size": READ_SIZE,
        }
        self._service: BlobServiceClient | None = None
        self._container: ContainerClient | None = None
        self._sas: str | None = None  # from a SAS connection string
        self._token_credential: Any = None  # the default chain, when no key is given
        self._copy_from_url = True  # until the service says it cannot (Azurite)

    @classmethod
    def from_config(cls, config: Config) -> AzureStore:
        assert config.azure_container
        store = cls(
            config.azure_container,
            endpoint=config.azure_endpoint,
            prefix=config.azure_prefix,
            access_tier=config.azure_blob_access_tier,
            connection_string=os.environ.get("AZURE_STORAGE_CONNECTION_STRING") or None,
            account=os.environ.get("AZURE_STORAGE_ACCOUNT") or None,
            account_key=os.environ.get("AZURE_STORAGE_KEY") or None,
            max_size=config.max_size or None,
        )
        problem = store.credentials_problem()
        if problem:  # a configuration error, refused before anything listens
            raise ValueError(problem)
        return store

    def describe(self, info: UploadInfo) -> dict[str, str]:
        key = str(info.storage.get("key") or self._key(info.id))
        return {"Type": self.storage_type, "Container": self.container, "Key": key}

    # -- clients --------------------------------------------------------------------------------

    def credentials_problem(self) -> str | None:
        """Why no client can be built from the settings given, or None. Checks only what is
        there, not whether Azure accepts it (that is /ready's and the start-up warning's job)."""
        if self._connection_string:
            return None
        if not (self.endpoint or self._account):
            return (
                "no Azure account: set AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT "
                "(with AZURE_STORAGE_KEY, or the default Azure credential chain), or "
                "--azure-endpoint"
            )
        if self._account_key and not self._account:
            return "AZURE_STORAGE_KEY needs AZURE_STORAGE_ACCOUNT"
        if not self._account_key and importlib.util.find_spec("azure.identity") is None:
            return (
                "no Azure credentials: set AZURE_STORAGE_CONNECTION_STRING, or "
                "AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY, or install azure-identity for the "
                "default credential chain"
            )
        return None

    def _service_client(self) -> BlobServiceClient:
        problem = self.credentials_problem()
        if problem:
            raise ValueError(problem)
        options = self._client_options
        if self._connection_string:
            fields = _parse_connection_string(self._connection_string)
            self._account = fields.get("AccountName", self._account)
            self._account_key = fields.get("AccountKey", self._account_key)
            self._sas = fields.get("SharedAccessSignature")
            if self.endpoint is None:
                return BlobServiceClient.from_connection_string(self._connection_string, **options)
            credential: Any = self._sas
            if self._account and self._account_key:
                credential = AzureNamedKeyCredential(self._account, self._account_key)
            return BlobServiceClient(self.endpoint, credential=credential, **options)
        url = self.endpoint or f"https://{self._account}.blob.core.windows.net"
        if self._account_key and self._account:
            credential = AzureNamedKeyCredential(self._account, self._account_key)
        else:
            self._token_credential = credential = _default_credential()
        return BlobServiceClient(url, credential=credential, **options)

    async def open(self) -> None:
        self._service = self._service_client()
        self._container = self._service.get_container_client(self.container)
        try:
            try:
                # One attempt: retrying an unreachable service would only delay start-up.
                await self._container.get_container_properties(retry_total=0)
            except ResourceNotFoundError:
                with contextlib.suppress(ResourceExistsError):  # another instance was quicker
                    await self._container.create_container()
            await self._index_if_empty()
        except _ERRORS as exc:
            # Not fatal: the service may be back soon. /ready reports it (and the CLI's start-up
            # warning), so this is no second warning.
            log.info("could not check or create container %s: %s", self.container, _detail(exc))

    async def close(self) -> None:
        if self._service is not None:
            await self._service.close()
        if self._token_credential is not None:
            await self._token_credential.close()
        self._service = self._container = self._token_credential = None
        # aiohttp closes its sockets in a callback of the next loop iteration; give it that one,
        # or a loop ending right after close() collects them unclosed (ResourceWarning).
        await asyncio.sleep(0)

    async def ready(self) -> None:
        with _azure_errors("Get Container Properties", None):
            # Readiness is about now: a retried answer would come after the probe's deadline.
            await self._containers().get_container_properties(retry_total=0)

    def _containers(self) -> ContainerClient:
        if self._container is None:
            raise RuntimeError("AzureStore.open() was not called")
        return self._container

    def _key(self, upload_id: str) -> str:
        # The protocol layer validates ids; this is the last line of defence for blob names.
        if not is_valid_upload_id(upload_id):
            raise ValueError(f"invalid upload id {upload_id!r}")
        return self.prefix + upload_id

    def _blob(self, info: UploadInfo) -> BlobClient:
        return self._containers().get_blob_client(
            str(info.storage.get("key") or self._key(info.id))
        )

    def _info_blob(self, upload_id: str) -> BlobClient:
        return self._containers().get_blob_client(self._key(upload_id) + ".info")

    def _block_size(self, info: UploadInfo) -> int:
        return int(info.storage.get("block_size", self.block_size))

    async def _committed_blocks(self, blob: BlobClient, upload_id: str) -> tuple[list[Block], str]:
        """The blob's committed blocks in order, checked to be contiguous from 0, and its ETag."""
        headers: dict[str, Any] = {}

        def keep_headers(response: Any, deserialized: Any, response_headers: Any) -> Any:
            headers.update(response_headers)
            return deserialized

        with _azure_errors("Get Block List", upload_id):
            try:
                committed, _ = await blob.get_block_list("committed", cls=keep_headers)
            except ResourceNotFoundError:
                raise TusError(
                    404, "upload-not-found", f"the data of {upload_id!r} is gone"
                ) from None
        blocks, offset = [], 0
        for item in committed:
            try:
                block = Block.parse(item.id)
            except ValueError:
                raise _inconsistent(
                    upload_id, f"its blob has a foreign block {item.id!r}"
                ) from None
            if block.offset != offset or block.size != item.size:
                raise _inconsistent(upload_id, f"its blob's block list breaks at byte {offset}")
            blocks.append(block)
            offset = block.end
        return blocks, str(headers["ETag"])

    # -- DataStore ------------------------------------------------------------------------------

    async def create(self, info: UploadInfo) -> None:
        if info.length is not None and info.length > MAX_BLOB_SIZE:
            raise TusError(
                413,
                "upload-too-large",
                f"Upload-Length {info.length} is more than this Azure store holds "
                f"({MAX_BLOB_SIZE}: {MAX_BLOCKS} blocks of 64 MiB)",
            )
        key = self._key(info.id)
        info.storage = {
            "type": "azure",
            "container": self.container,
            "key": key,
            "block_size": choose_block_size(info.length, self.block_size, self.max_size),
        }
        blob = self._containers().get_blob_client(key)
        with _azure_errors("Put Blob", info.id):
            try:
                # The index entry may outlive a failed creation, or name an existing finished
                # upload: the sweep drops such entries.
                await asyncio.gather(
                    blob.upload_blob(b"", overwrite=False),
                    self._unfinished_entry(info.id).upload_blob(b"", overwrite=True),
                )
            except ResourceExistsError:
                raise upload_exists(info.id) from None
        await self.save_info(info)

    def _unfinished_entry(self, upload_id: str) -> BlobClient:
        self._key(upload_id)  # validates the id
        return self._containers().get_blob_client(self._unfinished_prefix + upload_id)

    async def _delete(self, blob: BlobClient, upload_id: str) -> None:
        with _azure_errors("Delete Blob", upload_id), contextlib.suppress(ResourceNotFoundError):
            await blob.delete_blob()

    async def declare_length(self, info: UploadInfo) -> None:
        most = min(MAX_BLOCKS * self._block_size(info), MAX_BLOB_SIZE)
        if info.length is not None and info.length > most:
            raise TusError(
                413,
                "upload-too-large",
                f"Upload-Length {info.length} does not fit in {MAX_BLOCKS} blocks of "
                f"{self._block_size(info)} bytes",
            )

    async def save_info(self, info: UploadInfo) -> None:
        with _azure_errors("Put Blob", info.id):
            await self._info_blob(info.id).upload_blob(
                info.to_json().encode(),
                overwrite=True,
                content_settings=ContentSettings(content_type="application/json"),
            )

    async def load_info(self, upload_id: str) -> UploadInfo | None:
        with _azure_errors("Get Blob", upload_id):
            try:
                download = await self._info_blob(upload_id).download_blob()
                data = await download.readall()
            except ResourceNotFoundError:
                return None
        return UploadInfo.from_json(data)

    async def stored_offset(self, info: UploadInfo) -> int:
        with _azure_errors("Get Blob Properties", info.id):
            try:
                size = int((await self._blob(info).get_blob_properties()).size)
            except ResourceNotFoundError:
                return 0
        return size if info.length is None else min(size, info.length)

    async def last_write(self, info: UploadInfo) -> float | None:
        # Each commit is a Put Block List, which moves the blob's Last-Modified.
        with _azure_errors("Get Blob Properties", info.id):
            try:
                return (await self._blob(info).get_blob_properties()).last_modified.timestamp()
            except ResourceNotFoundError:
                return None

    async def write(self, info: UploadInfo, chunks: AsyncIterable[bytes], commit: Commit) -> int:
        start, blob = info.offset, self._blob(info)
        blocks, etag = await self._committed_blocks(blob, info.id)
        stored = blocks[-1].end if blocks else 0
        if stored < start:
            raise _inconsistent(
                info.id,
                f"it is committed up to byte {start} but its blob holds only {stored} bytes; "
                "refusing to fill the gap",
            )
        kept = [block for block in blocks if block.end <= start]
        head_start = kept[-1].end if kept else 0
        head = b""
        if head_start < start:
            # A commit failed after its Put Block List: the blob goes on past the committed offset
            # inside a block. That block's bytes below the offset are staged again.
            head = await self._download(blob, info.id, head_start, start)
        writer = _BlockWriter(blob, info, commit, kept, etag, self._block_size(info))
        return await writer.run(chunks, head, head_start)

    async def finish(self, info: UploadInfo) -> None:
        if self.access_tier is not None:
            with _azure_errors("Set Blob Tier", info.id):
                await self._blob(info).set_standard_blob_tier(self.access_tier)
        await self._delete(self._unfinished_entry(info.id), info.id)

    async def terminate(self, info: UploadInfo) -> None:
        for blob in (self._blob(info), self._info_blob(info.id), self._unfinished_entry(info.id)):
            await self._delete(blob, info.id)

    def _built(self) -> BlobClient:
        return self._containers().get_blob_client(self.prefix + ".index/built")

    async def _index_if_empty(self) -> None:
        """Nothing stored under the prefix yet: the index is complete as it is (empty)."""
        async for _ in self._containers().list_blob_names(name_starts_with=self.prefix):
            return
        await self._built().upload_blob(b"", overwrite=True)

    async def list_unfinished_ids(self) -> AsyncIterator[str]:
        built = self._built()
        with _azure_errors("Get Blob Properties", None):
            try:
                await built.get_blob_properties()
            except ResourceNotFoundError:
                await self._build_index()
                await built.upload_blob(b"", overwrite=True)
        with _azure_errors("List Blobs", None):
            names = self._containers().list_blob_names(name_starts_with=self._unfinished_prefix)
            async for name in names:
                upload_id = str(name)[len(self._unfinished_prefix) :]
                if is_valid_upload_id(upload_id):
                    yield upload_id

    async def _build_index(self) -> None:
        """Enter the unfinished uploads stored before the index existed (several instances
        may do it at once; an entry for an upload that finished meanwhile is dropped later)."""
        async for upload_id in self.list_upload_ids():
            info = await self.load_info(upload_id)
            if info is not None and not info.finished:
                with _azure_errors("Put Blob", upload_id):
                    await self._unfinished_entry(upload_id).upload_blob(b"", overwrite=True)

    async def forget_unfinished(self, upload_id: str) -> None:
        await self._delete(self._unfinished_entry(upload_id), upload_id)

    async def read(self, info: UploadInfo, start: int, end: int) -> AsyncIterator[bytes]:
        if end <= start:
            return
        with _azure_errors("Get Blob", info.id):
            try:
                download = await self._blob(info).download_blob(offset=start, length=end - start)
            except ResourceNotFoundError:
                raise _inconsistent(info.id, "the finished upload's blob is missing") from None
            async for chunk in download.chunks():
                yield chunk

    async def list_upload_ids(self) -> AsyncIterator[str]:
        with _azure_errors("List Blobs", None):
            async for item in self._containers().list_blobs(name_starts_with=self.prefix):
                name = str(item.name)[len(self.prefix) :]
                if name.endswith(".info") and is_valid_upload_id(name[: -len(".info")]):
                    yield name[: -len(".info")]

    async def _download(self, blob: BlobClient, upload_id: str, start: int, end: int) -> bytes:
        with _azure_errors("Get Blob", upload_id):
            try:
                download = await blob.download_blob(offset=start, length=end - start)
                data = await download.readall()
            except ResourceNotFoundError:
                raise _inconsistent(upload_id, "its blob is missing") from None
        if len(data) != end - start:
            raise _inconsistent(upload_id, f"its blob is shorter than byte {end}")
        return data

    # -- concatenation --------------------------------------------------------------------------

    async def concatenate(self, final: UploadInfo, partials: list[UploadInfo]) -> None:
        """Fill the final's blob with blocks copied from the partials' blobs, then commit them.

        Azure copies the bytes itself (Put Block From URL) unless it has said it cannot, and then
        the store copies them through memory (see the module doc). Safe to run again: the block
        ids follow the final's offsets, and the one Put Block List at the end replaces the list.
        """
        blob = self._blob(final)
        plan = None
        if self._copy_from_url:
            plan = self._copy_plan(final.id, partials, COPY_SIZE)
            try:
                await self._copy_blocks(blob, final.id, plan, server_side=True)
            except _NotImplemented:
                log.info("Put Block From URL is not implemented here: copying through the store")
                self._copy_from_url, plan = False, None
        if plan is None:
            plan = self._copy_plan(final.id, partials, self._block_size(final))
            await self._copy_blocks(blob, final.id, plan, server_side=False)
        with _azure_errors("Put Block List", final.id):
            await blob.commit_block_list([BlobBlock(block.id) for block, _, _ in plan])

    def _copy_plan(
        self, final_id: str, partials: list[UploadInfo], size: int
    ) -> list[tuple[Block, UploadInfo, int]]:
        """Each block of the final: where it goes, and the partial and offset it comes from."""
        plan, offset = [], 0
        for partial in partials:
            length = partial.length or 0
            for source in range(0, length, size):
                block = Block(offset, min(size, length - source))
                plan.append((block, partial, source))
                offset = block.end
        if len(plan) > MAX_BLOCKS:
            raise TusError(
                400,
                "too-many-parts",
                f"the partials of {final_id!r} need {len(plan)} blocks; Azure allows {MAX_BLOCKS}",
            )
        return plan

    async def _copy_blocks(
        self,
        blob: BlobClient,
        final_id: str,
        plan: list[tuple[Block, UploadInfo, int]],
        *,
        server_side: bool,
    ) -> None:
        limit = asyncio.Semaphore(COPY_CONCURRENCY)

        async def copy(block: Block, partial: UploadInfo, source: int) -> None:
            async with limit:
                if server_side:
                    await self._copy_from_url_block(blob, final_id, block, partial, source)
                    return
                end = source + block.size
                data = await self._download(self._blob(partial), partial.id, source, end)
                with _azure_errors("Put Block", final_id):
                    await blob.stage_block(block.id, _body(data), length=len(data))

        tasks = [asyncio.create_task(copy(*step)) for step in plan]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def _copy_from_url_block(
        self, blob: BlobClient, final_id: str, block: Block, partial: UploadInfo, source: int
    ) -> None:
        source_blob = self._blob(partial)
        url, authorization = source_blob.url, None
        if self._account and self._account_key:
            sas = generate_blob_sas(
                self._account,
                self.container,
                source_blob.blob_name,
                account_key=self._account_key,
                permission=BlobSasPermissions(read=True),
                expiry=datetime.now(UTC) + timedelta(hours=1),
            )
            url = f"{url}?{sas}"
        elif self._sas:
            url = f"{url}?{self._sas.lstrip('?')}"
        elif self._token_credential is not None:
            token = await self._token_credential.get_token(_TOKEN_SCOPE)
            authorization = f"Bearer {token.token}"
        with _azure_errors("Put Block From URL", final_id):
            try:
                await blob.stage_block_from_url(
                    block.id,
                    url,
                    source_offset=source,
                    source_length=block.size,
                    source_authorization=authorization,
                )
            except HttpResponseError as exc:
                code = getattr(exc, "error_code", None)
                if code == "APINotImplemented" or exc.status_code == 501:
                    raise _NotImplemented from exc
                raise


class _NotImplemented(Exception):
    """The service does not implement Put Block From URL (Azurite)."""
