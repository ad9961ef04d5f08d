"""Each lane a work queue of its own in each of the pipeline's pools, with the lane's
priority (Prefect's: a worker with room takes from the lowest number first), so the UI
shows the lanes apart and a host takes interactive work first. Made, or corrected, when
the dispatcher starts; queues of lanes no longer configured are left as they are (their
runs still finish)."""

from __future__ import annotations

import logging
from typing import Any

from img2img.config.lanes import LaneSettings

log = logging.getLogger("img2img.dispatcher")


def ensure_lane_queues(client: Any, pools: list[str], lanes: LaneSettings) -> list[str]:
    """Create or re-prioritise each lane's queue in each pool (`client`: a sync Prefect
    client); returns what changed, one line each."""
    from prefect.exceptions import ObjectNotFound

    changed = []
    for pool in pools:
        for lane in lanes.lanes:
            try:
                queue = client.read_work_queue_by_name(lane.name, work_pool_name=pool)
            except ObjectNotFound:
                client.create_work_queue(
                    name=lane.name,
                    work_pool_name=pool,
                    priority=lane.priority,
                    description=f"img2img lane {lane.name!r} (priority {lane.priority})",
                )
                changed.append(f"pool {pool}: work queue {lane.name} (priority {lane.priority})")
                continue
            if queue.priority != lane.priority:
                client.update_work_queue(queue.id, priority=lane.priority)
                changed.append(
                    f"pool {pool}: work queue {lane.name} priority {queue.priority} → "
                    f"{lane.priority}"
                )
    for line in changed:
        log.info("lanes: %s", line)
    return changed
