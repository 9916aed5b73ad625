from tusd_py.stores.base import Capability, Commit, DataStore
from tusd_py.stores.file import FileStore
from tusd_py.stores.memory import MemoryStore

__all__ = ["Capability", "Commit", "DataStore", "FileStore", "MemoryStore"]
