"""What every handler works with: the configuration and the store / state / locker interfaces."""

from __future__ import annotations

import functools
import time
import weakref
from dataclasses import dataclass, field

from starlette.requests import Request

from tusd_py.config import Config
from tusd_py.errors import gone, not_found
from tusd_py.hooks import Hooks
from tusd_py.info import UploadInfo
from tusd_py.locking.base import HolderReader, Lock, Locker
from tusd_py.protocol.body import BodyReader, framing_refused
from tusd_py.state.base import StateStore
from tusd_py.stores.base import Capability, DataStore, Reader, Redirector, capabilities


@dataclass
class TusContext:
    config: Config
    store: DataStore
    state: StateStore
    locker: Locker
    # Bodies being read right now, so a shutdown can end them and keep their bytes.
    active_readers: weakref.WeakSet[BodyReader] = field(default_factory=weakref.WeakSet)
    # Lifecycle events: hooks, upload metrics and upload log lines (tusd_py/hooks).
    hooks: Hooks = field(default_factory=Hooks)

    @functools.cached_property
    def capabilities(self) -> frozenset[Capability]:
        return capabilities(self.store)

    @functools.cached_property
    def holder_reader(self) -> HolderReader | None:
        """The state, when it reads the lock's holder with the state (once: a runtime Protocol
        check walks the class's attributes, too slow for every HEAD)."""
        return self.state if isinstance(self.state, HolderReader) else None

    @functools.cached_property
    def reader(self) -> Reader | None:
        """The store, when it serves downloads (checked once, as `holder_reader`)."""
        return self.store if isinstance(self.store, Reader) else None

    @functools.cached_property
    def redirector(self) -> Redirector | None:
        """The store, when it may answer a download with a redirect (checked once)."""
        return self.store if isinstance(self.store, Redirector) else None

    @property
    def extensions(self) -> list[str]:
        caps = self.capabilities
        names = ["creation", "creation-with-upload"]
        if Capability.DEFER_LENGTH in caps:
            names.append("creation-defer-length")
        if Capability.TERMINATION in caps:
            names.append("termination")
        if self.config.expiration > 0:
            names.append("expiration")
        # Verified in the protocol layer (protocol/checksum.py) on top of the store contract.
        names.append("checksum")
        if Capability.CONCATENATION in caps:
            names += ["concatenation", "concatenation-unfinished"]
        return names

    def new_expiry(self) -> float | None:
        return time.time() + self.config.expiration if self.config.expiration > 0 else None

    def open_body(self, request: Request) -> BodyReader:
        """The request's body reader, registered so shutdown can end it and the endpoint can see
        whether the body was read to its end."""
        config = self.config
        reader = BodyReader(
            request.receive,
            None,
            config.read_timeout,
            config.body_min_rate,
            refused=lambda: framing_refused(request.scope),
        )
        self.active_readers.add(reader)
        request.state.body_reader = reader
        return reader

    def stop_all_readers(self) -> None:
        for reader in list(self.active_readers):
            reader.stop("shutdown")

    async def existing(self, upload_id: str, lock: Lock | None = None) -> UploadInfo:
        """The upload's info; 404 when unknown, 410 when it expired unfinished. Pass the `lock`
        just taken for the upload: its state may have come with it."""
        state = self.state
        info = await (state.get(upload_id) if lock is None else state.get_held(upload_id, lock))
        if info is None or is_direct_record(info):
            raise not_found(upload_id)
        if is_expired(info):
            raise gone(upload_id)
        return info


def is_direct_record(info: UploadInfo) -> bool:
    """A direct-to-S3 upload's record (tusd_py/direct_s3) shares the state backend but is no tus
    upload (its bytes go to the bucket without the server): the tus endpoint does not know it."""
    return bool(info.storage.get("direct"))


def is_expired(info: UploadInfo, now: float | None = None) -> bool:
    return (
        info.expires_at is not None
        and not info.finished
        and (now if now is not None else time.time()) >= info.expires_at
    )
