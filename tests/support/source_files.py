"""Files to upload in tests, with the bytes and digest the server must end up storing."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path


class SourceFile:
    """A file to upload, with the bytes and digest the download must match."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = path.read_bytes()
        self.size = len(self.data)
        self.sha256 = hashlib.sha256(self.data).hexdigest()


MakeFile = Callable[[int], SourceFile]
