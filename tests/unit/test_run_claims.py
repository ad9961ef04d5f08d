"""The dispatcher's rule for a claim heard on the events stream."""

from __future__ import annotations

import datetime
from uuid import uuid4

import pytest

from deployments.services.run_claims import CLAIM_EVENTS, heard_claim

T0 = datetime.datetime(2026, 12, 6, 12, 0, tzinfo=datetime.UTC)
RUN = f"prefect.flow-run.{uuid4()}"


@pytest.mark.parametrize("name", CLAIM_EVENTS)
def test_a_run_claimed_or_started_is_heard(name: str) -> None:
    assert heard_claim(name, RUN, T0, T0)


def test_other_states_replays_and_other_resources_are_not() -> None:
    for name in ("prefect.flow-run.Scheduled", "prefect.flow-run.Completed"):
        assert not heard_claim(name, RUN, T0, T0)
    before = T0 - datetime.timedelta(milliseconds=1)
    assert not heard_claim("prefect.flow-run.Running", RUN, before, T0)
    assert not heard_claim("prefect.flow-run.Running", f"prefect.task-run.{uuid4()}", T0, T0)
