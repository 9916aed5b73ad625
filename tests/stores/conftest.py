"""The store contract suite runs on every store: one entry per store in `STORES`.

An entry builds, for one test, a medium (a dict, a temp directory, a bucket) and says how to make
stores over it; `Medium.open()` opens another instance over the same medium, which must see what
the first one stored (that is how a restart or a second process sees it). `unit` is a size the
store cuts uploads by (the file store's commit interval, an S3 part, half an Azure block):
payloads are a few units, so every store cuts them the way it cuts real uploads. Adding a store
is one entry; `config_store` serves any store the app's store table builds from a `Config`.

What a medium cannot do is a property of the entry, and the one case it changes says how
(`undoes_landed_bytes`); no case is skipped or expected to fail for a store.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.s3_client import new_bucket
from tusd_py.app import build_store, store_class
from tusd_py.config import Config
from tusd_py.stores.base import Capability, DataStore
from tusd_py.stores.memory import MemoryStore, MemoryUpload

KIB = 1024
MIB = 1024 * KIB
EVERY_CAPABILITY = frozenset(Capability)


@dataclass
class Medium:
    """Where one test's uploads live, and how to open stores over it."""

    make: Callable[[], DataStore]
    unit: int
    capabilities: frozenset[Capability]
    #: False when bytes that reached the medium cannot be taken back after a failed write
    #: (S3 parts): `stored_offset` may then count them (base.py `DataStore.write`).
    undoes_landed_bytes: bool = True
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    async def open(self) -> DataStore:
        """A new, opened store over this medium (closed when the test ends)."""
        store = self.make()
        await store.open()
        self._stack.push_async_callback(store.close)
        return store


MediumFactory = Callable[[pytest.FixtureRequest, Path], Medium]


def memory(request: pytest.FixtureRequest, tmp_path: Path) -> Medium:
    uploads: dict[str, MemoryUpload] = {}
    return Medium(lambda: MemoryStore(uploads), 256 * KIB, EVERY_CAPABILITY)


def config_store(
    options: Callable[[pytest.FixtureRequest, Path], dict[str, Any]],
    unit: int,
    capabilities: frozenset[Capability] = EVERY_CAPABILITY,
    undoes_landed_bytes: bool = True,
) -> MediumFactory:
    """A medium for a store that the app builds from its options (`tusd_py.app.STORES`)."""

    def medium(request: pytest.FixtureRequest, tmp_path: Path) -> Medium:
        config = Config(**options(request, tmp_path))
        return Medium(lambda: build_store(config), unit, capabilities, undoes_landed_bytes)

    return medium


def file_options(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    return {"upload_dir": str(tmp_path / "uploads")}


def s3_options(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    server = request.getfixturevalue("s3")  # moto's server, started on first use
    options = {
        "s3_bucket": new_bucket(server),
        "s3_endpoint": server.endpoint,
        "s3_region": "us-east-1",
        "s3_part_size": 5 * MIB,  # S3's minimum
        # A deferred length gets parts that fit max_size in 10,000 parts: 5 MiB here, not the
        # 550 MiB that S3's 5 TiB object limit would need.
        "max_size": 1024 * MIB,
    }
    # A fresh botocore session loads the S3 service model again (~0.5 s a store); one is enough.
    from aiobotocore.session import get_session

    package = store_class(Config(**options)).__module__.rpartition(".")[0]
    for name, module in list(sys.modules.items()):
        if name.startswith(package) and getattr(module, "get_session", None) is get_session:
            request.getfixturevalue("monkeypatch").setattr(module, "get_session", _shared_session)
    return options


@functools.cache
def _shared_session() -> Any:
    from aiobotocore.session import get_session

    return get_session()


def azure_options(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    from tests.support.azurite import unique_container

    server = request.getfixturevalue("azurite")  # started on first use
    request.getfixturevalue("monkeypatch").setenv(
        "AZURE_STORAGE_CONNECTION_STRING", server.connection_string
    )
    return {
        "azure_container": unique_container(),
        "azure_endpoint": server.endpoint,
        "max_size": 1024 * MIB,
    }


STORES: dict[str, MediumFactory] = {
    "memory": memory,
    "file": config_store(file_options, unit=4 * MIB),
    # S3 cannot delete a part that landed while the failed write was cancelling its upload.
    "s3": config_store(s3_options, unit=5 * MIB, undoes_landed_bytes=False),
    "azure": config_store(azure_options, unit=4 * MIB),
}


@pytest.fixture(params=list(STORES))
async def medium(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Medium]:
    medium = STORES[request.param](request, tmp_path)
    async with medium._stack:
        yield medium


@pytest.fixture
async def store(medium: Medium) -> DataStore:
    return await medium.open()
