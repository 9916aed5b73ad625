"""`Hooks`: runs Python hook functions and HTTP hooks at each point of an upload's life.

The protocol handlers call one method per lifecycle point (`pre_access`, `pre_create`, `created`,
`receiving`, `finished`, `pre_terminate`, `terminated`); each also counts the event in the
metrics and logs it, so hooks, metrics and logs can never disagree about what happened.

Besides Python functions, one transport delivers events outside the process: HTTP hooks
(http.py) or file hooks (files.py), as tusd runs one hook handler at a time.

Blocking hooks (pre-*) run before the server answers: a failure answers 500 and changes nothing,
a rejection answers the hook's status (400 by default) with its body and headers. Non-blocking
hooks (post-*) go into a bounded queue that a fixed number of workers deliver from, so a slow
receiver costs queue room, never request latency or pre-* connections; when the queue is full an
event is dropped, counted and (once per burst) logged. Their failures are logged and counted,
never answered.
post-receive runs every `progress_interval` seconds while a body arrives and once at its end; it
can stop the upload, which the protocol layer then removes, as tusd does.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Protocol

from tusd_py import metrics
from tusd_py.errors import TusError
from tusd_py.hooks.files import FileHookRunner
from tusd_py.hooks.http import HttpHookClient
from tusd_py.hooks.types import (
    DEFAULT_HTTP_EVENTS,
    AccessInfo,
    AccessMode,
    HookError,
    HookEvent,
    HookResponse,
    HookType,
    HTTPRequestInfo,
    HTTPResponse,
    parse_hook_types,
    snapshot,
)
from tusd_py.info import UploadInfo
from tusd_py.metadata import encode_metadata
from tusd_py.request_context import bind_upload, current_request

if TYPE_CHECKING:
    from tusd_py.config import Config

log = logging.getLogger("tusd_py.hooks")
uploads_log = logging.getLogger("tusd_py.uploads")

HookResult = HookResponse | None
HookFunction = Callable[[HookEvent], HookResult | Awaitable[HookResult]]
# The store's `describe`: the `Storage` object of hook events.
StorageDescriber = Callable[[UploadInfo], dict[str, str] | None]


class HookTransport(Protocol):
    """Delivers an event outside the process and returns its answer (HTTP or file hooks)."""

    def handles(self, hook_type: HookType) -> bool: ...

    async def call(self, event: HookEvent) -> HookResponse: ...

    async def close(self) -> None: ...


class ReceivingBody(Protocol):
    """The request body being stored (protocol/body.py's reader), as post-receive sees it."""

    received: int

    def stop(self, reason: str) -> None: ...


class UploadStopped(Exception):
    """post-receive asked to stop the upload: the protocol layer removes it and answers
    `error`, which carries the hook's status and message."""

    def __init__(self, error: TusError) -> None:
        super().__init__(error.message)
        self.error = error


# The defaults of --hooks-post-workers, --hooks-post-queue-size and --hooks-post-drain-timeout.
POST_WORKERS = 16
POST_QUEUE_SIZE = 10_000
DRAIN_TIMEOUT = 10.0

AnswerCallback = Callable[[HookResponse | None], None]


@dataclasses.dataclass
class _Queued:
    """A post-* event waiting for a worker, with the context (request and upload ids for the
    logs) of the request that caused it."""

    event: HookEvent
    on_answer: AnswerCallback | None
    context: contextvars.Context


class Hooks:
    def __init__(
        self,
        functions: Mapping[HookType | str, HookFunction] | None = None,
        *,
        transport: HookTransport | None = None,
        transport_events: Iterable[HookType] = DEFAULT_HTTP_EVENTS,
        progress_interval: float = 1.0,
        describe_storage: StorageDescriber | None = None,
        post_workers: int = POST_WORKERS,
        post_queue_size: int = POST_QUEUE_SIZE,
        drain_timeout: float = DRAIN_TIMEOUT,
    ) -> None:
        self.functions = {HookType(name): fn for name, fn in (functions or {}).items()}
        # An HttpHookClient or a FileHookRunner, and the events it gets (--hooks-enabled-events).
        self.transport = transport
        self.transport_events = (
            frozenset(transport_events) if transport is not None else frozenset()
        )
        self.progress_interval = progress_interval
        self._describe_storage = describe_storage or (lambda info: None)
        self.post_workers = max(1, post_workers)
        self.post_queue_size = max(1, post_queue_size)
        self.drain_timeout = drain_timeout
        self._queue: asyncio.Queue[_Queued] | None = None  # and the workers: on first use
        self._workers: list[asyncio.Task[None]] = []
        self._delivering = 0
        self._dropping = False  # in a burst of drops, which was logged when it began
        self._closed = False

    @classmethod
    def from_config(
        cls,
        config: Config,
        functions: Mapping[HookType | str, HookFunction] | None = None,
        describe_storage: StorageDescriber | None = None,
    ) -> Hooks:
        transport: HookTransport | None = None
        if config.hooks_dir:
            transport = FileHookRunner(config.hooks_dir, timeout=config.hooks_http_timeout)
        elif config.hooks_http:
            transport = HttpHookClient(
                config.hooks_http,
                retries=config.hooks_http_retry,
                backoff=config.hooks_http_backoff,
                timeout=config.hooks_http_timeout,
                forward_headers=config.hooks_http_forward_headers,
                post_connections=config.hooks_post_workers,
            )
        return cls(
            functions,
            transport=transport,
            transport_events=parse_hook_types(config.hooks_enabled_events),
            progress_interval=config.progress_hooks_interval,
            describe_storage=describe_storage,
            post_workers=config.hooks_post_workers,
            post_queue_size=config.hooks_post_queue_size,
            drain_timeout=config.hooks_post_drain_timeout,
        )

    def enabled(self, hook_type: HookType) -> bool:
        return hook_type in self.functions or self._transported(hook_type)

    def _transported(self, hook_type: HookType) -> bool:
        return (
            hook_type in self.transport_events
            and self.transport is not None
            and self.transport.handles(hook_type)
        )

    async def close(self) -> None:
        """Deliver the queued post-* events for up to `drain_timeout` seconds, drop the rest
        (one log line), then close the HTTP client."""
        self._closed = True
        queue = self._queue
        if queue is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.drain_timeout):
                    await queue.join()
            cancelled = self._delivering
            for worker in self._workers:
                worker.cancel()
            await asyncio.gather(*self._workers, return_exceptions=True)
            dropped = 0
            while not queue.empty():
                self._discard(queue.get_nowait())
                metrics.HOOK_QUEUED.dec()
                dropped += 1
            if dropped or cancelled:
                log.warning(
                    "shutdown: post-* hook deliveries did not finish within %gs; "
                    "%d queued events dropped, %d deliveries in flight cancelled",
                    self.drain_timeout,
                    dropped,
                    cancelled,
                )
        if self.transport is not None:
            await self.transport.close()
        # Ready for another run of the app (a lifespan may run again, in another loop).
        self._queue, self._workers, self._dropping, self._closed = None, [], False, False

    # --- lifecycle points, called by the protocol handlers ------------------------------------

    async def pre_access(self, info: UploadInfo, mode: AccessMode) -> None:
        """Before a HEAD, GET (mode "read"), PATCH or DELETE ("write") touches `info`'s upload:
        may refuse (raises, 403 unless the answer names another error status). An allowed
        access leaves the response alone: its status and body belong to the protocol."""
        access = AccessInfo(mode, [snapshot(info)])
        response = await self._blocking(
            HookType.PRE_ACCESS, info, "the request was not served", access
        )
        if response is None or not response.reject_access:
            return
        _change_response(response)
        raise _rejection(
            response, "access-rejected", "the server refused access to this upload", 403
        )

    async def pre_create(self, info: UploadInfo) -> None:
        """May reject (raises), set a custom id, or replace the metadata of `info`."""
        response = await self._blocking(HookType.PRE_CREATE, info, "the upload was not created")
        if response is None:
            return
        _change_response(response)
        if response.reject_upload:
            raise _rejection(response, "upload-rejected", "the server rejected this upload")
        change = response.change_file_info
        if change is not None:
            if change.id is not None:
                info.id = change.id
            if change.metadata is not None:
                info.metadata = dict(change.metadata)
                info.metadata_header = encode_metadata(info.metadata)
            if change.storage is not None:
                # The store's create() checks it (stores/base.py `storage_choices`).
                info.storage = dict(change.storage)

    def created(self, info: UploadInfo) -> None:
        bind_upload(info.id)
        metrics.UPLOADS_CREATED.inc()
        metrics.UPLOADS_BY_PATH.labels(upload_path(info), "created").inc()
        uploads_log.info(
            "upload created",
            extra={"length": info.length, "metadata": info.metadata or None},
        )
        self._fire(HookType.POST_CREATE, info)

    @contextlib.asynccontextmanager
    async def receiving(self, info: UploadInfo, reader: ReceivingBody) -> AsyncIterator[None]:
        """Wraps the write of one request body: progress hooks and the byte count. Raises
        `UploadStopped` when post-receive asked to stop the upload (the caller removes it)."""
        start = info.offset
        stop: list[HookResponse] = []
        handle: asyncio.TimerHandle | None = None
        watching = self.enabled(HookType.POST_RECEIVE)
        if watching:
            loop = asyncio.get_running_loop()
            reported = 0
            in_flight = False

            def on_answer(response: HookResponse | None) -> None:
                nonlocal in_flight
                in_flight = False
                if response is not None and response.stop_upload and not stop:
                    stop.append(response)
                    reader.stop("stopped by the post-receive hook")

            def tick() -> None:
                nonlocal handle, reported, in_flight
                # One delivery at a time per request: a slow receiver gets fewer, not more.
                if reader.received != reported and not in_flight:
                    reported, in_flight = reader.received, True
                    progress = dataclasses.replace(info, offset=start + reader.received)
                    self._fire(HookType.POST_RECEIVE, progress, on_answer)
                handle = loop.call_later(self.progress_interval, tick)

            handle = loop.call_later(self.progress_interval, tick)
        try:
            yield
        finally:
            if handle is not None:
                handle.cancel()
            if reader.received:
                metrics.BYTES_RECEIVED.inc(reader.received)
        if stop and not info.finished:
            raise self._stopped(info, stop[0])
        if watching and reader.received:
            self._fire(HookType.POST_RECEIVE, info)

    async def finished(self, info: UploadInfo) -> None:
        """The last byte is stored (and the store finished the upload)."""
        response = await self._blocking(
            HookType.PRE_FINISH, info, "all bytes of the upload are stored"
        )
        if response is not None:
            _change_response(response)
        metrics.UPLOADS_FINISHED.inc()
        metrics.UPLOADS_BY_PATH.labels(upload_path(info), "finished").inc()
        uploads_log.info("upload finished", extra={"length": info.length})
        self._fire(HookType.POST_FINISH, info)

    async def pre_terminate(self, info: UploadInfo) -> None:
        response = await self._blocking(
            HookType.PRE_TERMINATE, info, "the upload was not terminated"
        )
        if response is None:
            return
        _change_response(response)
        if response.reject_termination:
            raise _rejection(
                response, "termination-rejected", "the server refused to terminate this upload"
            )

    def terminated(self, info: UploadInfo) -> None:
        metrics.UPLOADS_TERMINATED.inc()
        metrics.UPLOADS_BY_PATH.labels(upload_path(info), "terminated").inc()
        uploads_log.info("upload terminated", extra={"offset": info.offset})
        self._fire(HookType.POST_TERMINATE, info)

    # --- running hooks ------------------------------------------------------------------------

    def _event(
        self, hook_type: HookType, info: UploadInfo, access: AccessInfo | None = None
    ) -> HookEvent:
        request = current_request.get()
        storage = self._describe_storage(info)
        if storage is not None and upload_path(info) != "tus":
            storage = {**storage, "UploadPath": upload_path(info)}  # a direct-to-S3 upload
        return HookEvent(
            hook_type,
            snapshot(info),
            HTTPRequestInfo.from_scope(request.scope) if request is not None else HTTPRequestInfo(),
            storage,
            access,
        )

    async def _run(self, event: HookEvent) -> HookResponse:
        """The Python function first, then the HTTP hook; the later answer wins per field."""
        name = event.type.value
        metrics.HOOK_INVOCATIONS.labels(name).inc()
        try:
            response = HookResponse()
            function = self.functions.get(event.type)
            if function is not None:
                result = function(event)
                if inspect.isawaitable(result):
                    result = await result
                if result is not None and not isinstance(result, HookResponse):
                    raise HookError(
                        f"the hook function returned {type(result).__name__}, "
                        "not a HookResponse or None"
                    )
                response = result or response
            if (
                self.transport is not None
                and self._transported(event.type)
                and not response.rejects
            ):
                response = _combine(response, await self.transport.call(event))
            response.validate()
            return response
        except TusError:
            raise  # a Python hook answering the client itself: a decision, not a failure
        except HookError:
            metrics.HOOK_ERRORS.labels(name).inc()
            raise
        except Exception as exc:
            metrics.HOOK_ERRORS.labels(name).inc()
            # The failure is logged once by whoever reports it (the 500's error line, or the
            # post-* hook's warning); the traceback only at debug.
            log.debug("the %s hook function raised", name, exc_info=True)
            raise HookError(f"{type(exc).__name__}: {exc}") from exc

    async def _blocking(
        self,
        hook_type: HookType,
        info: UploadInfo,
        outcome: str,
        access: AccessInfo | None = None,
    ) -> HookResponse | None:
        if not self.enabled(hook_type):
            return None
        try:
            return await self._run(self._event(hook_type, info, access))
        except HookError as exc:
            raise TusError(
                500,
                "hook-failed",
                f"the {hook_type.value} hook failed, so {outcome}: {exc}",
                operation=f"{hook_type.value} hook",
            ) from exc

    def _fire(
        self, hook_type: HookType, info: UploadInfo, on_answer: AnswerCallback | None = None
    ) -> None:
        """Queue a post-* event for the workers; drop it when the queue is full."""
        if not self.enabled(hook_type):
            return
        queued = _Queued(self._event(hook_type, info), on_answer, contextvars.copy_context())
        if self._closed:
            self._drop(queued)
            return
        queue = self._started()
        try:
            queue.put_nowait(queued)
        except asyncio.QueueFull:
            self._drop(queued)
            return
        metrics.HOOK_QUEUED.inc()
        if self._dropping and queue.qsize() <= self.post_queue_size // 2:
            self._dropping = False  # the burst is over: the next drop is logged again

    def _started(self) -> asyncio.Queue[_Queued]:
        if self._queue is None:
            queue: asyncio.Queue[_Queued] = asyncio.Queue(self.post_queue_size)
            self._queue = queue
            self._workers = [
                asyncio.create_task(self._work(queue), name=f"tusd-post-hooks-{n}")
                for n in range(self.post_workers)
            ]
        return self._queue

    async def _work(self, queue: asyncio.Queue[_Queued]) -> None:
        while True:
            queued = await queue.get()
            metrics.HOOK_QUEUED.dec()
            self._delivering += 1
            try:
                # In a task of its own only to run in the context of the request that fired it.
                await asyncio.create_task(
                    self._deliver(queued.event, queued.on_answer), context=queued.context
                )
            finally:
                self._delivering -= 1
                queue.task_done()

    def _drop(self, queued: _Queued) -> None:
        if not self._dropping and not self._closed:
            self._dropping = True
            log.warning(
                "the post-* hook queue is full (%d events): dropping new events until it is "
                "half empty again (tusd_hook_dropped_total counts them)",
                self.post_queue_size,
            )
        self._discard(queued)

    def _discard(self, queued: _Queued) -> None:
        metrics.HOOK_DROPPED.labels(queued.event.type.value).inc()
        if queued.on_answer is not None:
            queued.on_answer(None)

    async def _deliver(self, event: HookEvent, on_answer: AnswerCallback | None) -> None:
        response: HookResponse | None = None
        try:
            response = await self._run(event)
        except (HookError, TusError) as exc:
            log.warning("%s hook failed: %s", event.type.value, exc)
        finally:
            if on_answer is not None:
                on_answer(response)

    def _stopped(self, info: UploadInfo, response: HookResponse) -> UploadStopped:
        _change_response(response)
        uploads_log.info("upload stopped by the post-receive hook", extra={"offset": info.offset})
        return UploadStopped(
            _rejection(response, "upload-stopped", "the server stopped this upload and removed it")
        )


def upload_path(info: UploadInfo) -> str:
    """How the upload's bytes travel: "tus", or a direct-to-S3 path (tusd_py/direct_s3)."""
    return str(info.storage.get("direct") or "tus")


def _change_response(response: HookResponse) -> None:
    request = current_request.get()
    if request is not None:
        request.change_response(response.http_response)


def _rejection(response: HookResponse, code: str, message: str, default: int = 400) -> TusError:
    http = response.http_response
    status = http.status_code if http is not None and http.status_code >= 400 else default
    # A refusal answered with a success status would tell the client something happened.
    _change_response(HookResponse(http_response=HTTPResponse(status)))
    return TusError(status, code, message)


def _combine(first: HookResponse, later: HookResponse) -> HookResponse:
    http = first.http_response
    if later.http_response is not None:
        http = later.http_response if http is None else http.merged_with(later.http_response)
    return HookResponse(
        http_response=http,
        reject_upload=first.reject_upload or later.reject_upload,
        change_file_info=later.change_file_info or first.change_file_info,
        stop_upload=first.stop_upload or later.stop_upload,
        reject_termination=first.reject_termination or later.reject_termination,
        reject_access=first.reject_access or later.reject_access,
    )
