"""Idle kept-alive connections: the client side must close them first (issue 14, finding 16;
issue 15).

A server that closes an idle connection while a client (a proxy's upstream pool, a client
library's pool) sends its next request on it loses that request: no response, and a POST or
PATCH is not retried by nginx. So tusd-py's `--keep-alive-timeout` is longer than what proxies
and pools keep, and the deploy files keep nginx's upstream `keepalive_timeout` below it.
"""

from __future__ import annotations

import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click
import yaml

from tests.support.socket_http import RawHTTP
from tests.support.tus_requests import TUS
from tests.support.tusd_process import TusdProcess
from tusd_py import cli
from tusd_py.config import Config, parse_duration

REPO = Path(__file__).resolve().parents[2]
# What proxies and client pools in front commonly keep idle connections for: nginx's upstream
# keepalive_timeout default and AWS ALB's idle timeout.
COMMON_PROXY_IDLE = 60.0
NGINX_UPSTREAM_DEFAULT = 60.0  # nginx's own default, when the upstream block does not say
OLD_DEFAULT = 5.0
SOAK = os.environ.get("TUSD_SOAK", "") not in ("", "0")


def nginx_upstream_keepalive_timeout(conf: str) -> float:
    """`keepalive_timeout` inside `upstream tusd { ... }` (nginx time units; none = seconds)."""
    block = re.search(r"upstream\s+tusd\s*\{(?P<body>[^}]*)\}", conf)
    assert block is not None, "deploy/nginx.conf has no `upstream tusd` block"
    body = re.sub(r"#[^\n]*", "", block["body"])
    assert re.search(r"^\s*keepalive\s+\d+\s*;", body, re.M), "nginx keeps no upstream connections"
    found = re.search(r"^\s*keepalive_timeout\s+(\S+)\s*;", body, re.M)
    return parse_duration(found[1]) if found else NGINX_UPSTREAM_DEFAULT


def cli_default(name: str) -> str:
    (option,) = [p for p in cli.main.params if isinstance(p, click.Option) and p.name == name]
    return str(option.default)


def test_the_default_outlasts_what_proxies_and_pools_keep() -> None:
    default = Config().keep_alive_timeout
    assert parse_duration(cli_default("keep_alive_timeout")) == default
    assert default > COMMON_PROXY_IDLE, default


def test_nginx_closes_idle_upstream_connections_before_tusd_py_does() -> None:
    nginx = nginx_upstream_keepalive_timeout(
        (REPO / "deploy/nginx.conf").read_text(encoding="utf-8")
    )
    compose = yaml.safe_load((REPO / "deploy/compose.yaml").read_text(encoding="utf-8"))
    environment = compose["services"]["tusd"]["environment"]
    configured = environment.get("TUSD_KEEP_ALIVE_TIMEOUT")
    tusd = parse_duration(str(configured)) if configured else Config().keep_alive_timeout
    assert (
        "./nginx.conf:/etc/nginx/conf.d/default.conf:ro" in compose["services"]["nginx"]["volumes"]
    )
    # A second of margin: the two timers start at slightly different moments.
    assert nginx + 1 <= tusd, f"nginx keeps idle upstream connections {nginx}s, tusd-py {tusd}s"


def create_on(conn: RawHTTP) -> int:
    """A creation on this connection, kept alive; its status (ConnectionError when the server
    closed the connection instead of answering)."""
    conn.send_head("POST", {**TUS, "Upload-Length": 10, "Content-Length": 0})
    return conn.read_response().status


def idle_then_create(endpoint: str, idle: float) -> int | str:
    with RawHTTP(endpoint, timeout=10) as conn:
        assert create_on(conn) == 201
        time.sleep(idle)
        try:
            return create_on(conn)
        except (ConnectionError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}"


IDLE = [OLD_DEFAULT - 0.05, OLD_DEFAULT, OLD_DEFAULT + 0.05, OLD_DEFAULT + 1, 2 * OLD_DEFAULT]
if SOAK:
    IDLE.append(COMMON_PROXY_IDLE + 1)  # past nginx's and ALB's idle timeout


def test_a_pooled_connection_idle_past_the_old_default_is_served(tmp_path: Path) -> None:
    """On the default configuration, a request sent on a kept-alive connection after 5 s (the
    old default, where the server used to be closing it) and well after is answered."""
    server = TusdProcess(tmp_path / "uploads", ())
    try:
        with ThreadPoolExecutor(len(IDLE)) as pool:
            statuses = dict(
                zip(
                    IDLE,
                    pool.map(lambda i: idle_then_create(server.endpoint, i), IDLE),
                    strict=True,
                )
            )
    finally:
        server.stop()
    assert statuses == {idle: 201 for idle in IDLE}, statuses


def test_an_idle_connection_is_still_closed_after_the_timeout(tmp_path: Path) -> None:
    """The timeout still bounds what an idle connection costs."""
    server = TusdProcess(tmp_path / "uploads", ("--keep-alive-timeout", "1s"))
    try:
        with RawHTTP(server.endpoint, timeout=10) as conn:
            assert create_on(conn) == 201
            started = time.monotonic()
            assert conn.sock.recv(100) == b""  # the server closed it
            closed_after = time.monotonic() - started
    finally:
        server.stop()
    assert 0.8 < closed_after < 3.0, closed_after
