"""The data-store interface: where the bytes of an upload live.

A store owns the bytes and a durable copy of each upload's info (an `.info` file or object), so
that upload state lost elsewhere (Redis) can be rebuilt from storage. What a store can do beyond
the core is declared in `capabilities`; the protocol layer computes `Tus-Extension` from it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from enum import StrEnum

from tusd_py.info import UploadInfo

# Called by a store once the bytes below `offset` are durable; may raise (e.g. lock lost), and
# then the store stops writing and commits nothing more.
Commit = Callable[[int], Awaitable[None]]


class Capability(StrEnum):
    TERMINATION = "termination"
    CONCATENATION = "concatenation"
    DEFER_LENGTH = "creation-defer-length"
    DOWNLOAD = "download"


class DataStore(ABC):
    """Core operations every store has; optional ones are gated by `capabilities`."""

    capabilities: frozenset[Capability] = frozenset()

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Prepare resources (directories, clients). Called once at app start."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources. Called once at app shutdown."""

    async def ready(self) -> None:  # noqa: B027 - optional hook
        """Raise when the backend is unreachable right now (for `/ready`); a no-op by default."""

    @abstractmethod
    async def create(self, info: UploadInfo) -> None:
        """Make room for a new upload, fill `info.storage`, and save the `.info` copy."""

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

        Call `commit(offset)` whenever bytes up to `offset` are durable (at the latest before
        returning). If `chunks` raises, commit nothing more, undo what is not committed, re-raise.
        The caller guarantees `chunks` never goes past the upload's length.
        """

    async def finish(self, info: UploadInfo) -> None:  # noqa: B027 - optional hook
        """Called when the last byte is committed (S3 completes the multipart upload here).

        May be called again for an upload already finished (a retry after a failure): idempotent.
        """

    async def concatenate(self, final: UploadInfo, partials: list[UploadInfo]) -> None:
        """(CONCATENATION) Fill the empty `final` with the finished `partials`' bytes, in order.

        Called under the final's and the partials' locks; the protocol layer commits the final's
        offset and calls `finish(final)` afterwards. Must be safe to run again after a failure.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot concatenate uploads")

    @abstractmethod
    async def terminate(self, info: UploadInfo) -> None:
        """Remove everything stored for the upload; succeed when some of it is already gone."""

    @abstractmethod
    def read(self, info: UploadInfo, start: int, end: int) -> AsyncIterator[bytes]:
        """Stream bytes `start` (inclusive) to `end` (exclusive) of a finished upload."""

    @abstractmethod
    def list_upload_ids(self) -> AsyncIterator[str]:
        """Every upload id the store holds an `.info` for (used by the expiry sweep)."""
