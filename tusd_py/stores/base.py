"""The data-store interface: where the bytes of an upload live.

A store owns the bytes and a durable copy of each upload's info (an `.info` file or object), so
that upload state lost elsewhere (Redis) can be rebuilt from storage. `DataStore` is the core every
store has; what a store can do beyond it is an optional Protocol below (tusd's composer
interfaces): a store that lacks the method cannot claim the extension, and the type checker holds
callers to asking first (`isinstance(store, Concatenater)`). `capabilities(store)` turns that into
the set the protocol layer computes `Tus-Extension` from.

A new store is one module with one `DataStore` subclass: it builds itself from the config
(`from_config`), describes where an upload lives to hooks (`describe`), and passes the store
contract suite (tests/stores/). `app.py` picks it from its store table; nothing else knows it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from enum import StrEnum
from typing import TYPE_CHECKING, ClassVar, Protocol, Self, runtime_checkable

from tusd_py.info import UploadInfo

if TYPE_CHECKING:
    from tusd_py.config import Config

# Called by a store once the bytes below `offset` are durable; may raise (e.g. lock lost), and
# then the store stops writing and commits nothing more.
Commit = Callable[[int], Awaitable[None]]


class Capability(StrEnum):
    TERMINATION = "termination"
    CONCATENATION = "concatenation"
    DEFER_LENGTH = "creation-defer-length"
    DOWNLOAD = "download"


class DataStore(ABC):
    """Core operations every store has."""

    #: The `Storage.Type` hooks see, as tusd names it ("filestore", "s3store", "azurestore").
    storage_type: ClassVar[str]
    #: True when the bytes live in a service many instances can share (a bucket, a container):
    #: without Redis, state and locks stay in one process, and the CLI warns about that.
    shared_medium: ClassVar[bool] = False
    #: The `ChangeFileInfo.Storage` fields a pre-create hook may set for this store (tusd's
    #: names: "Key", "Bucket", "Path"); `create` then finds them in `info.storage` and checks them.
    storage_choices: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    @abstractmethod
    def from_config(cls, config: Config) -> Self:
        """Build the store from its options (it is opened later, by `open`)."""

    @abstractmethod
    def describe(self, info: UploadInfo) -> dict[str, str]:
        """Where the upload lives, as tusd's hooks report it: `Type` plus path or bucket/key."""

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Prepare resources (directories, clients). Called once at app start."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources. Called once at app shutdown."""

    async def ready(self) -> None:  # noqa: B027 - optional hook
        """Raise when the backend is unreachable right now (for `/ready`); a no-op by default."""

    @abstractmethod
    async def create(self, info: UploadInfo) -> None:
        """Make room for a new upload, put in `info.storage` what the store needs to find it
        again (nothing, when the id is enough: the file store), and save the `.info` copy."""

    @abstractmethod
    async def save_info(self, info: UploadInfo) -> None:
        """Write the durable `.info` copy of the upload's info."""

    async def save_progress(self, info: UploadInfo) -> None:
        """Persist a commit: `info.offset` and `info.expires_at` moved, nothing else did.

        A store may keep these apart from the `.info` copy when that is cheaper (the file store
        does); `load_info` must then return the newer of the two.
        """
        await self.save_info(info)

    @abstractmethod
    async def load_info(self, upload_id: str) -> UploadInfo | None:
        """Read the `.info` copy, or None when the upload is unknown to storage."""

    @abstractmethod
    async def stored_offset(self, info: UploadInfo) -> int:
        """How many bytes are durably stored: used to rebuild a lost committed offset."""

    @abstractmethod
    async def write(self, info: UploadInfo, chunks: AsyncIterable[bytes], commit: Commit) -> int:
        """Append `chunks` at `info.offset` and return the new offset.

        Call `commit(offset)` whenever bytes up to `offset` are durable and the write goes on
        relying on that (the S3 store before dropping what the offset covers). The bytes up to
        the offset returned are durable; what of them is not committed yet the caller commits
        (the file store leaves its last commit to it, which can then travel with the lock's
        release: one Redis round trip for both). If `chunks` raises, commit nothing more,
        undo what is not committed where the medium allows it, and re-raise the error as it
        is. (S3 cannot delete a part that landed
        while its upload was being cancelled: `stored_offset` may then count those bytes, which
        are the client's bytes at their offsets.) The caller guarantees `chunks` never goes past
        the upload's length.
        """

    async def finish(self, info: UploadInfo) -> None:  # noqa: B027 - optional hook
        """Called when the last byte is committed (S3 completes the multipart upload here).

        May be called again for an upload already finished (a retry after a failure): idempotent.
        """

    @abstractmethod
    async def terminate(self, info: UploadInfo) -> None:
        """Remove everything stored for the upload; succeed when some of it is already gone.

        Every store can do this (failed creations and expired uploads are removed with it), so
        every store offers the termination extension.
        """

    @abstractmethod
    def list_upload_ids(self) -> AsyncIterator[str]:
        """Every upload id the store holds an `.info` for (used by the expiry sweep)."""


@runtime_checkable
class Concatenater(Protocol):
    """concatenation (and -unfinished): a final upload made of finished partial uploads."""

    async def concatenate(self, final: UploadInfo, partials: list[UploadInfo]) -> None:
        """Fill the empty `final` with the finished `partials`' bytes, in order.

        Called under the final's and the partials' locks; the protocol layer commits the final's
        offset and calls `finish(final)` afterwards. Must be safe to run again after a failure.
        """
        ...


@runtime_checkable
class LengthDeferrer(Protocol):
    """creation-defer-length: the length arrives on a later PATCH."""

    async def declare_length(self, info: UploadInfo) -> None:
        """`info.length` was just set on an upload created without one; refuse (raise a
        `TusError`) a length the store cannot hold. The protocol layer persists the info."""
        ...


@runtime_checkable
class Reader(Protocol):
    """download: GET streams a finished upload's bytes."""

    def read(self, info: UploadInfo, start: int, end: int) -> AsyncIterator[bytes]:
        """Stream bytes `start` (inclusive) to `end` (exclusive) of a finished upload."""
        ...


@runtime_checkable
class Redirector(Protocol):
    """download by redirect: GET of a finished upload may be answered with a 302 to a URL that
    serves its bytes straight from the storage service (a presigned S3 URL)."""

    async def download_url(
        self, info: UploadInfo, content_type: str, disposition: str
    ) -> str | None:
        """A URL that serves the finished upload with these response headers, or None to
        stream it through the server as usual."""
        ...


@runtime_checkable
class RedisUser(Protocol):
    """A store that keeps some of its own data in the shared Redis when there is one (the S3
    store's incomplete parts). Called once, before `open`, when `--redis-url` is set."""

    def use_redis(self, config: Config) -> None: ...


@runtime_checkable
class UnfinishedLister(Protocol):
    """The expiry sweep's way past finished uploads. Without it the sweep walks every upload
    and reads its `.info` on every pass, at a cost that grows with every upload ever kept."""

    def list_unfinished_ids(self) -> AsyncIterator[str]:
        """The id of every unfinished upload, at a cost that does not grow with finished ones.

        Never misses an unfinished upload (one being created may or may not be listed); may
        also list some that have finished or vanished since: the sweep checks each id.
        """
        ...

    async def forget_unfinished(self, upload_id: str) -> None:
        """The sweep found a listed upload gone, or finished and completed: stop listing it."""
        ...


@runtime_checkable
class WriteClock(Protocol):
    """When an upload's bytes last changed. Each PATCH moves an upload's expiry in the state
    store only (Redis), not in its `.info` copy, so a state rebuilt from storage counts the
    expiry from the last write instead of taking the copy's, which may be long past."""

    async def last_write(self, info: UploadInfo) -> float | None:
        """Epoch seconds of the latest write of the upload's stored bytes; None when unknown."""
        ...


@runtime_checkable
class FinishedRetainer(Protocol):
    """--retain-finished: the sweep deletes finished uploads that long after they finished."""

    def list_finished_before(self, cutoff: float) -> AsyncIterator[str]:
        """Ids of uploads that finished before `cutoff` (epoch seconds), at a cost that grows
        with them rather than with every finished upload kept. May list an id whose upload
        is gone, or was replaced by a new one (the sweep checks `finished_at`)."""
        ...

    async def finished_at(self, upload_id: str) -> float | None:
        """When the upload's `finish` ran (epoch seconds); None when it has not, or is gone."""
        ...


_CAPABILITY_PROTOCOLS: tuple[tuple[Capability, type], ...] = (
    (Capability.CONCATENATION, Concatenater),
    (Capability.DEFER_LENGTH, LengthDeferrer),
    (Capability.DOWNLOAD, Reader),
)


def capabilities(store: DataStore) -> frozenset[Capability]:
    """What `store` can do beyond the core, from the optional Protocols it implements."""
    found = {cap for cap, protocol in _CAPABILITY_PROTOCOLS if isinstance(store, protocol)}
    return frozenset({Capability.TERMINATION, *found})
