"""File hooks: run the executable named after the event in a directory, as tusd's `-hooks-dir`.

For an event, `<dir>/<event>` (e.g. `pre-create`) runs with no arguments, the hook directory as
its working directory, the server's environment plus `TUS_ID`, `TUS_SIZE` and `TUS_OFFSET`, and
the event's JSON (the HTTP hooks' request body) on stdin. Exit status 0: its stdout is the hook
response (JSON; empty = nothing to change). Any other status, or running past the hook timeout
(the process group is killed), is a hook failure: a pre-* hook then answers 500, as in tusd.
Its stderr is logged line by line. No executable for an event = that event is not hooked, so a
directory holding only `post-finish` costs nothing on other events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from pathlib import Path

from tusd_py.hooks.types import HookError, HookEvent, HookResponse, HookType

log = logging.getLogger("tusd_py.hooks")

# As for HTTP answers: a hook response is a small JSON object.
MAX_OUTPUT_BYTES = 64 * 1024
# stderr is for logging; a hook writing more than this has the rest dropped.
MAX_LOG_BYTES = 64 * 1024


class FileHookRunner:
    """Runs the executables of one hook directory."""

    def __init__(self, directory: str, *, timeout: float = 15.0) -> None:
        path = Path(directory)
        if not path.is_dir():
            raise ValueError(f"the hooks directory {directory!r} is not a directory")
        self.directory = path.resolve()
        self.timeout = timeout
        for hook_type in HookType:
            candidate = self.directory / hook_type.value
            if candidate.exists() and not self.handles(hook_type):
                log.warning("%s is not an executable file: the %s event is not hooked",
                            candidate, hook_type.value)  # fmt: skip

    def executable(self, hook_type: HookType) -> Path:
        return self.directory / hook_type.value

    def handles(self, hook_type: HookType) -> bool:
        """Looked up on every event, as tusd does: a script added later is used at once."""
        path = self.executable(hook_type)
        return path.is_file() and os.access(path, os.X_OK)

    async def close(self) -> None:
        pass  # nothing stays open between events

    async def call(self, event: HookEvent) -> HookResponse:
        name = event.type.value
        upload = event.upload
        env = {
            **os.environ,
            "TUS_ID": "" if event.type is HookType.PRE_CREATE else upload.id,
            "TUS_SIZE": str(upload.length or 0),
            "TUS_OFFSET": str(upload.offset),
        }
        payload = json.dumps(event.to_json(), separators=(",", ":")).encode()
        try:
            process = await asyncio.create_subprocess_exec(
                str(self.executable(event.type)),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=self.directory,
                env=env,
                start_new_session=True,  # its own process group, so a timeout kills its children
            )
        except OSError as exc:
            raise HookError(f"could not run {self.executable(event.type)}: {exc}") from exc
        try:
            async with asyncio.timeout(self.timeout):
                output, errors, status = await _communicate(process, payload, name)
        except TimeoutError:
            raise HookError(f"the hook did not exit within {self.timeout:g}s; killed") from None
        finally:
            if process.returncode is None:
                _kill_group(process)
                with contextlib.suppress(ProcessLookupError):
                    await process.wait()
        if status != 0:
            detail = errors.strip().splitlines()[-1] if errors.strip() else "no output on stderr"
            raise HookError(f"the hook exited with status {status}: {detail[:200]}")
        return HookResponse.from_answer(output, "the hook's output")


async def _communicate(
    process: asyncio.subprocess.Process, payload: bytes, name: str
) -> tuple[bytes, str, int]:
    """Feed stdin, read stdout (bounded) and stderr (logged), and wait for the exit status."""
    assert process.stdin and process.stdout and process.stderr

    async def feed() -> None:
        assert process.stdin
        # A hook that does not read its stdin and exits must not fail the event.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            process.stdin.write(payload)
            await process.stdin.drain()
            process.stdin.close()

    async def read_output() -> bytes:
        assert process.stdout
        output = bytearray()
        while chunk := await process.stdout.read(65536):
            output += chunk
            if len(output) > MAX_OUTPUT_BYTES:
                raise HookError(f"the hook's output is larger than {MAX_OUTPUT_BYTES} bytes")
        return bytes(output)

    async def read_errors() -> str:
        assert process.stderr
        kept = bytearray()
        pending = b""
        while chunk := await process.stderr.read(65536):
            if len(kept) >= MAX_LOG_BYTES:
                continue  # drained, no longer kept or logged
            kept += chunk
            *lines, pending = (pending + chunk).split(b"\n")
            _log_lines(name, lines)
        _log_lines(name, [pending])
        return kept.decode("utf-8", errors="replace")

    _, output, errors = await asyncio.gather(feed(), read_output(), read_errors())
    status = await process.wait()
    return output, errors, status


def _log_lines(name: str, lines: list[bytes]) -> None:
    for line in lines:
        text = line.decode("utf-8", errors="replace").rstrip()
        if text:
            log.info("%s hook: %s", name, text)


def _kill_group(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
