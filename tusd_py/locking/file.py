"""File locker: upload locks shared by the processes of one host (`--workers N`, local state).

Layout, in `<upload dir>/.locks/`:
    <id>          exists while the upload is locked; `flock(LOCK_EX)` on it is the lock, and it
                  holds "<pid> <token>" of the holder. The kernel drops the flock when the holder's
                  process dies, so a crashed worker never leaves an upload locked.
    <id>.wanted   a release request: the token a newcomer wants to let go.

Handover across processes: a newcomer that finds the flock taken writes the holder's token into
`<id>.wanted` and sends SIGUSR1 to the holder's pid; the holder's handler looks at the `.wanted`
file of each lock it holds and calls `on_release_request` where the token is its own. The newcomer
polls the flock (with backoff) until it gets it or the acquire timeout ends (423), and asks again
now and then in case a request crossed a release. Within one process, locks are handed over in
memory as `MemoryLocker` does, without signals or files.

A holder unlinks the lock file before it closes it, so the file exists exactly while someone may
hold it; a newcomer that locked a file that was unlinked meanwhile (its inode is not the path's
any more) lets go and tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import secrets
import signal
from pathlib import Path

from tusd_py.errors import locked
from tusd_py.locking.base import Lock, Locker, ReleaseRequest

log = logging.getLogger(__name__)

RELEASE_SIGNAL = signal.SIGUSR1
MIN_POLL = 0.005
MAX_POLL = 0.1
# Ask the same holder again this often: a request written while it was releasing is lost.
REASK_INTERVAL = 0.5


class _FileLock(Lock):
    def __init__(
        self, locker: FileLocker, upload_id: str, fd: int, on_release_request: ReleaseRequest
    ) -> None:
        self.upload_id = upload_id
        self.token = secrets.token_hex(16)
        self.fd = fd
        self.on_release_request = on_release_request
        self.released = asyncio.Event()
        self.asked_to_let_go = False
        self._locker = locker

    @property
    def valid(self) -> bool:
        # No lease to lose: the flock lasts as long as the process that holds it.
        return not self.released.is_set()

    def request_release(self) -> None:
        try:
            self.on_release_request()
        except Exception:
            log.exception("on_release_request of upload %s failed", self.upload_id)

    async def release(self) -> None:
        self._locker._release(self)


class FileLocker(Locker):
    def __init__(self, directory: str | os.PathLike[str], acquire_timeout: float = 10.0) -> None:
        self.directory = Path(directory)
        self._prefix = str(self.directory)
        self.acquire_timeout = acquire_timeout
        self._held: dict[str, _FileLock] = {}  # by upload id: the locks this process holds
        self._signal_loop: asyncio.AbstractEventLoop | None = None

    # Plain strings: a pathlib join per call cost as much as a syscall on every lock.
    def _path(self, upload_id: str) -> str:
        return os.path.join(self._prefix, upload_id)

    def _wanted_path(self, upload_id: str) -> str:
        return os.path.join(self._prefix, f"{upload_id}.wanted")

    def _listen_for_requests(self) -> None:
        """Install the release-request handler on the running loop (once per loop)."""
        loop = asyncio.get_running_loop()
        if self._signal_loop is not loop:
            self.directory.mkdir(parents=True, exist_ok=True)
            loop.add_signal_handler(RELEASE_SIGNAL, self._on_release_signal)
            self._signal_loop = loop

    def _on_release_signal(self) -> None:
        for upload_id, lock in list(self._held.items()):
            try:
                with open(self._wanted_path(upload_id)) as f:
                    wanted = f.read()
            except OSError:
                continue
            if wanted.strip() == lock.token:
                lock.request_release()

    # -- taking and giving back ---------------------------------------------------------

    def _try_flock(self, upload_id: str, on_release_request: ReleaseRequest) -> _FileLock | None:
        path = self._path(upload_id)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            # `.locks` was removed under a running server (an upload directory cleaned by
            # hand): make it again rather than fail every request. Locks held at that moment
            # stop excluding others (their files are gone); removing it is the operator's risk.
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        opened = os.fstat(fd)
        try:
            same = os.stat(path).st_ino == opened.st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the holder we waited for unlinked it: lock the file that is there now
            os.close(fd)
            return self._try_flock(upload_id, on_release_request)
        lock = _FileLock(self, upload_id, fd, on_release_request)
        if opened.st_size:  # a holder that crashed left its line (a fresh file is empty)
            os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {lock.token}".encode(), 0)
        return lock

    async def acquire(self, upload_id: str, on_release_request: ReleaseRequest) -> Lock:
        self._listen_for_requests()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.acquire_timeout
        delay = MIN_POLL
        last_ask = float("-inf")
        while True:
            local = self._held.get(upload_id)
            if local is not None:
                local.request_release()
                await self._wait_released(local, deadline)
                continue
            lock = self._try_flock(upload_id, on_release_request)
            if lock is not None:
                self._held[upload_id] = lock
                if last_ask != float("-inf"):
                    with contextlib.suppress(OSError):  # our own request, satisfied
                        os.unlink(self._wanted_path(upload_id))
                return lock
            now = loop.time()
            if now - last_ask >= REASK_INTERVAL and self._ask_holder(upload_id):
                last_ask = now
            remaining = deadline - now
            if remaining <= 0:
                raise locked(upload_id)
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, MAX_POLL)

    async def _wait_released(self, lock: _FileLock, deadline: float) -> None:
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            if remaining <= 0:
                raise TimeoutError
            async with asyncio.timeout(remaining):
                await lock.released.wait()
        except TimeoutError:
            raise locked(lock.upload_id) from None

    def _release(self, lock: _FileLock) -> None:
        if lock.released.is_set():
            return
        if self._held.get(lock.upload_id) is lock:
            del self._held[lock.upload_id]
        try:
            # Unlinked while still locked, so nobody locks a file about to be dropped; emptied
            # first, so a process that opened it meanwhile never reads a pid that may be reused.
            os.ftruncate(lock.fd, 0)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path(lock.upload_id))
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._wanted_path(lock.upload_id))
        except OSError as exc:
            log.warning("could not remove the lock file of upload %s: %s", lock.upload_id, exc)
        finally:
            os.close(lock.fd)
            lock.released.set()

    # -- other processes' locks -----------------------------------------------------------

    def _foreign_holder(self, upload_id: str) -> tuple[int, str] | None:
        """(pid, token) of the process holding the flock, or None when it is free. A holder that
        has not written its line yet is read again a few times."""
        try:
            fd = os.open(self._path(upload_id), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            for _ in range(100):
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    pass
                else:
                    return None  # free (and let go again when the fd closes)
                pid, _, token = os.pread(fd, 128, 0).decode(errors="replace").partition(" ")
                if pid.isdigit() and token:
                    return int(pid), token
                os.sched_yield()
            return None
        finally:
            os.close(fd)

    def _ask_holder(self, upload_id: str, token: str | None = None) -> bool:
        """Send the holder in another process a release request; False when nobody holds it
        (or someone other than `token`)."""
        holder = self._foreign_holder(upload_id)
        if holder is None or (token is not None and holder[1] != token):
            return False
        pid, holder_token = holder
        try:
            with open(self._wanted_path(upload_id), "w") as f:
                f.write(holder_token)
            os.kill(pid, RELEASE_SIGNAL)
        except (ProcessLookupError, PermissionError, OSError) as exc:
            log.debug("could not ask pid %d to release upload %s: %s", pid, upload_id, exc)
            return False
        return True

    async def holder(self, upload_id: str) -> str | None:
        local = self._held.get(upload_id)
        if local is not None:
            return local.token
        holder = self._foreign_holder(upload_id)
        return None if holder is None else holder[1]

    async def let_go(self, upload_id: str, holder: str) -> None:
        self._listen_for_requests()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.acquire_timeout
        local = self._held.get(upload_id)
        if local is not None:
            if local.token != holder:
                return
            if not local.asked_to_let_go:
                local.asked_to_let_go = True  # one request for every reader of this holder
                local.request_release()
            await self._wait_released(local, deadline)
            return
        delay = MIN_POLL
        last_ask = float("-inf")
        while True:
            now = loop.time()
            if now - last_ask >= REASK_INTERVAL:
                if not self._ask_holder(upload_id, holder):
                    return
                last_ask = now
            else:
                current = self._foreign_holder(upload_id)
                if current is None or current[1] != holder:
                    return
            remaining = deadline - now
            if remaining <= 0:
                raise locked(upload_id)
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, MAX_POLL)

    async def close(self) -> None:
        loop, self._signal_loop = self._signal_loop, None
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError, ValueError):
                loop.remove_signal_handler(RELEASE_SIGNAL)
            # A request that arrives while the process shuts down must not kill it (SIGUSR1's
            # default action): there is nothing left to release.
            signal.signal(RELEASE_SIGNAL, signal.SIG_IGN)
