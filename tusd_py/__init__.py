"""tusd-py: a tus resumable-upload server for local files, S3 or Azure, with state in Redis."""

from tusd_py.app import create_app
from tusd_py.config import Config
from tusd_py.errors import TusError
from tusd_py.info import UploadInfo
from tusd_py.stores.base import Capability, DataStore
from tusd_py.stores.file import FileStore
from tusd_py.stores.memory import MemoryStore

__all__ = [
    "Capability",
    "Config",
    "DataStore",
    "FileStore",
    "MemoryStore",
    "TusError",
    "UploadInfo",
    "create_app",
]
