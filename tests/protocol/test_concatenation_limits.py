"""What a final upload may cost: `--max-concat-parts`, and every check before any lock.

Issue 14, finding 7: a final naming thousands of partial ids used to take every partial's lock,
one after another, before the first lookup found that the first id did not exist.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.protocol.conftest import TusFactory, TusServer
from tests.protocol.helpers import assert_plain_error, head, upload
from tests.protocol.test_concatenation import assert_content, final, partial


def unknown_id() -> str:
    return secrets.token_hex(16)


def count_calls(monkeypatch: pytest.MonkeyPatch, target: Any, name: str) -> list[str]:
    """The first argument of every call of `target.name` from now on (an upload id)."""
    calls: list[str] = []
    original: Callable[..., Any] = getattr(target, name)

    async def counted(upload_id: str, *args: Any) -> Any:
        calls.append(upload_id)
        return await original(upload_id, *args)

    monkeypatch.setattr(target, name, counted)
    return calls


def count_locks(monkeypatch: pytest.MonkeyPatch, server: TusServer) -> list[str]:
    return count_calls(monkeypatch, server.ctx.locker, "acquire")


async def test_more_partials_than_the_limit_is_400(tus_factory: TusFactory) -> None:
    server = await tus_factory(max_concat_parts=2)
    urls = [await partial(server.client, bytes([65 + n]) * 3) for n in range(3)]
    response = await final(server.client, *urls)
    assert_plain_error(response, 400)
    assert "names 3 partial uploads" in response.text
    assert "at most 2 (--max-concat-parts)" in response.text
    for url in urls:  # untouched, and usable within the limit
        assert (await head(server.client, url)).headers["Upload-Offset"] == "3"
    made = await final(server.client, *urls[:2])
    assert made.status_code == 201, made.text
    await assert_content(server.client, made.headers["Location"], b"AAABBB")


async def test_the_limit_is_checked_before_any_lookup(
    tus_factory: TusFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await tus_factory()
    limit = server.config.max_concat_parts
    assert limit == 1000
    lookups = count_calls(monkeypatch, server.ctx.state, "get")
    locks = count_locks(monkeypatch, server)
    response = await final(server.client, *(unknown_id() for _ in range(limit + 1)))
    assert_plain_error(response, 400)
    assert f"at most {limit}" in response.text
    assert (lookups, locks) == ([], [])


async def test_thousands_of_unknown_ids_cost_a_few_lookups_and_no_lock(
    tus_factory: TusFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await tus_factory(max_concat_parts=10_000)
    ids = [unknown_id() for _ in range(10_000)]
    lookups = count_calls(monkeypatch, server.ctx.state, "get")
    locks = count_locks(monkeypatch, server)
    response = await final(server.client, *ids)
    assert_plain_error(response, 404)
    assert repr(ids[0]) in response.text  # the first problem, in the order given
    assert locks == []
    assert 0 < len(lookups) <= 16, len(lookups)


@pytest.mark.parametrize("bad", ["unknown", "not-partial", "claimed"])
async def test_an_unusable_last_partial_is_refused_without_a_lock(
    tus_factory: TusFactory, monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    """Good partials first, the bad one last (past the first lookup window): refused after the
    lookups, before any lock, and the good partials stay usable."""
    server = await tus_factory()
    client = server.client
    good = [await partial(client, b"ab") for _ in range(20)]
    if bad == "unknown":
        last, status, text = f"/files/{unknown_id()}", 404, "does not exist"
    elif bad == "not-partial":
        last, status, text = await upload(client, b"plain"), 400, "Upload-Concat: partial"
    else:
        last = await partial(client, b"cd", finish=False)
        assert (await final(client, last)).status_code == 201  # claimed by that final
        status, text = 400, "already belongs"
    locks = count_locks(monkeypatch, server)
    response = await final(client, *good, last)
    assert_plain_error(response, status)
    assert text in response.text
    assert locks == []
    made = await final(client, *good)
    assert made.status_code == 201, made.text
    await assert_content(client, made.headers["Location"], b"ab" * 20)


async def test_the_first_problem_in_order_is_the_answer(client: httpx.AsyncClient) -> None:
    plain = await upload(client, b"plain")
    missing = f"/files/{unknown_id()}"
    assert_plain_error(await final(client, missing, plain), 404)
    assert_plain_error(await final(client, plain, missing), 400)


async def test_two_finals_racing_for_the_same_partials(client: httpx.AsyncClient) -> None:
    """Both pass the checks without locks; under the locks (taken in the same order, so they
    cannot deadlock) the second finds the partials claimed or consumed."""
    for finish in (False, True):
        urls = [await partial(client, bytes([70 + n]) * 4, finish=finish) for n in range(5)]
        answers = await asyncio.gather(final(client, *urls), final(client, *reversed(urls)))
        statuses = sorted(a.status_code for a in answers)
        assert statuses[0] == 201, [a.text for a in answers]
        assert statuses[1] in (400, 404), [a.text for a in answers]


@pytest.mark.parametrize("value", ["0", "-5"])
def test_a_limit_below_one_is_one_line_and_status_2(value: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tusd_py", "--port", "0", "--max-concat-parts", value],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    line = done.stderr.strip()
    assert line.startswith("tusd-py: error: ") and "\n" not in line, line
    assert f"at least 1 partial, got {value}" in line and "--max-concat-parts" in line
    assert "listening" not in done.stdout
