"""Hooks: Python functions or HTTP webhooks called at each point of an upload's life."""

from tusd_py.hooks.http import HttpHookClient
from tusd_py.hooks.runner import HookFunction, Hooks, UploadStopped
from tusd_py.hooks.types import (
    DEFAULT_HTTP_EVENTS,
    FileInfoChanges,
    HookError,
    HookEvent,
    HookResponse,
    HookType,
    HTTPRequestInfo,
    HTTPResponse,
    parse_hook_types,
)

__all__ = [
    "DEFAULT_HTTP_EVENTS",
    "FileInfoChanges",
    "HTTPRequestInfo",
    "HTTPResponse",
    "HookError",
    "HookEvent",
    "HookFunction",
    "HookResponse",
    "HookType",
    "Hooks",
    "HttpHookClient",
    "UploadStopped",
    "parse_hook_types",
]
