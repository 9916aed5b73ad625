"""Local-file store: the embedded default.

Layout in the upload directory, per upload:
    <id>            the bytes received so far (never longer than the declared length)
    <id>.info       the upload's info as JSON, written atomically (temp file + rename)
    <id>.progress   while an upload is under way: its committed offset and expiry, newer than the
                    `.info`'s, and a CRC-32 of both, rewritten in place on each commit (see
                    `save_progress`)
A final upload of a concatenation is an ordinary pair whose file is filled by copying its
partials' files in order (one thread, 1 MiB at a time).

An index beside them lets the sweep (expiry.py) find the uploads it may delete without reading
every `.info`; each entry is an empty file:
    .index/unfinished/<id>          the upload is unfinished: written before its files, removed
                                    when it finishes or is deleted
    .index/finished/<minute>/<id>   the upload finished in that minute (the epoch second it
                                    starts with); the data file's mtime is set to the moment
    .index/built                    the index covers the uploads stored before it existed: the
                                    first sweep walks the `.info`s once to build it

A pre-create hook may choose where the bytes also appear (`ChangeFileInfo.Storage.Path`, relative
to the upload directory, as tusd's file store takes it): the data file then gets a second name
there, a hard link made at creation, so the application finds the file where it wants it while
every operation of the store keeps using `<id>` (`info.storage["path"]` records it; `terminate`
removes both names).

Caveats: bytes are handed to the OS before an offset is committed, so they survive a crash of
the process; they are not fsync'ed, so a power loss can cost the last seconds. Several processes
may share the directory only with Redis state and locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import logging
import os
import resource
import time
import zlib
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import aiofiles
import aiofiles.os

from tusd_py.errors import TusError, upload_exists
from tusd_py.ids import is_valid_upload_id
from tusd_py.info import UploadInfo
from tusd_py.stores.base import Commit, DataStore
from tusd_py.stores.file_index import FileIndex
from tusd_py.stores.names import name_problem

if TYPE_CHECKING:
    from tusd_py.config import Config

log = logging.getLogger("tusd_py.stores.file")
T = TypeVar("T")

# Receive-side chunks (often 64 KiB) are gathered into writes of this size: one writev per MiB
# (and, when writes run in threads, one thread hop) instead of one per chunk, and no copy.
WRITE_SIZE = 1024 * 1024
# While a body streams, the offset is committed every this many bytes or seconds, whichever comes
# first: a crash mid-PATCH then costs the client at most that much to re-send, for one state
# write (a Redis round trip, or a `.progress` write) per interval.
COMMIT_SIZE = 4 * 1024 * 1024
COMMIT_INTERVAL = 1.0
# The coalescing buffers of all PATCHes together stay near this: past it, a PATCH writes what it
# has at once instead of gathering a whole WRITE_SIZE (200 uploads at once held 200 MiB before).
COALESCE_BUDGET = 32 * 1024 * 1024
READ_SIZE = 256 * 1024
# A write into the page cache takes a fraction of a millisecond, less than a hop to a worker thread
# and back: writing on the event loop took ~10% more throughput with tus-js-client, and worker
# threads' malloc arenas page-faulted ~6x as often. A disk that blocks (dirty-page throttling, a
# failing or network disk) must not stall every request of the process, though: a write, open,
# `.info` replacement or `.progress` write that blocks longer than STALL, STALLS times within
# STALL_WINDOW seconds, or once longer than LONG_STALL, sends the store's file operations to
# worker threads for THREADED_FOR seconds, after which the loop tries again. A lone 20-40 ms
# hiccup (an `.info` rename while the kernel reclaims a full page cache) is tolerated: it used to
# send everything to threads, and cost that 8 MiB-chunk upload 15-25%. Reads of `.info` and
# `.progress` follow the same rule; downloads (large, maybe from a cold disk) always use threads.
STALL = 0.02
STALLS = 3
STALL_WINDOW = 10.0
LONG_STALL = 0.1
THREADED_FOR = 30.0
_IOV_MAX = os.sysconf("SC_IOV_MAX")


def _voluntary_switches() -> int:
    """How often the calling thread has slept in the kernel so far; -1 where that is unknown
    (not Linux), and then every long call counts as a stall."""
    if _RUSAGE_THREAD is None:
        return -1
    return resource.getrusage(_RUSAGE_THREAD).ru_nvcsw


_RUSAGE_THREAD: int | None = getattr(resource, "RUSAGE_THREAD", None)


def _disk_error(exc: OSError, verb: str, path: Path) -> TusError:
    """The 5xx of a failed file operation; `verb` and the file name it failed on are logged."""
    operation = f"{verb} {exc.filename or path}"
    if exc.errno == errno.ENOSPC:
        return TusError(
            507,
            "insufficient-storage",
            "the server's disk is full; retry later",
            operation=operation,
        )
    return TusError(
        500,
        "storage-error",
        f"the server could not write the upload: {exc.strerror}",
        operation=operation,
    )


# The blocking halves of the store's file operations. Each runs whole, on the loop or (see STALL)
# in one worker thread: a thread hop costs more than a small write, so a threaded 64 KiB PATCH
# takes three hops (open, write and close, the commit's `.progress` or `.info`) rather than one
# per call.


class _Shorter(Exception):
    def __init__(self, size: int) -> None:
        self.size = size


def _open_at(path: Path, offset: int) -> io.FileIO:
    """The data file, unbuffered, cut back to `offset` and positioned there."""
    f = io.FileIO(path, "r+")
    try:
        size = os.fstat(f.fileno()).st_size
        if size < offset:
            # Truncating up would fill the missing bytes with zeros: a silent hole.
            raise _Shorter(size)
        if size > offset:
            # Bytes past the committed offset are leftovers of a crash or failed PATCH: drop
            # them. Only then: on ext4 a truncated file is flushed to disk when it is closed
            # (auto_da_alloc), which cost each PATCH 40-60 ms at its end.
            f.truncate(offset)
        f.seek(offset)
    except BaseException:
        f.close()
        raise
    return f


def _write_all(f: io.FileIO, pieces: list[bytes]) -> None:
    """Write `pieces` in order, gathered by writev: the chunks are never copied into one buffer."""
    views = [memoryview(piece) for piece in pieces if piece]
    fd, i = f.fileno(), 0
    while i < len(views):
        written = os.writev(fd, views[i : i + _IOV_MAX])
        while i < len(views) and written >= len(views[i]):
            written -= len(views[i])
            i += 1
        if written:
            views[i] = views[i][written:]


def _write_and_close(f: io.FileIO, data: list[bytes]) -> None:
    try:
        _write_all(f, data)
    finally:
        f.close()


def _replace_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _replace_info(info: Path, progress: Path, text: str) -> None:
    _replace_atomically(info, text)
    with contextlib.suppress(FileNotFoundError):
        progress.unlink()  # the `.info` is the newer now


# Room for the largest offset, expiry and checksum; one fixed size, so a rewrite leaves no
# stale tail.
_PROGRESS_SIZE = 64
# Reads of a `.progress` another process rewrites at that moment: a read may mix the bytes of
# both writes (Linux does not order buffered reads against writes); the checksum shows it and
# the read is made again, which sees one write whole.
_PROGRESS_READS = 3


def _checksum(fields: str) -> str:
    return f"{zlib.crc32(fields.encode()):08x}"


def _progress_text(info: UploadInfo) -> bytes:
    expires = "-" if info.expires_at is None else repr(info.expires_at)
    fields = f"{info.offset} {expires}"
    return f"{fields} {_checksum(fields)}".encode().ljust(_PROGRESS_SIZE - 1) + b"\n"


def _write_progress(path: Path, text: bytes) -> None:
    # In place, never truncated or renamed: ext4 flushes a file replaced by rename (or truncated)
    # to disk at once (auto_da_alloc), and while the kernel reclaims a full page cache that flush
    # blocked each commit 20-70 ms. One write of under a sector is all or nothing on disk; a
    # reader in another process may still see it half done (`_PROGRESS_READS`).
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, text, 0)
    finally:
        os.close(fd)


def _progress_fields(text: str) -> tuple[int, float | None] | None:
    """The offset and expiry of a `.progress` text; None when it is torn (by a crash, or by a
    read during a rewrite). A text without a checksum was written by an older tusd-py."""
    fields = text.split()
    if len(fields) == 3 and _checksum(f"{fields[0]} {fields[1]}") != fields[2]:
        return None
    if len(fields) not in (2, 3):
        return None
    try:
        return int(fields[0]), None if fields[1] == "-" else float(fields[1])
    except ValueError:
        return None


def _apply_progress(info: UploadInfo, text: str) -> None:
    """Take the offset and expiry from a `.progress` text when it is newer than the `.info`'s."""
    fields = _progress_fields(text)
    if fields is None:
        # Torn by a crash: the `.info`'s offset is older but true (later bytes are re-sent).
        log.warning("ignoring the unreadable progress of upload %s: %r", info.id, text[:80])
        return
    offset, expires_at = fields
    if offset > info.offset:
        info.offset, info.expires_at = offset, expires_at


def _read_progress(path: Path) -> str:
    text = path.read_text()
    for _ in range(_PROGRESS_READS - 1):
        if _progress_fields(text) is not None:
            break
        text = path.read_text()  # mixed with a rewrite in progress, or torn for good
    return text


def _read_info(info: Path, progress: Path) -> tuple[str, str | None]:
    # The `.progress` first: a writer replaces the `.info` and only then removes the `.progress`,
    # so read in this order, the newer of the two is never older than the upload was when the
    # read began. (Read the other way, the `.info` from before and no `.progress` any more: a
    # HEAD in another worker went back to the offset of the `.info`'s last write.)
    progress_text: str | None
    try:
        progress_text = _read_progress(progress)
    except FileNotFoundError:
        progress_text = None
    return info.read_text(), progress_text


def _create_files(index: FileIndex, data: Path, info: Path, text: str) -> None:
    if data.exists():
        raise FileExistsError(data)  # before the index entry, which is the other upload's
    index.created(data.name)
    with open(data, "xb"):
        pass
    _replace_atomically(info, text)


# A chosen path: at most this long, each segment a file name most file systems take.
MAX_PATH_BYTES = 1024
MAX_SEGMENT_BYTES = 255
_STORE_SUFFIXES = (".info", ".progress")


def chosen_path_problem(path: str) -> str | None:
    """Why a pre-create hook's `Storage.Path` cannot name the upload's file, or None."""
    problem = name_problem(path, MAX_PATH_BYTES)
    if problem is not None:
        return problem
    parts = path.split("/")
    if any(len(part.encode("utf-8", errors="surrogatepass")) > MAX_SEGMENT_BYTES for part in parts):
        return f"has a segment longer than {MAX_SEGMENT_BYTES} bytes"
    if parts[0] == ".index" or path.endswith(_STORE_SUFFIXES):
        return "is named like one of the store's own files (.index/, .info, .progress)"
    if len(parts) == 1 and is_valid_upload_id(path):
        return "is a name the store may give another upload (use a directory or an extension)"
    return None


def _link_chosen(directory: Path, data: Path, chosen: str) -> None:
    """Give the new upload's data file its chosen second name, inside `directory` only."""
    target = directory / chosen
    target.parent.mkdir(parents=True, exist_ok=True)
    root = os.path.realpath(directory)
    if os.path.commonpath([root, os.path.realpath(target.parent)]) != root:
        raise TusError(
            500,
            "hook-invalid-storage",
            f"the pre-create hook's ChangeFileInfo.Storage.Path {chosen!r} leads out of the "
            "upload directory (through a symbolic link)",
            operation="pre-create hook",
        )
    try:
        os.link(data, target)  # fails if the name exists: nothing is ever overwritten
    except FileExistsError:
        raise TusError(
            409,
            "storage-path-taken",
            f"the path {chosen!r} chosen for this upload already exists in the upload directory",
        ) from None


def _concatenate_files(target: Path, sources: list[tuple[Path, int]]) -> None:
    with open(target, "r+b") as out:
        out.truncate(0)  # a retry after a failed attempt starts over
        for path, length in sources:
            with open(path, "rb") as src:
                copied = 0
                while copied < length:
                    chunk = src.read(min(WRITE_SIZE, length - copied))
                    if not chunk:
                        raise OSError(errno.EIO, f"{path.name} is shorter than its length {length}")
                    out.write(chunk)
                    copied += len(chunk)


class _FileWriter:
    """One PATCH into the data file, opened at the committed offset: gathers the chunks into
    writes of up to WRITE_SIZE, commits behind the writes (every COMMIT_SIZE bytes or
    COMMIT_INTERVAL seconds, and at the end), and when anything fails cuts the file back to what
    is committed."""

    def __init__(
        self, store: FileStore, info: UploadInfo, path: Path, f: io.FileIO, commit: Commit
    ) -> None:
        self.store = store
        self.info = info
        self.path = path
        self.f = f
        self._commit = commit
        self.start = info.offset
        self.loop = asyncio.get_running_loop()
        self.closed = False
        self.buffer: list[bytes] = []  # received, not yet handed to a write
        self.buffered = 0  # their size
        # Counted from `start`: bytes whose write has completed (unbuffered: they are in the OS),
        # and bytes committed.
        self.written = 0
        self.committed = 0
        self.last_commit = self.loop.time()
        # A write in a worker thread overlaps with receiving the next megabyte.
        self.pending: asyncio.Future[None] | None = None
        self.pending_size = 0
        # A commit runs beside the receiving, like the writes: awaited in line, a state write
        # every 4 MiB held up the body ~1 ms each time. One at a time, in order.
        self.committing: asyncio.Task[None] | None = None
        self.commit_failed = False

    async def run(self, chunks: AsyncIterable[bytes]) -> int:
        try:
            try:
                await self._receive(chunks)
                await self._finish()
            except BaseException:
                await self._abandon()
                raise
        finally:
            self.store._buffered -= self.buffered
            if not self.closed:
                await asyncio.to_thread(self.f.close)
        # What is written and not yet committed is the caller's to commit: so it can travel
        # with the release of the lock (stores/base.py, `write`).
        return self.start + self.written

    async def _receive(self, chunks: AsyncIterable[bytes]) -> None:
        """Gather the chunks until a write is due: WRITE_SIZE of them, a commit, or the budget."""
        store, loop = self.store, self.loop
        async for chunk in chunks:
            size = len(chunk)
            self.buffer.append(chunk)
            self.buffered += size
            store._buffered += size
            due = loop.time() - self.last_commit >= COMMIT_INTERVAL
            crowded = store._buffered > COALESCE_BUDGET
            if self.buffered >= WRITE_SIZE or due or crowded:
                # Disk errors are mapped here, not around the loop: an error of the chunk source
                # (an OSError too, perhaps) goes back to the caller as it is.
                try:
                    if self.pending is not None:
                        await self.pending
                        self._count_pending()
                    if self.committing is not None and self.committing.done():
                        await self._settle()  # raises what the commit raised
                    self._flush(due)
                except OSError as exc:
                    raise _disk_error(exc, "write", self.path) from exc

    def _count_pending(self) -> None:
        """The write in a thread has completed (it was awaited): its bytes are written."""
        self.written += self.pending_size
        self.pending = None

    def _flush(self, due: bool) -> None:
        """Start committing what is written if that is due, then hand the gathered chunks to one
        write: on the loop, or in a thread (see STALL)."""
        if self.committing is None:
            unsaved = self.written - self.committed
            if unsaved >= COMMIT_SIZE or (due and unsaved > 0):
                self.committing = asyncio.ensure_future(self._commit_at(self.written))
                self.last_commit = self.loop.time()
        data, size, self.buffer, self.buffered = self.buffer, self.buffered, [], 0
        self.store._buffered -= size
        if self.store._on_loop():
            self.store._timed(_write_all, self.f, data)
            self.written += size
        else:
            self.pending = self.loop.run_in_executor(None, _write_all, self.f, data)
            self.pending_size = size

    async def _finish(self) -> None:
        """Write the rest and close the file, then wait for the commit under way."""
        try:
            if self.pending is not None:
                await self.pending
                self._count_pending()
            self.closed = True  # by the call below, whatever it raises
            data, size, self.buffer, self.buffered = self.buffer, self.buffered, [], 0
            self.store._buffered -= size
            await self.store._blocking(_write_and_close, self.f, data)
            self.written += size
            await self._settle()
        except OSError as exc:
            raise _disk_error(exc, "write", self.path) from exc

    async def _commit_at(self, written: int) -> None:
        try:
            await self._commit(self.start + written)
        except BaseException:
            self.commit_failed = True
            raise
        self.committed = written  # commits run one at a time, in order

    async def _settle(self) -> None:
        """Wait for the commit under way, if any: raises what it raised."""
        if self.committing is not None:
            task, self.committing = self.committing, None
            await task

    async def _abandon(self) -> None:
        """After a failure: let the write and the commit under way end, then undo what is not
        committed."""
        if self.pending is not None:
            with contextlib.suppress(Exception):
                await self.pending
        with contextlib.suppress(Exception):
            await self._settle()
        # Back to what is committed: `info.offset` follows successful commits (with a checksum,
        # none happens before the body is verified). Not when a commit failed: Redis may have
        # applied it after all (a timeout), or another request owns the upload now (lost lock)
        # and may have committed more; bytes past the committed offset are harmless, a committed
        # offset past the bytes is a hole.
        if not self.commit_failed:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(os.truncate, self.path, max(self.start, self.info.offset))


class FileStore(DataStore):
    storage_type = "filestore"
    storage_choices = frozenset({"Path"})

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.index = FileIndex(self.directory)
        self._buffered = 0  # bytes in the coalescing buffers of all PATCHes
        self._threaded_until = 0.0  # monotonic time until which file operations use threads
        self._stalls: list[float] = []  # when recent operations on the loop blocked for > STALL

    @classmethod
    def from_config(cls, config: Config) -> FileStore:
        return cls(config.upload_dir)

    def describe(self, info: UploadInfo) -> dict[str, str]:
        path = self._data_path(info.id).absolute()
        chosen = info.storage.get("path")
        shown = (self.directory / chosen).absolute() if isinstance(chosen, str) else path
        return {"Type": self.storage_type, "Path": str(shown), "InfoPath": f"{path}.info"}

    async def declare_length(self, info: UploadInfo) -> None:
        """Any length fits a file."""

    async def open(self) -> None:
        await aiofiles.os.makedirs(self.directory, exist_ok=True)
        await asyncio.to_thread(self.index.open)

    async def ready(self) -> None:
        if not await aiofiles.os.path.isdir(self.directory) or not os.access(
            self.directory, os.W_OK
        ):
            raise TusError(
                503,
                "storage-unavailable",
                f"the upload directory {self.directory} is missing or not writable",
            )

    def _data_path(self, upload_id: str) -> Path:
        # The protocol layer validates ids; this is the last line of defence against traversal.
        if not is_valid_upload_id(upload_id):
            raise ValueError(f"invalid upload id {upload_id!r}")
        return self.directory / upload_id

    def _info_path(self, upload_id: str) -> Path:
        return self._data_path(upload_id).with_name(upload_id + ".info")

    def _progress_path(self, upload_id: str) -> Path:
        return self._data_path(upload_id).with_name(upload_id + ".progress")

    def _on_loop(self) -> bool:
        """Whether file operations run on the event loop now (see STALL)."""
        return time.monotonic() >= self._threaded_until

    def _timed(self, operation: Callable[..., T], *args: object) -> T:
        """Run a file operation on the loop; repeated or long stalls move the next to threads."""
        slept = _voluntary_switches()
        started = time.monotonic()
        try:
            return operation(*args)
        finally:
            now = time.monotonic()
            # A stall is the thread sleeping in the kernel (a throttled or failing disk). On a
            # busy machine a call also takes long when the thread merely waited for a core:
            # threads would not help then, and the hops cost ~50 µs each.
            if now - started > STALL and (slept < 0 or _voluntary_switches() != slept):
                self._stalled(operation.__name__, started, now)

    def _stalled(self, operation: str, started: float, now: float) -> None:
        self._stalls = [t for t in self._stalls if t > now - STALL_WINDOW] + [now]
        took = now - started
        if took <= LONG_STALL and len(self._stalls) < STALLS:
            return
        self._stalls.clear()
        self._threaded_until = now + THREADED_FOR
        log.warning(
            "disk operations on %s stall the event loop (%s blocked for %.0f ms): file "
            "operations run in worker threads for the next %.0f s",
            self.directory,
            operation.lstrip("_"),
            took * 1000,
            THREADED_FOR,
        )

    async def _blocking(self, operation: Callable[..., T], *args: object) -> T:
        """Run a file operation on the loop while the disk is fast, else in a thread."""
        if self._on_loop():
            return self._timed(operation, *args)
        return await asyncio.to_thread(operation, *args)

    async def create(self, info: UploadInfo) -> None:
        chosen = info.storage.get("Path")
        info.storage = {}
        if chosen is not None:
            problem = chosen_path_problem(chosen)
            if problem is not None:
                raise TusError(
                    500,
                    "hook-invalid-storage",
                    f"the pre-create hook's ChangeFileInfo.Storage names Path {chosen!r}, which "
                    f"{problem}",
                    operation="pre-create hook",
                )
            info.storage = {"path": chosen}
        data, text = self._data_path(info.id), info.to_json()
        try:
            await self._blocking(_create_files, self.index, data, self._info_path(info.id), text)
        except FileExistsError:
            raise upload_exists(info.id) from None
        except OSError as exc:
            raise _disk_error(exc, "create", data) from exc
        if chosen is not None:
            try:
                await asyncio.to_thread(_link_chosen, self.directory, data, chosen)
            except BaseException:
                await self.terminate(info)
                raise

    async def _unlink_chosen(self, info: UploadInfo, data: Path) -> None:
        """Remove the chosen name, if it still is this upload's file (never anyone else's)."""
        chosen = info.storage.get("path")
        if not isinstance(chosen, str) or chosen_path_problem(chosen) is not None:
            return
        target = self.directory / chosen
        with contextlib.suppress(FileNotFoundError):
            if await asyncio.to_thread(os.path.samefile, target, data):
                await aiofiles.os.remove(target)

    async def save_info(self, info: UploadInfo) -> None:
        paths = self._info_path(info.id), self._progress_path(info.id)
        try:
            await self._blocking(_replace_info, *paths, info.to_json())
        except OSError as exc:
            raise _disk_error(exc, "write", paths[0]) from exc

    async def save_progress(self, info: UploadInfo) -> None:
        path, text = self._progress_path(info.id), _progress_text(info)
        try:
            await self._blocking(_write_progress, path, text)
        except OSError as exc:
            raise _disk_error(exc, "write", path) from exc

    async def load_info(self, upload_id: str) -> UploadInfo | None:
        paths = self._info_path(upload_id), self._progress_path(upload_id)
        try:
            # Under the same stall guard as the writes: with `--workers N` every HEAD and PATCH
            # reads these two small files, and a thread hop cost more than the reads (a HEAD
            # took 2x the CPU of one worker's, which keeps the info in memory).
            text, progress = await self._blocking(_read_info, *paths)
        except FileNotFoundError:
            return None
        info = UploadInfo.from_json(text)
        if progress is not None:
            _apply_progress(info, progress)
        return info

    async def stored_offset(self, info: UploadInfo) -> int:
        try:
            size = (await aiofiles.os.stat(self._data_path(info.id))).st_size
        except FileNotFoundError:
            return 0
        return size if info.length is None else min(size, info.length)

    async def last_write(self, info: UploadInfo) -> float | None:
        try:
            return (await aiofiles.os.stat(self._data_path(info.id))).st_mtime
        except FileNotFoundError:
            return None

    async def write(self, info: UploadInfo, chunks: AsyncIterable[bytes], commit: Commit) -> int:
        path = self._data_path(info.id)
        try:
            f = await self._blocking(_open_at, path, info.offset)
        except FileNotFoundError:
            raise TusError(404, "upload-not-found", f"the data of {info.id!r} is gone") from None
        except _Shorter as short:
            raise TusError(
                500,
                "storage-inconsistent",
                f"upload {info.id!r} is committed up to byte {info.offset} but only {short.size} "
                "bytes are stored; refusing to fill the gap",
                operation=f"open {path}",
            ) from None
        except OSError as exc:
            raise _disk_error(exc, "open", path) from exc
        return await _FileWriter(self, info, path, f, commit).run(chunks)

    async def concatenate(self, final: UploadInfo, partials: list[UploadInfo]) -> None:
        sources = [(self._data_path(p.id), p.length or 0) for p in partials]
        try:
            # One thread for the whole copy: a per-chunk hop would dominate for large partials.
            await asyncio.to_thread(_concatenate_files, self._data_path(final.id), sources)
        except FileNotFoundError as exc:
            raise TusError(
                404, "upload-not-found", f"a part of final upload {final.id!r} is gone"
            ) from exc
        except OSError as exc:
            raise _disk_error(exc, "concatenate into", self._data_path(final.id)) from exc

    async def finish(self, info: UploadInfo) -> None:
        try:
            await self._blocking(self.index.finished_now, info.id, self._data_path(info.id))
        except FileNotFoundError:
            raise TusError(404, "upload-not-found", f"the data of {info.id!r} is gone") from None
        except OSError as exc:
            raise _disk_error(exc, "mark finished", self._data_path(info.id)) from exc

    async def terminate(self, info: UploadInfo) -> None:
        data = self._data_path(info.id)
        await self._unlink_chosen(info, data)
        await asyncio.to_thread(self.index.removed, info.id, data)
        paths = data, self._info_path(info.id), self._progress_path(info.id)
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                await aiofiles.os.remove(path)

    async def read(self, info: UploadInfo, start: int, end: int) -> AsyncIterator[bytes]:
        async with aiofiles.open(self._data_path(info.id), "rb") as f:
            await f.seek(start)
            remaining = end - start
            while remaining > 0:
                chunk = await f.read(min(READ_SIZE, remaining))
                if not chunk:
                    return
                remaining -= len(chunk)
                yield chunk

    async def list_upload_ids(self) -> AsyncIterator[str]:
        for name in await aiofiles.os.listdir(self.directory):
            if name.endswith(".info"):
                upload_id = name[: -len(".info")]
                if is_valid_upload_id(upload_id):
                    yield upload_id

    # -- the index (file_index.py): what the sweep reads instead of every `.info` -------------

    def _stored_infos(self) -> Iterator[tuple[str, UploadInfo | None]]:
        for name in os.listdir(self.directory):
            upload_id = name.removesuffix(".info")
            if name.endswith(".info") and is_valid_upload_id(upload_id):
                paths = self._info_path(upload_id), self._progress_path(upload_id)
                try:
                    text, progress = _read_info(*paths)
                except FileNotFoundError:
                    continue
                info = UploadInfo.from_json(text)
                if progress is not None:
                    _apply_progress(info, progress)
                yield upload_id, info

    async def list_unfinished_ids(self) -> AsyncIterator[str]:
        await asyncio.to_thread(self.index.build_once, self._stored_infos)
        for upload_id in await asyncio.to_thread(self.index.unfinished_ids):
            yield upload_id

    async def forget_unfinished(self, upload_id: str) -> None:
        await asyncio.to_thread(self.index.forget_unfinished, upload_id)

    async def list_finished_before(self, cutoff: float) -> AsyncIterator[str]:
        await asyncio.to_thread(self.index.build_once, self._stored_infos)
        found = await asyncio.to_thread(self.index.finished_before, cutoff, self._data_path)
        for upload_id in found:
            yield upload_id

    async def finished_at(self, upload_id: str) -> float | None:
        data = self._data_path(upload_id)
        return await asyncio.to_thread(self.index.finished_at, upload_id, data)
