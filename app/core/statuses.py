"""The states a training run and a model version move through, as StrEnums.

Stored as plain strings in the database (a StrEnum is a str), so the tables and the HTTP
contract are unchanged; code compares against these names instead of bare literals.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """queued -> running -> promoted | rejected | failed."""

    QUEUED = "queued"
    RUNNING = "running"
    PROMOTED = "promoted"
    REJECTED = "rejected"
    FAILED = "failed"

    @property
    def is_open(self) -> bool:
        return self in OPEN_RUN_STATUSES

    @property
    def is_final(self) -> bool:
        return self in FINAL_RUN_STATUSES


OPEN_RUN_STATUSES = frozenset({RunStatus.QUEUED, RunStatus.RUNNING})
FINAL_RUN_STATUSES = frozenset({RunStatus.PROMOTED, RunStatus.REJECTED, RunStatus.FAILED})
JUDGED_RUN_STATUSES = frozenset({RunStatus.PROMOTED, RunStatus.REJECTED})


class Trigger(StrEnum):
    """Why a run was queued."""

    ADMIN = "admin"
    SCHEDULE = "schedule"
    REQUEUE = "requeue"


class VersionStatus(StrEnum):
    """candidate -> active | rejected; active -> retired when another is activated;
    retired | rejected -> pruned when retention removes its files (the row stays, for history)."""

    CANDIDATE = "candidate"
    ACTIVE = "active"
    REJECTED = "rejected"
    RETIRED = "retired"
    PRUNED = "pruned"


class GateDecision(StrEnum):
    """The gate's verdict on a candidate: promote it, reject it, or keep collecting rows."""

    PROMOTE = "promote"
    REJECT = "reject"
    INCONCLUSIVE = "inconclusive"
