"""What a host costs per hour, by instance type: the fleet view's cost per image when
`monitor.hourly_price_usd` is not set.
"""

from __future__ import annotations

# On-demand Linux prices in US East (N. Virginia), USD per hour, from
# https://aws.amazon.com/ec2/pricing/on-demand/ (inf2 rows; also listed on
# https://aws.amazon.com/ec2/instance-types/inf2/). Other regions and Savings Plans differ:
# set `monitor.hourly_price_usd` to what the account pays.
INF2_ON_DEMAND_USD_PER_HOUR: dict[str, float] = {
    "inf2.xlarge": 0.7582,
    "inf2.8xlarge": 1.9679,
    "inf2.24xlarge": 6.4906,
    "inf2.48xlarge": 12.9813,
}
# The GPU hosts of the `cuda` variant (g5: NVIDIA A10G 24 GB; g6: L4 24 GB; g6e: L40S 48 GB),
# same source and region; check the page before sizing a budget on them.
GPU_ON_DEMAND_USD_PER_HOUR: dict[str, float] = {
    "g5.xlarge": 1.006,
    "g5.2xlarge": 1.212,
    "g5.12xlarge": 5.672,
    "g6.xlarge": 0.8048,
    "g6.2xlarge": 0.9776,
    "g6e.xlarge": 1.861,
}
ON_DEMAND_USD_PER_HOUR = {**INF2_ON_DEMAND_USD_PER_HOUR, **GPU_ON_DEMAND_USD_PER_HOUR}
