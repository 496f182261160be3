"""From one message to its edit: the transform, then the built-in rules, then ``run``'s check.

A message either gets an edit record (exactly what ``batchedit run`` would send), is left alone
(nothing to change, or the transform said so), or is a :class:`Problem`: the transform raised or
returned no edit, a rule could not apply, or the edit would not pass ``run``'s validation.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from batchedit.callbacks import BadLine
from batchedit.im.client import RoamMessage
from batchedit.im.errors import ConfigError
from batchedit.records import InvalidRecord, parse_line
from batchedit.rules import RuleError, Rules
from batchedit.transform import Transform, TransformError


@dataclass(frozen=True, slots=True)
class Problem:
    """A message the plan left alone because it could not edit it as asked, and why."""

    from_account: str
    to_account: str
    msg_key: str
    reason: str

    def __str__(self) -> str:
        return f"{self.from_account} -> {self.to_account} {self.msg_key}: {self.reason}"


@dataclass(slots=True)
class PlanStats:
    """What a plan read and wrote, and how it ended (``stopped`` as in a run's summary)."""

    conversations: int = 0
    failed_conversations: list[str] = field(default_factory=list)
    messages: int = 0
    recalled: int = 0
    planned: int = 0
    problems: list[Problem] = field(default_factory=list)
    """Messages left alone because the transform or a rule failed on them."""
    element_types: Counter[str] = field(default_factory=Counter)
    """Elements seen, by MsgType, in the messages given to the rules."""
    with_cloud_custom_data: int = 0
    left_alone: int = 0
    """Messages the transform returned ``None`` for."""
    archive_lines: int = 0
    """Lines of a callback archive read (``plan_callbacks`` only)."""
    bad_lines: list[BadLine] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    """Archive payloads that name no message to edit, by kind (duplicates too)."""
    stopped_early: bool = False
    """A preview had shown enough, or the output was closed."""
    requests: int = 0
    """``admin_getroammsg`` requests made (``run_plan`` only)."""
    error: str | None = None
    """What stopped planning that was no API answer: an odd answer, or an output that failed."""
    stopped: str | None = None
    reason: str = ""
    elapsed: float = 0.0
    """Seconds."""


def check_edit(edit: dict[str, Any]) -> str | None:
    """Why ``run`` would refuse ``edit`` as a line of its input, or ``None``."""
    try:
        raw = orjson.dumps(edit)
    except orjson.JSONEncodeError as exc:
        return f"the edit cannot be written as JSON ({exc})"
    item = parse_line(0, raw)
    if isinstance(item, InvalidRecord):
        return item.reason.removeprefix("line 0: ")
    return None


def require_rules(rules: Rules, transform: Transform | None) -> None:
    """Raise :class:`ConfigError` when there is nothing to plan with."""
    if rules.empty and transform is None:
        raise ConfigError(
            "no rules: give --replace, --rewrite-url, --set-cloud-custom-data, --ccd-set, "
            "--ccd-rename, --ccd-delete or --transform"
        )


class Planner:
    """Decides each message's edit and keeps the counts in ``stats``.

    The transform (if any) runs first, on the message as read; its result, unless ``None``
    (leave the message alone), goes through the built-in ``rules``.
    """

    def __init__(
        self, rules: Rules, transform: Transform | None = None, stats: PlanStats | None = None
    ) -> None:
        require_rules(rules, transform)
        self.rules = rules
        self.transform = transform
        self.stats = stats or PlanStats()

    def _survey(self, message: RoamMessage) -> None:
        stats = self.stats
        for element in message.body:
            kind = element.get("MsgType") if isinstance(element, dict) else None
            stats.element_types[kind if isinstance(kind, str) else "(not an element)"] += 1
        stats.with_cloud_custom_data += bool(message.cloud_custom_data)

    async def edit(self, message: RoamMessage) -> dict[str, Any] | Problem | None:
        """``message``'s edit record, a :class:`Problem`, or ``None``: nothing to change."""
        self._survey(message)
        content = (message.body, message.cloud_custom_data)
        try:
            if self.transform is not None:
                changed = await self.transform(message)
                if changed is None:
                    self.stats.left_alone += 1
                    return None
                content = changed
            body, ccd = self.rules.apply(message, content)
        except (TransformError, RuleError) as exc:
            return self._problem(message, str(exc))
        edit: dict[str, Any] = {
            "From_Account": message.from_account,
            "To_Account": message.to_account,
            "MsgKey": message.msg_key,
        }
        if body != message.body:
            edit["MsgBody"] = body
        if (ccd or None) != (message.cloud_custom_data or None):
            edit["CloudCustomData"] = ccd
        if len(edit) == 3:
            return None
        invalid = check_edit(edit)
        if invalid is not None:
            return self._problem(message, f"the edit would be refused: {invalid}")
        return edit

    def _problem(self, message: RoamMessage, reason: str) -> Problem:
        problem = Problem(message.from_account, message.to_account, message.msg_key, reason)
        self.stats.problems.append(problem)
        return problem


def explain_nothing(stats: PlanStats, rules: Rules, transform: Transform | None) -> str:
    """Why a plan that read messages planned nothing: what it saw, what the rules read.

    E.g. ``100 messages: 100 TIMImageElem, 0 with CloudCustomData; --replace reads
    TIMTextElem Text only``.
    """
    seen = ", ".join(f"{n} {kind}" for kind, n in stats.element_types.most_common())
    parts = [
        f"{stats.messages - stats.recalled} messages: {seen or 'no elements'}, "
        f"{stats.with_cloud_custom_data} with CloudCustomData",
        *rules.reads(),
    ]
    if transform is not None:
        parts.append(f"--transform left {stats.left_alone} alone")
    return "; ".join(parts)
