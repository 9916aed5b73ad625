from tusd_py.state.base import StateStore
from tusd_py.state.local import LocalState

__all__ = ["LocalState", "StateStore"]
