"""Checks that touch the machine before the server listens: the upload directory and the socket.

Each failure is a `ConfigError` naming the option to change, so the CLI can print one line and
exit 2 instead of a traceback from deep inside uvicorn or the file store.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import tempfile

from redis import exceptions as rexc

from tusd_py.config import Config
from tusd_py.redis_connect import client_for, refusal
from tusd_py.validation import ConfigError

REDIS_CHECK_TIMEOUT = 5.0


def check_upload_dir(path: str) -> None:
    """Create the directory if needed and prove that a file can be written in it (a read-only
    mount passes every permission check as root, and would fail only on the first upload)."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the upload directory {path}: {exc.strerror or exc}", "upload_dir"
        ) from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".tusd-py-write-check-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(
            f"cannot write in the upload directory {path}: {exc.strerror or exc}", "upload_dir"
        ) from None


def check_redis(config: Config) -> None:
    """Refuse credentials Redis (or Sentinel) rejects and certificates that do not verify: no
    retry fixes those. Redis unreachable is left to the start-up warning (it may come up)."""
    if config.redis_url is None:
        return
    problem = asyncio.run(_redis_refusal(config))
    if problem is None:
        return
    what, field = problem
    if field in ("redis_password", "redis_username") and not config.redis_password:
        field = "redis_url"  # the credentials came in the URL
    raise ConfigError(what, field)


async def _redis_refusal(config: Config) -> tuple[str, str] | None:
    client = client_for(config, max_connections=1)
    try:
        async with asyncio.timeout(REDIS_CHECK_TIMEOUT):
            await client.ping()
    except (rexc.RedisError, OSError, TimeoutError) as exc:
        return refusal(exc)
    finally:
        await client.aclose()
    return None


def listening_socket(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A socket bound to host:port and listening, or a `ConfigError` saying why not."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ConfigError(f"cannot resolve the host {host!r}: {exc.strerror}", "host") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise _bind_error(host, port, exc) from None
    return sock


def _bind_error(host: str, port: int, exc: OSError) -> ConfigError:
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(f"port {port} on {host} is already in use", "port")
    if exc.errno == errno.EADDRNOTAVAIL:
        return ConfigError(f"{host} is not an address of this machine", "host")
    if exc.errno == errno.EACCES:
        return ConfigError(
            f"no permission to listen on port {port} (ports below 1024 need root or "
            "CAP_NET_BIND_SERVICE)",
            "port",
        )
    return ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", "port")
