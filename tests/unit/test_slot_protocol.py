"""The typed infrastructure identifier of a run on a warm slot."""

from __future__ import annotations

import pytest

from deployments.worker.slot_protocol import SlotIdentifier


def test_the_identifier_names_host_slot_process_and_run_and_parses_back() -> None:
    ident = SlotIdentifier(host="ip-10-0-0-1", pid=4242, slot=3, run_id="0b9e-run")
    assert str(ident) == "ip-10-0-0-1:4242:slot-3:0b9e-run"
    assert SlotIdentifier.parse(str(ident)) == ident


@pytest.mark.parametrize("value", ["4242", "host:4242:3:run", "host:x:slot-1:run"])
def test_anything_else_is_refused_naming_the_expected_form(value: str) -> None:
    with pytest.raises(ValueError, match="expected <host>:<pid>:slot-<n>:<run id>"):
        SlotIdentifier.parse(value)


def test_a_slot_that_died_is_blamed_on_the_run_on_its_device_alone() -> None:
    """Which of the runs a dead slot held is counted a crash (`None`) and which are innocent
    (re-run at once, no crash counted: the reason why)."""
    from deployments.worker.slot_pool import _blame

    # A run on the device when the slot died did it; the others held by the slot did not.
    assert _blame("a", culprit="a", hung=False) is None
    assert _blame("b", culprit="a", hung=False) == "flow run a was on the device"
    # The same for a hang.
    assert _blame("a", culprit="a", hung=True) is None
    assert _blame("b", culprit="a", hung=True) == "flow run a was on the device"
    # Nobody on the device: a crash is everyone's (nothing tells which), a hang nobody's.
    assert _blame("b", culprit=None, hung=False) is None
    assert _blame("b", culprit=None, hung=True) == "no run was on the device when the slot hung"
