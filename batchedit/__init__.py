"""batchedit: safely rewrite historical one-to-one Tencent Cloud IM messages at scale."""

from batchedit.auth import Secret, SigSource
from batchedit.client import ImClient, Reply, RoamMessage, redact, resolve_endpoint
from batchedit.errors import ApiError, BatchEditError, ConfigError, ErrorClass, classify
from batchedit.history import iter_history
from batchedit.usersig import SigVerdict

__all__ = [
    "ApiError",
    "BatchEditError",
    "ConfigError",
    "ErrorClass",
    "ImClient",
    "Reply",
    "RoamMessage",
    "Secret",
    "SigSource",
    "SigVerdict",
    "classify",
    "iter_history",
    "redact",
    "resolve_endpoint",
]
