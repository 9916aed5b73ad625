from tusd_py.locking.base import Lock, Locker, ReleaseRequest
from tusd_py.locking.memory import MemoryLocker

__all__ = ["Lock", "Locker", "MemoryLocker", "ReleaseRequest"]
