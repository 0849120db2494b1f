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
    """The policy installed for one test, then removed and the frozen set handed back."""
    monkeypatch.setattr(collector, "_installed", False)
    collector.freeze_survivors_of_full_collections()
    collector.freeze_survivors_of_full_collections()  # idempotent: one callback
    assert gc.callbacks.count(collector._freeze_survivors) == 1
    yield
    gc.callbacks.remove(collector._freeze_survivors)
    gc.unfreeze()


def cycle() -> Node:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return a


def test_what_survives_a_full_collection_is_frozen_and_later_scans_skip_it(policy) -> None:
    kept = [Node() for _ in range(1000)]
    gc.collect()
    frozen = gc.get_freeze_count()
    assert frozen >= len(kept)
    assert all(not any(node is o for o in gc.get_objects(generation=2)) for node in kept[:3])
    # A young collection does not freeze anything; the next full one freezes only the new survivors.
    more = [Node() for _ in range(10)]
    gc.collect(0)
    assert gc.get_freeze_count() == frozen
    gc.collect()
    assert gc.get_freeze_count() >= frozen + len(more)


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
