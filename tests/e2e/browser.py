"""Headless Chromium driven over the Chrome DevTools Protocol (CDP), with `websockets` only.

`Chromium` starts Debian's /usr/bin/chromium with a fresh profile and a DevTools port;
`Page` is one tab: navigate, evaluate JavaScript, set files on an <input type=file>, click like a
mouse, throttle the network, take screenshots. Console messages and page errors are collected so
that a failing test can show them.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

DEVTOOLS = re.compile(r"DevTools listening on (ws://\S+)")
# As root in a sandbox-less container, with no network beyond loopback: see the machine notes.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--window-size=1200,900",
    "--remote-debugging-port=0",
]


def chromium_binary() -> str:
    for candidate in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser"):
        if candidate and (path := shutil.which(candidate)):
            return path
    raise RuntimeError("chromium is not installed; scripts/test installs it (apt-get chromium)")


class CDPError(RuntimeError):
    pass


class Page:
    def __init__(self, ws_url: str) -> None:
        # websockets wants connect() used as a context manager; the page owns that context.
        self._stack = contextlib.ExitStack()
        self._ws: ClientConnection = self._stack.enter_context(
            connect(ws_url, max_size=None, open_timeout=20)
        )
        self._next_id = 0
        self.console: list[str] = []
        self.send("Page.enable")
        self.send("Runtime.enable")

    def close(self) -> None:
        self._stack.close()

    def send(self, method: str, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        call_id = self._next_id
        self._ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self._ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            if message.get("id") == call_id:
                if "error" in message:
                    raise CDPError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self._event(message)

    def _event(self, message: dict[str, Any]) -> None:
        method = message.get("method")
        params = message.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            self.console.append(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            exception = details.get("exception", {}).get("description", details.get("text"))
            self.console.append(f"page error: {exception}")

    def evaluate(self, expression: str) -> Any:
        result = self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise CDPError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0, interval: float = 0.05) -> Any:
        """Evaluate until the value is truthy; returns it."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{expression!r} still falsy after {timeout}s; page console:\n"
                    + "\n".join(self.console[-20:])
                )
            time.sleep(interval)

    def navigate(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'")

    def set_files(self, selector: str, *paths: Path) -> None:
        """What a person choosing files in the file dialog does."""
        root = self.send("DOM.getDocument")["root"]["nodeId"]
        node = self.send("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        if not node:
            raise CDPError(f"no element matches {selector!r}")
        self.send("DOM.setFileInputFiles", nodeId=node, files=[str(p) for p in paths])

    def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element."""
        box = self.evaluate(
            f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
            ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2] })()"
        )
        x, y = box
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def throttle_uploads(self, bytes_per_second: int) -> None:
        self.send("Network.enable")
        self.send(
            "Network.emulateNetworkConditions",
            offline=False,
            latency=0,
            downloadThroughput=-1,
            uploadThroughput=bytes_per_second,
        )

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path


class Chromium:
    def __init__(self) -> None:
        self.profile = tempfile.mkdtemp(prefix="tusd-chromium-")
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [chromium_binary(), *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )
        self._found = threading.Event()
        self.browser_ws = ""
        threading.Thread(target=self._drain, daemon=True).start()
        if not self._found.wait(60) or not self.browser_ws:
            self.close()
            raise RuntimeError("chromium did not report a DevTools URL:\n" + self.output)
        self.devtools = self.browser_ws.split("/devtools/")[0]

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        with self.proc.stderr:
            for line in self.proc.stderr:
                self.lines.append(line.rstrip("\n"))
                if not self._found.is_set() and (m := DEVTOOLS.search(line)):
                    self.browser_ws = m[1]
                    self._found.set()
        self._found.set()

    @property
    def output(self) -> str:
        return "\n".join(self.lines[-50:])

    def new_page(self) -> Page:
        with connect(self.browser_ws, max_size=None, open_timeout=20) as browser:
            browser.send(
                json.dumps(
                    {"id": 1, "method": "Target.createTarget", "params": {"url": "about:blank"}}
                )
            )
            while True:
                message = json.loads(browser.recv(timeout=30))
                if message.get("id") == 1:
                    break
        if "error" in message:
            raise CDPError(f"Target.createTarget: {message['error']}")
        target = message["result"]["targetId"]
        return Page(f"{self.devtools}/devtools/page/{target}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.profile, ignore_errors=True)
