"""What one Vertex TuningJob said about itself, as the state machine takes it in (no I/O)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tuningd.core.model import JobState


@dataclass(frozen=True)
class RemoteSnapshot:
    """What one Vertex TuningJob said about itself, reduced to what the machine needs.

    `state` is the raw JobState name; a name tuningd does not know is kept raw and does not move
    the job. `json_text` is the normalized TuningJob JSON that is stored as `Job.remote_json`.
    """

    name: str
    state: str
    substate: str | None = None
    update_time: str | None = None
    error_code: int | None = None
    error_message: str | None = None
    json_text: str | None = None

    @property
    def remote_id(self) -> str:
        """The id after /tuningJobs/: the project may come back as a number (spec §8.4)."""
        return self.name.rsplit("/", 1)[-1]

    @property
    def job_state(self) -> JobState | None:
        try:
            return JobState(self.state)
        except ValueError:
            return None

    @classmethod
    def from_json(cls, remote: Mapping[str, Any]) -> RemoteSnapshot:
        """Build from a normalized (camelCase, enum names) TuningJob JSON object."""
        error = remote.get("error") or {}
        code = error.get("code")
        substate = remote.get("tuningJobState")
        update_time = remote.get("updateTime")
        return cls(
            name=str(remote.get("name", "")),
            state=str(remote.get("state", JobState.JOB_STATE_UNSPECIFIED.value)),
            substate=str(substate) if substate is not None else None,
            update_time=str(update_time) if update_time is not None else None,
            error_code=int(code) if code is not None else None,
            error_message=str(error["message"]) if error.get("message") is not None else None,
            json_text=json.dumps(remote, sort_keys=True, separators=(",", ":")),
        )
