"""`TusRequest`: Starlette's `Request` with its headers looked up in a dict.

A tus request's handlers ask for about ten headers one by one (`Tus-Resumable`, `Upload-Offset`,
`Content-Type`, the method override, ...), and Starlette's `Headers` answers each by lowering
and encoding the name and scanning the raw list. The dict is built once, from the raw list that
stays as it is for everything else (`getlist`, `raw`, iteration).
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import Scope


class LookupHeaders(Headers):
    def __init__(self, scope: Scope) -> None:
        super().__init__(scope=scope)
        # The first of repeated headers, as `Headers.__getitem__` answers.
        first: dict[str, str] = {}
        for name, value in reversed(self._list):
            first[name.decode("latin-1")] = value.decode("latin-1")
        self._first = first

    def get(self, key: str, default: Any = None) -> Any:
        return self._first.get(key.lower(), default)

    def __getitem__(self, key: str) -> str:
        try:
            return self._first[key.lower()]
        except KeyError:
            raise KeyError(key) from None

    def __contains__(self, key: Any) -> bool:
        return isinstance(key, str) and key.lower() in self._first


class TusRequest(Request):
    @property
    def headers(self) -> Headers:
        if not hasattr(self, "_headers"):
            self._headers = LookupHeaders(self.scope)
        return self._headers
