"""Hooks: Python functions or HTTP webhooks called at each point of an upload's life."""

from tusd_py.hooks.files import FileHookRunner
from tusd_py.hooks.http import HttpHookClient
from tusd_py.hooks.runner import HookFunction, Hooks, HookTransport, UploadStopped
from tusd_py.hooks.types import (
    DEFAULT_HTTP_EVENTS,
    AccessInfo,
    AccessMode,
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
    "AccessInfo",
    "AccessMode",
    "FileHookRunner",
    "FileInfoChanges",
    "HTTPRequestInfo",
    "HTTPResponse",
    "HookError",
    "HookEvent",
    "HookFunction",
    "HookResponse",
    "HookTransport",
    "HookType",
    "Hooks",
    "HttpHookClient",
    "UploadStopped",
    "parse_hook_types",
]
