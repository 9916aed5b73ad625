"""The demo page (`--demo`): drop files, watch them upload (speed, time left), pause, resume
(after a page reload too), cancel, download.

Its uploader is tusd_py/static/tus-client.js, our own small tus client: no third-party code, no
CDN, so the page works offline and shows exactly what this server expects from a client.
"""

from __future__ import annotations

import html
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from tusd_py.config import Config

STATIC_DIR = Path(__file__).parent / "static"
STATIC_PATH = "/demo-static"

# Everything the page needs comes from this origin; the tus endpoint may be elsewhere (CORS).
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src *; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def demo_routes(config: Config) -> list[BaseRoute]:
    template = (STATIC_DIR / "demo.html").read_text(encoding="utf-8")

    async def page(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        body = template.replace("{{endpoint}}", html.escape(root + config.base_path)).replace(
            "{{static}}", html.escape(root + STATIC_PATH)
        )
        return HTMLResponse(
            body,
            headers={
                "Content-Security-Policy": _CSP,
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "no-store",
            },
        )

    return [
        Route("/", page, methods=["GET"]),
        Mount(STATIC_PATH, app=StaticFiles(directory=STATIC_DIR), name="demo-static"),
    ]
