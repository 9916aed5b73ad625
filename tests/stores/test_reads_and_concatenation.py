"""The contract, part 3: reading finished uploads and concatenating them."""

from __future__ import annotations

from tests.stores.conftest import Medium
from tests.stores.helpers import new_info, read, stored_bytes, uploaded
from tests.support.payloads import payload, sha256
from tusd_py.stores.base import Concatenater, DataStore

READ_LENGTH = 1024 * 1024 + 1000


async def test_read_ranges(store: DataStore) -> None:
    data = payload(READ_LENGTH)
    info = await uploaded(store, data)
    ranges = [(0, READ_LENGTH), (10, 20), (1000, READ_LENGTH), (READ_LENGTH - 1, READ_LENGTH)]
    for start, end in ranges:
        assert b"".join(await read(store, info, start, end)) == data[start:end], (start, end)
    assert await read(store, info, 5, 5) in ([], [b""]), "an empty range yields no bytes"


async def test_read_streams(medium: Medium, store: DataStore) -> None:
    length = 2 * medium.unit + 1000
    info = await uploaded(store, payload(length))
    pieces = await read(store, info, 0, length)
    assert len(pieces) > 1, "a read of a few units arrives in pieces, not whole"


async def test_concatenate_is_safe_to_run_again(medium: Medium, store: DataStore) -> None:
    pieces = [payload(medium.unit + 7, 1), payload(1000, 2), payload(medium.unit // 2, 3)]
    partials = [await uploaded(store, piece, "partial") for piece in pieces]
    final = new_info(sum(map(len, pieces)), "final")
    final.parts = [p.id for p in partials]
    await store.create(final)
    assert isinstance(store, Concatenater)
    await store.concatenate(final, partials)
    await store.concatenate(final, partials)
    final.offset = final.length or 0
    await store.save_info(final)
    await store.finish(final)
    assert sha256(await stored_bytes(store, final)) == sha256(b"".join(pieces))
