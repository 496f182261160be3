"""batchedit: safely rewrite historical one-to-one Tencent Cloud IM messages at scale."""

from batchedit.backup import UndoPlan, read_backup
from batchedit.edits import Edits, LineKind
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
from batchedit.verify import ReadBack
from batchedit.wiring import ApiConfig

__all__ = [
    "ApiConfig",
    "ApiError",
    "BatchEditError",
    "ConfigError",
    "Edits",
    "ErrorClass",
    "ImClient",
    "LineKind",
    "Observer",
    "Outcome",
    "PlanStats",
    "Progress",
    "ReadBack",
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
    "UndoPlan",
    "classify",
    "client_context",
    "find_message",
    "iter_history",
    "plan_edits",
    "read_backup",
    "redact",
    "resolve_endpoint",
    "run_batch",
    "run_plan",
]
