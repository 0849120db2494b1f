"""Pure decisions of the router: which variant a customer sees, and what the registry asks to serve.

Routing is sticky: a customer's bucket is a stable hash of their id (blake2b, the same in every process
and replica, unlike Python's salted ``hash``), and the challenger gets the buckets below its share. So a
customer keeps their variant while the share is unchanged, and a ramp (5 % → 25 %) only moves customers
from the champion to the challenger, never back and forth.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Literal

from loopline.serving.config import RegistryConfig

Variant = Literal["champion", "challenger"]
CHAMPION: Variant = "champion"
CHALLENGER: Variant = "challenger"
SHADOW = "shadow"  # the challenger scoring every request without answering it (log only)
_SCALE = float(1 << 64)


def bucket(entity_id: str) -> float:
    """A stable position in [0, 1) for an entity id."""
    digest = hashlib.blake2b(entity_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def assign(entity_id: str, challenger_share: float) -> Variant:
    """The variant an entity sees when the challenger gets ``challenger_share`` of the traffic."""
    return CHALLENGER if challenger_share > 0 and bucket(entity_id) < challenger_share else CHAMPION


@dataclass(frozen=True)
class DesiredState:
    """What the registry says should serve."""

    champion: str | None  # model version
    challenger: str | None
    challenger_share: float  # 0 when there is no challenger
    shadow: bool  # the challenger scores every request in the background, answers none
    problems: tuple[str, ...] = ()  # registry values that were ignored, and why


def parse_share(value: str | None) -> tuple[float, str | None]:
    """A traffic tag as a share in [0, 1]; a missing tag is 0, a bad one is 0 with the reason."""
    if value is None or not str(value).strip():
        return 0.0, None
    text = str(value).strip()
    try:
        share = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        return 0.0, f"traffic tag {text!r} is not a number: use a share such as 0.05"
    if not math.isfinite(share) or not 0 <= share <= 1:
        return 0.0, f"traffic tag {text!r} is outside [0, 1]: use a share such as 0.05"
    return share, None


def desired_state(aliases: dict[str, str], tags: dict[str, str], registry: RegistryConfig) -> DesiredState:
    """The registry's aliases (alias → version) and registered-model tags as the state to serve."""
    champion = aliases.get(registry.champion_alias)
    challenger = aliases.get(registry.challenger_alias)
    problems: list[str] = []
    share, problem = parse_share(tags.get(registry.traffic_tag))
    if problem:
        problems.append(problem)
    mode = str(tags.get(registry.mode_tag, "live")).strip().lower() or "live"
    if mode not in ("live", "shadow"):
        problems.append(f"mode tag {mode!r} is neither 'live' nor 'shadow': treated as 'live'")
        mode = "live"
    if challenger is None or challenger == champion or champion is None:
        # No challenger, or it is the champion itself: nothing to split.
        return DesiredState(champion, None, 0.0, False, tuple(problems))
    shadow = mode == "shadow"
    return DesiredState(champion, challenger, 0.0 if shadow else share, shadow, tuple(problems))
