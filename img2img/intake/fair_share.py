"""Fair share between tenants (pure): deficit round robin over their waiting uploads.

Under a backlog, a batch taken in arrival order gives the fleet to whoever uploaded first:
one tenant's 2,000 images put every other tenant's behind minutes of work. Deficit round
robin (Shreedhar and Varghese, 1995) visits the tenants with work waiting in turn; each
visit adds its weight to the tenant's deficit and takes as many of its images (each costs
1) as the deficit covers. Over any stretch where tenants stay backlogged, each one's share
of the images taken is its weight over the sum of the weights, within one round; a tenant
whose queue empties loses its deficit (no credit saved up while idle); the turn carries over
from one batch to the next, so small batches are fair too.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


class FairShare:
    """The deficit round robin's state between batches: whose turn it is and each
    backlogged tenant's deficit."""

    def __init__(self, weight: Callable[[str], float]) -> None:
        self.weight = weight
        self._deficit: OrderedDict[str, float] = OrderedDict()  # the turn order

    def take(self, waiting: Sequence[tuple[str, T]], count: int) -> list[T]:
        """Up to `count` items of `waiting` ((tenant, item) in arrival order), tenants
        taking turns by weight; each tenant's items stay in their arrival order."""
        queues: OrderedDict[str, list[T]] = OrderedDict()
        for tenant, item in waiting:
            queues.setdefault(tenant, []).append(item)
        # Tenants with nothing waiting lose their place and deficit; newcomers join the end.
        for tenant in list(self._deficit):
            if tenant not in queues:
                del self._deficit[tenant]
        for tenant in queues:
            self._deficit.setdefault(tenant, 0.0)
        taken: list[T] = []
        heads = {tenant: 0 for tenant in queues}
        while len(taken) < count and self._deficit:
            tenant = next(iter(self._deficit))
            queue, head = queues[tenant], heads[tenant]
            deficit = self._deficit[tenant] + self.weight(tenant)
            while deficit >= 1 and head < len(queue) and len(taken) < count:
                taken.append(queue[head])
                head += 1
                deficit -= 1
            heads[tenant] = head
            if head >= len(queue):
                del self._deficit[tenant]  # emptied: no credit kept while idle
            elif len(taken) >= count and deficit >= 1:
                # The batch is full mid-turn: the tenant keeps its turn and what is left.
                self._deficit[tenant] = deficit - self.weight(tenant)
                break
            else:
                self._deficit[tenant] = deficit
                self._deficit.move_to_end(tenant)  # its turn is over
        return taken
