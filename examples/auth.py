"""Authentication for tusd-py: a bearer-token middleware and a signed-URL pre-create hook.

Run it with `uvicorn examples.auth:app`. Two complementary checks:

- `BearerAuth` (ASGI middleware) guards every request to the tus endpoint, so HEAD, PATCH and
  DELETE of an upload need the same credentials as its creation.
- `signed_creation` (pre-create hook) accepts a creation only through a URL your application
  signed: `?expires=<unix time>&signature=<hex HMAC-SHA256>`. Hand that URL to the client as its
  tus endpoint; it stops working at `expires`.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from tusd_py import Config, create_app
from tusd_py.hooks import FileInfoChanges, HookEvent, HookResponse, HTTPResponse

# Returns the user a token belongs to, or None for a bad token.
TokenCheck = Callable[[str], str | None]


class BearerAuth:
    """Answers 401 unless `Authorization: Bearer <token>` names a user.

    CORS preflights (OPTIONS) and the probes pass: browsers send no credentials on a preflight,
    and load balancers none on a probe.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        check: TokenCheck,
        realm: str = "uploads",
        public_paths: frozenset[str] = frozenset({"/health", "/ready"}),
    ) -> None:
        self.app = app
        self.check = check
        self.realm = realm
        self.public_paths = public_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] == "OPTIONS"
            or scope["path"] in self.public_paths
        ):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        user = self.check(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            response = PlainTextResponse(
                "a valid bearer token is required\n",
                status_code=401,
                headers={
                    "WWW-Authenticate": f'Bearer realm="{self.realm}"',
                    "Tus-Resumable": "1.0.0",
                },
            )
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["user"] = user
        await self.app(scope, receive, send)


def sign(secret: bytes, method: str, path: str, expires: int) -> str:
    message = f"{method}\n{path}\n{expires}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def signed_url(secret: bytes, endpoint_path: str, valid_for: float = 3600) -> str:
    """What your application hands a client: the creation URL, signed for a while."""
    expires = int(time.time() + valid_for)
    signature = sign(secret, "POST", endpoint_path, expires)
    return f"{endpoint_path}?expires={expires}&signature={signature}"


def signed_creation(secret: bytes) -> Callable[[HookEvent], HookResponse]:
    """A pre-create hook: reject creations whose URL is not signed, or no longer valid."""

    def pre_create(event: HookEvent) -> HookResponse:
        url = urlsplit(event.request.uri)
        query = parse_qs(url.query)
        try:
            expires = int(query["expires"][0])
            signature = query["signature"][0]
        except (KeyError, ValueError):
            return _reject(403, "this upload URL is not signed")
        expected = sign(secret, event.request.method, url.path, expires)
        if not hmac.compare_digest(signature, expected):
            return _reject(403, "this upload URL's signature is wrong")
        if expires < time.time():
            return _reject(403, "this upload URL has expired; ask for a new one")
        # Record who may see the upload later; hooks and HEAD both show the metadata.
        owner = event.request.header("X-Forwarded-User") or "signed-url"
        return HookResponse(
            change_file_info=FileInfoChanges(metadata={**event.upload.metadata, "owner": owner})
        )

    return pre_create


def _reject(status: int, message: str) -> HookResponse:
    return HookResponse(reject_upload=True, http_response=HTTPResponse(status, message + "\n"))


# An app with both checks. Real tokens come from your identity provider, secrets from a vault.
SECRET = b"change me: at least 32 random bytes"
TOKENS = {"token-for-ana": "ana"}

tus = create_app(Config(upload_dir="./data"), hooks={"pre-create": signed_creation(SECRET)})
app = BearerAuth(tus, check=TOKENS.get)
