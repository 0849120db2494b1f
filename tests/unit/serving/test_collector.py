"""The serving process's collector policy: survivors of a full collection are frozen (later full
collections do not scan them), and a deployment change frees what went out of use meanwhile, cycles too."""

from __future__ import annotations

import gc
import weakref

import pytest

from loopline.serving import collector


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def policy(monkeypatch):
    """The policy installed for one test, then removed and the frozen set handed back. Automatic collections
    are off meanwhile, so only the test's own ``gc.collect`` calls run (and fire the policy)."""
    monkeypatch.setattr(collector, "_installed", False)
    collector.freeze_survivors_of_full_collections()
    collector.freeze_survivors_of_full_collections()  # idempotent: one callback
    assert gc.callbacks.count(collector._freeze_survivors) == 1
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
        gc.callbacks.remove(collector._freeze_survivors)
        gc.unfreeze()


def tracked_in(generation: int, nodes: list[Node]) -> list[bool]:
    """Whether each of ``nodes`` is in ``generation`` (a frozen object is in none)."""
    ids = {id(o) for o in gc.get_objects(generation=generation)}
    return [id(node) in ids for node in nodes]


def cycle() -> Node:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return a


def test_what_survives_a_full_collection_is_frozen_and_later_scans_skip_it(policy) -> None:
    # Membership, not freeze counts: in a large test process other threads free frozen objects by refcount
    # at any moment, so the count can drop between two reads (seen in CI: 2,592,420 -> 2,592,418).
    kept = [Node() for _ in range(1000)]
    gc.collect()
    assert gc.get_freeze_count() >= len(kept)
    assert not any(tracked_in(2, kept)) and not any(tracked_in(1, kept)), "survivors are frozen"
    # A young collection freezes nothing: its survivors move on to generation 1 and stay scanned.
    more = [Node() for _ in range(10)]
    gc.collect(0)
    assert all(tracked_in(1, more))
    # The next full collection freezes them too.
    gc.collect()
    assert not any(tracked_in(1, more)) and not any(tracked_in(2, more))


def test_a_deployment_change_frees_a_frozen_cycle_that_went_out_of_use(policy) -> None:
    old_model = cycle()
    gone = weakref.ref(old_model)
    gc.collect()  # frozen while in use
    del old_model
    gc.collect()
    assert gone() is not None, "a frozen cycle waits for the next deployment change"
    collector.collect_everything()
    assert gone() is None
    assert gc.get_freeze_count() > 0, "the survivors are frozen again"


def test_without_the_policy_a_deployment_change_only_freezes_what_is_loaded(monkeypatch) -> None:
    monkeypatch.setattr(collector, "_installed", False)
    try:
        collector.collect_everything()
        assert gc.get_freeze_count() > 0
        assert collector._freeze_survivors not in gc.callbacks
    finally:
        gc.unfreeze()
