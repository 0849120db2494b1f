"""The cyclic garbage collector in the serving process: long-lived objects out of its scans (tail latency).

With fresh features on, the service holds every recent event of its customers, merchants, cards and
devices: hundreds of thousands of long-lived objects. CPython's full collection scans all of them while
every request waits (measured on 2 cores: pauses growing from 30 to 250 ms within a minute of load at
concurrency 32, which alone pushed the p99 past its budget). Those objects are freed by reference counting
when their window moves on; the collector never needs to look at them.

So, once installed (``python -m loopline.serving`` does), whatever survives a full collection is frozen
(``gc.freeze``): the next full collection scans only what was allocated since. What a full collection
leaves is reachable at that moment; if some of it later becomes unreachable *and* cyclic, it waits in the
frozen set until the next deployment change, which unfreezes and collects everything once
(``collect_everything``): an old model version's objects are freed there.
"""

from __future__ import annotations

import gc
from typing import Any

_installed = False


def _freeze_survivors(phase: str, info: dict[str, Any]) -> None:
    # "stop" of a generation-2 collection: the young generations are empty and gen 2 holds exactly the
    # survivors, all of them reachable.
    if phase == "stop" and info.get("generation") == 2:
        gc.freeze()


def freeze_survivors_of_full_collections() -> None:
    """Install the policy for this process (idempotent)."""
    global _installed
    if not _installed:
        gc.callbacks.append(_freeze_survivors)
        _installed = True


def installed() -> bool:
    return _installed


def collect_everything() -> None:
    """Give the frozen objects back to the collector and run one full collection (a deployment change:
    one pause, then the survivors are frozen again). Without the policy: freeze what is loaded now, so
    full collections scan only what requests allocate."""
    if _installed:
        gc.unfreeze()
        gc.collect()  # the callback freezes the survivors
    else:
        gc.freeze()
