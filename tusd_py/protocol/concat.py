"""concatenation and concatenation-unfinished: partial uploads joined into a final upload.

`Upload-Concat: partial` marks an upload as a partial; `Upload-Concat: final;<url> <url> …`
creates the final upload from partials of this server (absolute or relative URLs). The final's
length is the sum of its partials' lengths, so every partial must have a known length.

- All partials finished when the final is created: it is assembled in the same request.
- Otherwise (concatenation-unfinished) the final is created empty and every partial is claimed
  for it (`part_of`); the request that finishes the last partial assembles it, and so does a
  HEAD on the final should that have failed.

Cleanup policy: once the final is assembled its partials are deleted — their bytes live on in
the final. A partial belongs to one final at most: naming it again is a 400 while it is claimed
and a 404 once it is gone. Partials of a final that is deleted or expires before completion stay
until the client deletes them or, while unfinished, they expire.

Cost: a final names at most `--max-concat-parts` partials (400 beyond). Every partial is checked
before any lock is taken — looked up a window at a time, concurrently — so a final naming
thousands of unknown or unusable ids gets its 404/400 after a few lookups, not after taking
thousands of locks. The checks run again under the locks, where they are authoritative.

Locking: the final's creation takes its partials' locks (sorted by id), then the new final's;
completion takes the final's lock, then its partials'. No request ever waits for a final's lock
while it holds a partial's, so the two orders cannot deadlock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Sequence
from typing import Literal
from urllib.parse import SplitResult, urljoin, urlsplit

from starlette.requests import Request
from starlette.responses import Response

from tusd_py.errors import TusError, bad_request
from tusd_py.ids import is_valid_upload_id, new_upload_id
from tusd_py.info import UploadInfo
from tusd_py.locking.base import Lock
from tusd_py.locking.held import all_held, held
from tusd_py.protocol.context import TusContext, is_expired
from tusd_py.protocol.responses import tus_response
from tusd_py.protocol.uploads import check_max_size, complete_upload, discard, new_upload, remove
from tusd_py.protocol.urls import endpoint_url
from tusd_py.stores.base import Capability, Concatenater

log = logging.getLogger("tusd_py.concat")

PARTIAL = "partial"
FINAL_PREFIX = "final;"
# Partials looked up at once: the first window is small so that a bad first id costs little, and
# it doubles up to the largest so that a long list of good ones takes few round trips.
FIRST_LOOKUP_WINDOW = 16
LARGEST_LOOKUP_WINDOW = 256


def parse_upload_concat(
    ctx: TusContext, value: str | None
) -> Literal["partial"] | list[str] | None:
    """None (no header), "partial", or the URLs of a final upload's parts."""
    if value is None:
        return None
    if Capability.CONCATENATION not in ctx.capabilities:
        raise bad_request(
            "this server's storage does not support the concatenation extension",
            "concat-unsupported",
        )
    value = value.strip()
    if value == "partial":
        return "partial"
    if value.startswith(FINAL_PREFIX):
        urls = value[len(FINAL_PREFIX) :].split()
        if not urls:
            raise bad_request(
                "Upload-Concat: final; must list at least one partial upload URL", "invalid-concat"
            )
        limit = ctx.config.max_concat_parts
        if len(urls) > limit:
            raise bad_request(
                f"Upload-Concat: final; names {len(urls)} partial uploads; this server joins at "
                f"most {limit} (--max-concat-parts)",
                "too-many-partials",
            )
        return urls
    raise bad_request(
        f"Upload-Concat must be 'partial' or 'final;<url> <url> …', got {value!r}",
        "invalid-concat",
    )


def part_ids(ctx: TusContext, request: Request, urls: list[str]) -> list[str]:
    """The upload ids the URLs of `Upload-Concat: final;…` name, resolved like a browser would
    against this endpoint; URLs of another host or path are foreign (400)."""
    base = endpoint_url(request, ctx.config.behind_proxy)
    base_parts = urlsplit(base)
    ids: list[str] = []
    seen: set[str] = set()
    for url in urls:
        upload_id = _plain_upload_id(url, base, base_parts.path)
        if upload_id is None:
            upload_id = _resolved_upload_id(url, base, base_parts)
        if upload_id in seen:
            raise bad_request(
                f"Upload-Concat names the partial upload {upload_id!r} twice", "duplicate-partial"
            )
        seen.add(upload_id)
        ids.append(upload_id)
    return ids


def _plain_upload_id(url: str, base: str, base_path: str) -> str | None:
    """The id of a URL in one of the forms clients send (`<base><id>`, `<base path><id>`, `<id>`),
    without the cost of resolving it (a final may name a thousand); None for any other form.
    An id has no dots, slashes, `%`, `?` or `#`, so resolving such a URL would give the same."""
    for prefix in (base, base_path, ""):
        if url.startswith(prefix) and is_valid_upload_id(url[len(prefix) :]):
            return url[len(prefix) :]
    return None


def _resolved_upload_id(url: str, base: str, base_parts: SplitResult) -> str:
    try:
        target = urlsplit(urljoin(base, url))
    except ValueError:  # e.g. an unclosed IPv6 bracket
        raise bad_request(
            f"Upload-Concat names {url!r}, which is not a URL", "foreign-partial"
        ) from None
    # The scheme may differ behind a TLS-terminating proxy; host and path may not.
    foreign = target.netloc.lower() != base_parts.netloc.lower() or not target.path.startswith(
        base_parts.path
    )
    upload_id = target.path[len(base_parts.path) :]
    if foreign or not is_valid_upload_id(upload_id):
        raise bad_request(
            f"Upload-Concat names {url!r}, which is not an upload URL of this server "
            f"(expected {base}<id>)",
            "foreign-partial",
        )
    return upload_id


def concat_headers(info: UploadInfo, endpoint: str | None) -> dict[str, str]:
    """`Upload-Concat` for HEAD; a final's parts as absolute URLs when the endpoint is known,
    else as ids, which are relative references that resolve against the final's own URL."""
    if info.concat == "partial":
        return {"Upload-Concat": PARTIAL}
    if info.concat == "final":
        prefix = endpoint or ""
        return {"Upload-Concat": FINAL_PREFIX + " ".join(prefix + p for p in info.parts)}
    return {}


async def _looked_up(
    ctx: TusContext, upload_ids: Sequence[str]
) -> AsyncGenerator[tuple[str, UploadInfo | None], None]:
    """Each id with its info (None: unknown), in order, looked up a growing window at a time
    (all of a window at once); a caller that stops early saves the lookups of later windows."""
    start, window = 0, FIRST_LOOKUP_WINDOW
    while start < len(upload_ids):
        batch = upload_ids[start : start + window]
        results = await asyncio.gather(
            *(ctx.state.get(upload_id) for upload_id in batch), return_exceptions=True
        )
        for upload_id, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                raise result  # every lookup of the window has ended: none is left running
            yield upload_id, result
        start += window
        window = min(window * 2, LARGEST_LOOKUP_WINDOW)


async def _usable_partials(ctx: TusContext, upload_ids: Sequence[str]) -> list[UploadInfo]:
    """The infos of a new final's partials, in order; the first unusable one raises."""
    async with contextlib.aclosing(_looked_up(ctx, upload_ids)) as found:
        return [_usable_partial(upload_id, info) async for upload_id, info in found]


async def _all_finished(ctx: TusContext, upload_ids: Sequence[str]) -> list[UploadInfo] | None:
    """The infos of a final's partials when every one exists and is finished, else None (found
    out at the first that is not)."""
    partials: list[UploadInfo] = []
    async with contextlib.aclosing(_looked_up(ctx, upload_ids)) as found:
        async for _, partial in found:
            if partial is None or not partial.finished:
                return None
            partials.append(partial)
    return partials


def _usable_partial(upload_id: str, info: UploadInfo | None) -> UploadInfo:
    if info is None:
        raise TusError(
            404,
            "partial-not-found",
            f"Upload-Concat names the upload {upload_id!r}, which does not exist",
        )
    if is_expired(info):
        raise TusError(
            410, "partial-gone", f"Upload-Concat names the upload {upload_id!r}, which expired"
        )
    if info.concat != PARTIAL:
        raise bad_request(
            f"Upload-Concat names the upload {upload_id!r}, which was not created with "
            "Upload-Concat: partial",
            "not-partial",
        )
    if info.part_of is not None:
        raise bad_request(
            f"the partial upload {upload_id!r} already belongs to the final upload "
            f"{info.part_of!r}",
            "partial-taken",
        )
    if info.length is None:
        raise bad_request(
            f"the partial upload {upload_id!r} has no length yet; a final upload needs the "
            "lengths of all its partials (declare it with Upload-Length on a PATCH first)",
            "partial-length-unknown",
        )
    return info


def _check_length(ctx: TusContext, partials: list[UploadInfo]) -> int:
    length = sum(p.length or 0 for p in partials)
    check_max_size(ctx, length, f"the partials' {length} bytes")
    return length


async def _assemble(
    ctx: TusContext,
    final: UploadInfo,
    final_lock: Lock,
    partials: list[UploadInfo],
    locks: dict[str, Lock],
) -> None:
    """Concatenate, commit and finish the final, then delete its partials (all locks held)."""
    assert final.length is not None
    for partial in partials:
        # A partial whose storage completion failed (S3: no object yet) is completed first.
        await complete_upload(ctx, partial, locks[partial.id])
    store = ctx.store
    assert isinstance(store, Concatenater)  # parse_upload_concat refused the header otherwise
    await store.concatenate(final, partials)
    await ctx.state.commit(final, final.length, final_lock)
    await complete_upload(ctx, final, final_lock)
    for partial in partials:
        try:
            await remove(ctx, partial)
        except TusError as exc:  # the final is complete; a leftover partial is only storage
            log.warning("could not delete partial %s of final %s: %s", partial.id, final.id, exc)


async def _release_partials(
    ctx: TusContext, final_id: str, partials: list[UploadInfo], locks: dict[str, Lock]
) -> None:
    """The partials `final_id` claimed are free again (for another final, or to be deleted)."""
    for partial in partials:
        if partial.part_of == final_id:
            partial.part_of = None
            try:
                await ctx.state.update(partial, locks[partial.id])
            except Exception:
                log.exception("could not release partial %s from final %s", partial.id, final_id)


async def _undo_final(
    ctx: TusContext, final: UploadInfo, partials: list[UploadInfo], locks: dict[str, Lock]
) -> None:
    await _release_partials(ctx, final.id, partials, locks)
    await discard(ctx, final)


def check_deletable(info: UploadInfo, final: UploadInfo | None) -> None:
    """A partial claimed by an unfinished final cannot go: the final could never be assembled.
    `final` is the final that `info` names in `part_of`, if any."""
    if final is not None and final.concat == "final" and not final.finished:
        raise TusError(
            409,
            "partial-claimed",
            f"upload {info.id!r} is a partial of the unfinished final upload {final.id!r}; "
            "delete the final first",
        )


async def after_delete(ctx: TusContext, info: UploadInfo) -> None:
    """Called with no lock held once `info` was deleted: an unassembled final frees its
    partials, so they can be deleted or joined into another final."""
    if info.concat != "final" or info.finished:
        return
    async with all_held(ctx.locker, info.parts) as locks:
        partials = [p async for _, p in _looked_up(ctx, info.parts) if p is not None]
        await _release_partials(ctx, info.id, partials, locks)


async def create_final(
    ctx: TusContext,
    request: Request,
    urls: list[str],
    metadata_header: str | None,
    metadata: dict[str, str],
    with_body: bool,
) -> Response:
    """POST with `Upload-Concat: final;…`: create the final upload, assembling it when it can."""
    for name in ("Upload-Length", "Upload-Defer-Length"):
        if name.lower() in request.headers:
            raise bad_request(
                f"a final upload must not carry {name}: its length is the sum of its partials'",
                "final-with-length",
            )
    if with_body:
        raise bad_request(
            "a final upload cannot carry data; its bytes come from its partials", "final-with-body"
        )
    ids = part_ids(ctx, request, urls)
    # Everything refusable is refused before a lock is taken: taking thousands of locks (each a
    # Redis round trip, and a handover for a partial still uploading) only to answer 404 would
    # make one request cost seconds. Checked again under the locks, where it counts.
    _check_length(ctx, await _usable_partials(ctx, ids))
    async with all_held(ctx.locker, ids) as locks:
        partials = await _usable_partials(ctx, ids)
        length = _check_length(ctx, partials)
        final = UploadInfo(
            id=new_upload_id(),
            length=length,
            metadata=metadata,
            metadata_header=metadata_header,
            expires_at=ctx.new_expiry(),
            concat="final",
            parts=ids,
        )
        await new_upload(ctx, final)
        async with held(ctx.locker, final.id) as final_lock:
            try:
                if all(p.finished for p in partials):
                    await _assemble(ctx, final, final_lock, partials, locks)
                else:
                    for partial in partials:
                        partial.part_of = final.id
                        await ctx.state.update(partial, locks[partial.id])
            except BaseException:
                # The client gets an error, not this final's URL: leave nothing half-made behind,
                # so that a retry can use the same partials.
                await _undo_final(ctx, final, partials, locks)
                raise
    headers = {"Location": endpoint_url(request, ctx.config.behind_proxy) + final.id}
    if final.finished:
        headers["Upload-Offset"] = str(final.offset)
    return tus_response(201, headers)


async def complete_final(ctx: TusContext, final_id: str) -> UploadInfo | None:
    """Assemble the final upload `final_id` if all its partials are finished; its info after.

    Safe to call any time and from any instance: it does nothing unless there is work to do.
    """
    final = await ctx.state.get(final_id)
    if final is None or final.concat != "final" or final.finished:
        return final
    # Check without the partials' locks first: taking them would make a partial's running PATCH
    # hand over, and a client polling the final must not interrupt its own uploads.
    if await _all_finished(ctx, final.parts) is None:
        return final
    async with held(ctx.locker, final_id) as final_lock:
        final = await ctx.state.get(final_id)
        if final is None or final.concat != "final" or final.finished:
            return final
        async with all_held(ctx.locker, final.parts) as locks:
            partials = await _all_finished(ctx, final.parts)
            if partials is None:
                return final
            await _assemble(ctx, final, final_lock, partials, locks)
        return final


async def try_complete_final(ctx: TusContext, final_id: str) -> UploadInfo | None:
    """`complete_final`, but a failure is logged, not raised: the requests that call it (the
    partial's PATCH, a HEAD on the final) did their own work; the next one retries."""
    try:
        return await complete_final(ctx, final_id)
    except TusError as exc:
        log.warning("final upload %s not assembled yet: %s", final_id, exc.message)
    except Exception:
        log.exception("final upload %s not assembled", final_id)
    return None


async def after_finish(ctx: TusContext, info: UploadInfo) -> None:
    """Called with no lock held once a request finished `info`: complete its final, if any."""
    if info.part_of is not None and info.finished:
        await try_complete_final(ctx, info.part_of)
