from tusd_py.locking.base import HolderReader, Lock, Locker, ReleaseRequest
from tusd_py.locking.memory import MemoryLocker

__all__ = ["HolderReader", "Lock", "Locker", "MemoryLocker", "ReleaseRequest"]
