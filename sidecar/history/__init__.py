"""The History API (``GET /v1/history``): callers read their own past requests from the audit trail."""

from .api import mount_history

__all__ = ["mount_history"]
