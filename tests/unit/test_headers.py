"""Property tests for tus header parsing: what is accepted, and that nothing else escapes."""

from __future__ import annotations

import base64
import string
from email.utils import parsedate_to_datetime

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tusd_py.errors import TusError
from tusd_py.metadata import encode_metadata, parse_metadata
from tusd_py.protocol.download import parse_range
from tusd_py.protocol.headers import (
    MAX_UINT,
    TUS_VERSION,
    check_tus_resumable,
    http_date,
    parse_uint,
)

ASCII_DIGITS = frozenset(string.digits)

# Header values arrive as latin-1 text; arbitrary unicode covers that and more.
any_text = st.text(st.characters(exclude_categories=["Cs"]))
# Text made of the characters tus headers are built from, so parsers get past their first check.
header_like = st.text(alphabet="0123456789 ,=+/-abcxyzZm9vAB\t;")
metadata_keys = st.text(
    st.characters(exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp")), min_size=1
).filter(lambda k: "," not in k and not any(c.isspace() for c in k))


def assert_bad_request(error: TusError) -> None:
    assert error.status == 400
    assert error.message


# --- parse_uint --------------------------------------------------------------------------------


@given(st.integers(min_value=0, max_value=MAX_UINT))
@example(0)
@example(MAX_UINT)
def test_parse_uint_round_trips_every_allowed_integer(n: int) -> None:
    assert parse_uint("Upload-Offset", str(n)) == n


@given(st.integers(min_value=MAX_UINT + 1))
def test_parse_uint_rejects_integers_past_the_cap(n: int) -> None:
    with pytest.raises(TusError) as info:
        parse_uint("Upload-Length", str(n))
    assert_bad_request(info.value)


@given(st.integers(min_value=1))
def test_parse_uint_rejects_negative_integers(n: int) -> None:
    with pytest.raises(TusError) as info:
        parse_uint("Upload-Length", str(-n))
    assert_bad_request(info.value)


@given(st.one_of(any_text, header_like))
@example("")
@example(" 1")
@example("1 ")
@example("+1")
@example("1.0")
@example("1e3")
@example("0x10")
@example("١٢٣")  # Arabic-Indic digits: int() takes them, tus does not
@example("²")
@example("1_000")
def test_parse_uint_accepts_plain_ascii_decimal_only(text: str) -> None:
    try:
        value = parse_uint("Upload-Offset", text)
    except TusError as error:
        assert_bad_request(error)
        assert not (text and set(text) <= ASCII_DIGITS and len(text) <= 18)
        return
    assert text and set(text) <= ASCII_DIGITS
    assert value == int(text) <= MAX_UINT


# --- Upload-Metadata ---------------------------------------------------------------------------


@given(st.dictionaries(metadata_keys, any_text, max_size=8))
def test_metadata_round_trips(metadata: dict[str, str]) -> None:
    assert parse_metadata(encode_metadata(metadata)) == metadata


@given(st.dictionaries(metadata_keys, any_text, min_size=1, max_size=8))
def test_metadata_round_trips_with_spaces_after_commas(metadata: dict[str, str]) -> None:
    assert parse_metadata(encode_metadata(metadata).replace(",", ", ")) == metadata


@given(st.dictionaries(metadata_keys, st.just(""), min_size=1, max_size=5))
def test_empty_values_may_keep_their_space(metadata: dict[str, str]) -> None:
    header = ",".join(f"{key} " for key in metadata)
    assert parse_metadata(header) == metadata


@given(metadata_keys, any_text, any_text)
def test_duplicate_keys_are_rejected(key: str, first: str, second: str) -> None:
    header = encode_metadata({key: first}) + "," + encode_metadata({key: second})
    with pytest.raises(TusError) as info:
        parse_metadata(header)
    assert_bad_request(info.value)


@given(metadata_keys, st.binary(min_size=1))
def test_unpadded_or_truncated_base64_is_rejected(key: str, value: bytes) -> None:
    encoded = base64.b64encode(value).decode()
    broken = encoded.rstrip("=") if encoded.endswith("=") else encoded[:-1]
    with pytest.raises(TusError) as info:
        parse_metadata(f"{key} {broken}")
    assert_bad_request(info.value)


@given(st.one_of(any_text, header_like))
@example("")
@example(",")
@example("k Zm9v YmFy")
@example("k \x00")
@example("k /w==")  # valid base64, invalid UTF-8
def test_metadata_parsing_only_ever_fails_with_a_400(text: str) -> None:
    try:
        result = parse_metadata(text)
    except TusError as error:
        assert_bad_request(error)
        return
    assert all(key and "," not in key and " " not in key for key in result)


# --- Tus-Resumable -----------------------------------------------------------------------------


@given(st.one_of(st.none(), any_text))
def test_only_the_supported_version_passes(value: str | None) -> None:
    try:
        check_tus_resumable(value)
    except TusError as error:
        assert error.status == 412
        assert error.headers["Tus-Version"] == TUS_VERSION
        assert value != TUS_VERSION
        return
    assert value == TUS_VERSION


# --- dates -------------------------------------------------------------------------------------


@given(st.integers(min_value=0, max_value=2**33))
def test_http_date_is_an_imf_fixdate_that_parses_back(epoch: int) -> None:
    value = http_date(epoch)
    assert value.endswith(" GMT")
    assert parsedate_to_datetime(value).timestamp() == epoch


# --- Range (downloads) -------------------------------------------------------------------------

range_headers = st.one_of(
    any_text,
    st.builds(
        lambda a, b: f"bytes={a}-{b}",
        st.one_of(st.just(""), st.integers(0, 2**70).map(str), st.text("0123456789", max_size=30)),
        st.one_of(st.just(""), st.integers(0, 2**70).map(str), st.text("0123456789", max_size=30)),
    ),
)
sizes = st.one_of(st.integers(0, 20), st.integers(0, 2**63 - 1))


@given(range_headers, sizes)
@example("bytes=-1", 0)
@example("bytes=0-0", 0)
@example("bytes=0-", 0)
@example("bytes=5-", 5)
@example("bytes=-0", 3)
@example("bytes=" + "9" * 5000 + "-", 10)
def test_parse_range_never_returns_an_out_of_bounds_range(header: str, size: int) -> None:
    try:
        result = parse_range(header, size)
    except TusError as error:
        assert error.status == 416
        assert error.headers["Content-Range"] == f"bytes */{size}"
        return
    if result is not None:
        start, end = result
        assert 0 <= start < end <= size


@given(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(1, 10**6))
def test_parse_range_serves_exactly_the_satisfiable_part(first: int, last: int, size: int) -> None:
    header = f"bytes={first}-{last}"
    if last < first:
        assert parse_range(header, size) is None  # invalid: ignored, the whole body is sent
    elif first >= size:
        with pytest.raises(TusError):
            parse_range(header, size)
    else:
        assert parse_range(header, size) == (first, min(last + 1, size))


@given(st.integers(1, 10**6), st.integers(1, 10**6))
def test_parse_range_suffix(suffix: int, size: int) -> None:
    assert parse_range(f"bytes=-{suffix}", size) == (max(0, size - suffix), size)


def test_parse_range_without_header_sends_everything() -> None:
    assert parse_range(None, 10) is None
