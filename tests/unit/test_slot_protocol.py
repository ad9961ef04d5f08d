"""The typed infrastructure identifier of a run on a warm slot."""

from __future__ import annotations

import pytest

from deployments.slot_protocol import SlotIdentifier


def test_the_identifier_names_host_slot_process_and_run_and_parses_back() -> None:
    ident = SlotIdentifier(host="ip-10-0-0-1", pid=4242, slot=3, run_id="0b9e-run")
    assert str(ident) == "ip-10-0-0-1:4242:slot-3:0b9e-run"
    assert SlotIdentifier.parse(str(ident)) == ident


@pytest.mark.parametrize("value", ["4242", "host:4242:3:run", "host:x:slot-1:run"])
def test_anything_else_is_refused_naming_the_expected_form(value: str) -> None:
    with pytest.raises(ValueError, match="expected <host>:<pid>:slot-<n>:<run id>"):
        SlotIdentifier.parse(value)
