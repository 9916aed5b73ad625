"""The file store's index of unfinished and finished uploads (layout in stores/file.py).

Entries are empty files, so the sweep lists a directory instead of reading every `.info`: the
unfinished ones to check their expiry, and the minutes of finished ones older than the
retention. A finished entry sits in the directory of the minute its upload finished; the data
file's mtime is set to that moment, so `terminate` finds the entry from one `stat`, and the
minute straddling a retention cutoff is sorted by mtime.

Every operation here blocks; the store runs them on the loop or in a thread.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tusd_py.ids import is_valid_upload_id
from tusd_py.info import UploadInfo

# Finished entries are grouped by this many seconds of finishing time: a sweep lists the
# groups past the cutoff whole, and stats the entries of the one group the cutoff falls in.
GROUP = 60
_NS = 1_000_000_000


def _group(mtime_ns: int) -> int:
    return mtime_ns // _NS // GROUP * GROUP


def _touch(path: Path) -> None:
    try:
        path.touch()
    except FileNotFoundError:  # the directory was removed (an empty group, or by hand)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


class FileIndex:
    def __init__(self, directory: Path) -> None:
        self.root = directory / ".index"
        self.unfinished = self.root / "unfinished"
        self.finished = self.root / "finished"
        self._built = self.root / "built"

    def open(self) -> None:
        new = not self.root.exists()
        self.unfinished.mkdir(parents=True, exist_ok=True)
        self.finished.mkdir(parents=True, exist_ok=True)
        if new and not any(name.endswith(".info") for name in os.listdir(self.root.parent)):
            self._built.touch()  # nothing stored before the index: nothing to build

    # -- kept up to date by the store ---------------------------------------------------------

    def created(self, upload_id: str) -> None:
        """Before the upload's files exist: an unfinished upload is never missing here."""
        _touch(self.unfinished / upload_id)

    def finished_entry(self, upload_id: str, data: Path) -> Path:
        return self.finished / str(_group(data.stat().st_mtime_ns)) / upload_id

    def finished_now(self, upload_id: str, data: Path) -> None:
        """The upload finished: stamp its data file and move its entry (idempotent)."""
        if not self.finished_entry(upload_id, data).exists():
            now = time.time_ns()
            os.utime(data, ns=(now, now))
            _touch(self.finished_entry(upload_id, data))
        _unlink(self.unfinished / upload_id)

    def removed(self, upload_id: str, data: Path) -> None:
        """Before the upload's data file goes (its mtime names the finished entry)."""
        with contextlib.suppress(FileNotFoundError):
            _unlink(self.finished_entry(upload_id, data))
        _unlink(self.unfinished / upload_id)

    def forget_unfinished(self, upload_id: str) -> None:
        _unlink(self.unfinished / upload_id)

    def finished_at(self, upload_id: str, data: Path) -> float | None:
        try:
            entry = self.finished_entry(upload_id, data)
            return data.stat().st_mtime_ns / _NS if entry.exists() else None
        except FileNotFoundError:
            return None

    # -- read by the sweep --------------------------------------------------------------------

    def unfinished_ids(self) -> list[str]:
        return sorted(name for name in os.listdir(self.unfinished) if is_valid_upload_id(name))

    def finished_before(self, cutoff: float, data: Callable[[str], Path]) -> list[str]:
        """Ids of uploads that finished before `cutoff`; drops the entries of vanished uploads
        and empty groups on the way (each only ever looked at past the cutoff)."""
        found: list[str] = []
        for name in os.listdir(self.finished):
            if not name.isdigit() or int(name) >= cutoff:
                continue
            group = self.finished / name
            names = [n for n in os.listdir(group) if is_valid_upload_id(n)]
            if not names:
                with contextlib.suppress(OSError):  # a finish may have just written into it
                    group.rmdir()
            whole = int(name) + GROUP <= cutoff
            for upload_id in names:
                path = data(upload_id)
                if not path.with_name(upload_id + ".info").exists():
                    _unlink(group / upload_id)  # left by a crash inside `terminate`
                    continue
                try:
                    if whole or path.stat().st_mtime_ns / _NS < cutoff:
                        found.append(upload_id)
                except FileNotFoundError:
                    continue
        return found

    def build_once(self, infos: Callable[[], Iterator[tuple[str, UploadInfo | None]]]) -> None:
        """Enter the uploads stored before the index existed, once per directory.

        Several instances may build at once, and uploads may finish meanwhile: an entry made
        here for an upload that has just finished or gone is dropped by the sweep later."""
        if self._built.exists():
            return
        for upload_id, info in infos():
            if info is None:
                continue
            data = self.root.parent / upload_id
            try:
                if not info.finished:
                    _touch(self.unfinished / upload_id)
                elif not self.finished_entry(upload_id, data).exists():
                    _touch(self.finished_entry(upload_id, data))
            except FileNotFoundError:
                continue  # deleted meanwhile
        self._built.touch()
