"""The dispatcher's receiving thread against a real SQS endpoint (moto over HTTP)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from deployments.services.receiving import Receiver
from tests.conftest import AwsEnv

log = logging.getLogger("test.receiving")


def _queue(aws: AwsEnv) -> tuple[Any, str]:
    """A queue of its own (the ingest queue has S3's test event in it)."""
    clients, _ = aws
    return clients.sqs, clients.sqs.create_queue(QueueName="receiving")["QueueUrl"]


def _receive(sqs: Any, url: str) -> Callable[[int, int], list[Any]]:
    def receive(wait_s: int, most: int) -> list[Any]:
        return sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=most, WaitTimeSeconds=wait_s, VisibilityTimeout=60
        ).get("Messages", [])

    return receive


def _visible(sqs: Any, url: str) -> int:
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])[
        "Attributes"
    ]
    return int(attrs["ApproximateNumberOfMessages"])


def _take_until(receiver: Receiver, count: int, limit_s: float = 20.0) -> list[Any]:
    """What the receiver brings, taken until `count` came (or the limit passed)."""
    got: list[Any] = []
    deadline = time.monotonic() + limit_s
    while len(got) < count and time.monotonic() < deadline:
        got += receiver.take()
        time.sleep(0.02)
    return got


def _until(done: Callable[[], bool], limit_s: float = 20.0) -> bool:
    deadline = time.monotonic() + limit_s
    while not done() and time.monotonic() < deadline:
        time.sleep(0.02)
    return done()


def test_what_arrives_is_brought_to_the_inbox_oldest_first_and_wakes_the_dispatcher(
    aws: AwsEnv,
) -> None:
    sqs, url = _queue(aws)
    wake = threading.Event()
    receiver = Receiver(_receive(sqs, url), 1, lambda held: 50 - held, wake, log).start()
    try:
        assert not receiver.ready and receiver.take() == []
        sqs.send_message(QueueUrl=url, MessageBody="first")
        assert wake.wait(20), "an arrival did not wake the dispatcher"
        assert _until(lambda: receiver.ready)
        sqs.send_message(QueueUrl=url, MessageBody="second")
        assert _until(lambda: _visible(sqs, url) == 0)
        got = _take_until(receiver, 2)
        assert [r.message["Body"] for r in got] == ["first", "second"]
        assert got[0].at <= got[1].at
        assert receiver.take() == [] and not receiver.ready  # taken once
    finally:
        assert receiver.stop()


def test_it_brings_no_more_than_the_dispatcher_has_room_for(aws: AwsEnv) -> None:
    """Room for 3: 3 come in, 2 stay visible in the queue. Taken, they still count until
    the dispatcher says they are in its hands (`settled`): then the other 2 come. No room
    at all: nothing is received."""
    sqs, url = _queue(aws)
    room = {"most": 3}
    receiver = Receiver(
        _receive(sqs, url), 1, lambda unsettled: room["most"] - unsettled, threading.Event(), log
    )
    for i in range(5):
        sqs.send_message(QueueUrl=url, MessageBody=str(i))
    receiver.start()
    try:
        assert _until(lambda: _visible(sqs, url) == 2)
        time.sleep(1.5)  # a further receive would have taken more by now
        assert _visible(sqs, url) == 2
        first = receiver.take()
        assert len(first) == 3
        time.sleep(1.5)  # taken, not settled: still no room
        assert _visible(sqs, url) == 2
        receiver.settled()
        assert _until(lambda: _visible(sqs, url) == 0)
        rest = _take_until(receiver, 2)
        assert sorted(r.message["Body"] for r in first + rest) == ["0", "1", "2", "3", "4"]
        room["most"] = 0
        time.sleep(1.5)  # the long poll out (room for 1 more) comes back empty
        receiver.settled()
        sqs.send_message(QueueUrl=url, MessageBody="5")
        time.sleep(1.5)
        assert _visible(sqs, url) == 1 and receiver.take() == []
    finally:
        assert receiver.stop()


def test_a_receive_out_at_the_stop_is_kept_for_the_dispatcher(aws: AwsEnv) -> None:
    """The stop waits for the long poll in flight; what it brings is in the inbox, not
    dropped (it would only reappear after its visibility timeout)."""
    sqs, url = _queue(aws)
    receiver = Receiver(_receive(sqs, url), 3, lambda held: 10 - held, threading.Event(), log)
    receiver.start()
    time.sleep(0.5)  # the first long poll is out
    stopping = threading.Thread(target=receiver.stop)
    stopping.start()
    sqs.send_message(QueueUrl=url, MessageBody="late")
    stopping.join(timeout=15)
    assert not stopping.is_alive()
    assert [r.message["Body"] for r in receiver.take()] == ["late"]
    assert _visible(sqs, url) == 0


def test_a_failed_receive_ends_the_thread_and_is_raised_to_the_dispatcher(aws: AwsEnv) -> None:
    sqs, url = _queue(aws)
    wake = threading.Event()
    sqs.delete_queue(QueueUrl=url)
    receiver = Receiver(_receive(sqs, url), 1, lambda held: 10 - held, wake, log).start()
    assert wake.wait(20) and receiver.ready
    with pytest.raises(Exception, match=r"NonExistentQueue|QueueDoesNotExist"):
        receiver.take()
    assert receiver.stop(timeout_s=5)
