"""batchedit: safely rewrite historical one-to-one Tencent Cloud IM messages at scale."""

from batchedit.backup import undo_edits
from batchedit.im.auth import Secret, SigSource
from batchedit.im.client import ImClient, Reply, RoamMessage, redact, resolve_endpoint
from batchedit.im.errors import ApiError, ConfigError, ErrorClass, classify
from batchedit.im.errors import ImError as BatchEditError
from batchedit.im.history import find_message, iter_history
from batchedit.im.tls import client_context
from batchedit.im.usersig import SigVerdict
from batchedit.outcomes import Outcome, Status, Summary
from batchedit.plan import PlanStats, Rules, plan_edits, run_plan
from batchedit.progress import Observer, Progress
from batchedit.retry import RetryPolicy
from batchedit.runner import RunConfig, run_batch
from batchedit.sender import RunControl
from batchedit.wiring import ApiConfig

__all__ = [
    "ApiConfig",
    "ApiError",
    "BatchEditError",
    "ConfigError",
    "ErrorClass",
    "ImClient",
    "Observer",
    "Outcome",
    "PlanStats",
    "Progress",
    "Reply",
    "RetryPolicy",
    "RoamMessage",
    "Rules",
    "RunConfig",
    "RunControl",
    "Secret",
    "SigSource",
    "SigVerdict",
    "Status",
    "Summary",
    "classify",
    "client_context",
    "find_message",
    "iter_history",
    "plan_edits",
    "redact",
    "resolve_endpoint",
    "run_batch",
    "run_plan",
    "undo_edits",
]
