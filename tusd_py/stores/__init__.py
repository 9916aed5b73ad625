from tusd_py.stores.base import Capability, Commit, DataStore
from tusd_py.stores.file import FileStore

__all__ = ["Capability", "Commit", "DataStore", "FileStore"]
