"""batchedit: safely rewrite historical one-to-one Tencent Cloud IM messages at scale."""

from batchedit.backup import UndoPlan, read_backup
from batchedit.edits import Edits, LineKind
from batchedit.im.auth import Secret, SigSource
from batchedit.im.client import (
    MODIFY,
    ROAM,
    ImClient,
    Reply,
    RoamMessage,
    redact,
    resolve_endpoint,
)
from batchedit.im.errors import ApiError, ConfigError, ErrorClass, classify
from batchedit.im.errors import ImError as BatchEditError
from batchedit.im.history import find_message, iter_history
from batchedit.im.tls import client_context
from batchedit.im.usersig import SigVerdict
from batchedit.outcomes import Outcome, Status, Summary
from batchedit.plan import plan_callbacks, plan_edits, run_callbacks_plan, run_plan
from batchedit.planner import PlanStats, Problem
from batchedit.progress import Observer, Progress
from batchedit.retry import RetryPolicy
from batchedit.rules import CcdEdit, Rules
from batchedit.runner import RunConfig, run_batch
from batchedit.sender import RunControl, RunState, Sender
from batchedit.transform import Transform
from batchedit.verify import ReadBack
from batchedit.wiring import ApiConfig, Senders

__all__ = [
    "MODIFY",
    "ROAM",
    "ApiConfig",
    "ApiError",
    "BatchEditError",
    "CcdEdit",
    "ConfigError",
    "Edits",
    "ErrorClass",
    "ImClient",
    "LineKind",
    "Observer",
    "Outcome",
    "PlanStats",
    "Problem",
    "Progress",
    "ReadBack",
    "Reply",
    "RetryPolicy",
    "RoamMessage",
    "Rules",
    "RunConfig",
    "RunControl",
    "RunState",
    "Secret",
    "Sender",
    "Senders",
    "SigSource",
    "SigVerdict",
    "Status",
    "Summary",
    "Transform",
    "UndoPlan",
    "classify",
    "client_context",
    "find_message",
    "iter_history",
    "plan_callbacks",
    "plan_edits",
    "read_backup",
    "redact",
    "resolve_endpoint",
    "run_batch",
    "run_callbacks_plan",
    "run_plan",
]
