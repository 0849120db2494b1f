"""Sticky weighted routing and the registry's desired state: pure functions."""

from __future__ import annotations

import subprocess
import sys

import pytest

from loopline.serving.config import RegistryConfig
from loopline.serving.routing import CHALLENGER, CHAMPION, assign, bucket, desired_state, parse_share

CUSTOMERS = [f"c_{i:05d}" for i in range(20_000)]


def test_bucket_is_the_same_in_another_process() -> None:
    # Python's hash() is salted per process; the router's hash must not be.
    code = (
        "from loopline.serving.routing import bucket; print(repr([bucket(f'c_{i:05d}') for i in range(50)]))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345"},
    )
    assert other.stdout.strip() == repr([bucket(c) for c in CUSTOMERS[:50]])


@pytest.mark.parametrize("share", [0.0, 0.05, 0.25, 0.5, 1.0])
def test_share_of_customers_matches_the_traffic_share(share: float) -> None:
    on_challenger = sum(assign(c, share) == CHALLENGER for c in CUSTOMERS) / len(CUSTOMERS)
    assert on_challenger == pytest.approx(share, abs=0.01)


def test_a_customer_keeps_their_variant_and_a_ramp_only_moves_customers_to_the_challenger() -> None:
    at_5 = {c for c in CUSTOMERS if assign(c, 0.05) == CHALLENGER}
    again = {c for c in CUSTOMERS if assign(c, 0.05) == CHALLENGER}
    at_25 = {c for c in CUSTOMERS if assign(c, 0.25) == CHALLENGER}
    assert at_5 == again and at_5 < at_25
    assert all(assign(c, 0.0) == CHAMPION for c in CUSTOMERS[:1000])


@pytest.mark.parametrize(
    ("tag", "share", "problem"),
    [
        (None, 0.0, False),
        ("0.05", 0.05, False),
        ("5%", 0.05, False),
        ("1", 1.0, False),
        ("1.5", 0.0, True),
        ("-0.1", 0.0, True),
        ("lots", 0.0, True),
        ("nan", 0.0, True),
    ],
)
def test_traffic_tag_parsing(tag: str | None, share: float, problem: bool) -> None:
    value, why = parse_share(tag)
    assert value == pytest.approx(share) and (why is not None) == problem


def test_desired_state_from_aliases_and_tags() -> None:
    registry = RegistryConfig()
    tag = registry.traffic_tag
    state = desired_state({"champion": "3", "challenger": "4"}, {tag: "0.1"}, registry)
    assert (state.champion, state.challenger, state.challenger_share, state.shadow) == ("3", "4", 0.1, False)
    shadow = desired_state(
        {"champion": "3", "challenger": "4"}, {tag: "0.1", registry.mode_tag: "shadow"}, registry
    )
    assert shadow.shadow and shadow.challenger_share == 0.0, "a shadow challenger answers no request"
    same = desired_state({"champion": "3", "challenger": "3"}, {tag: "0.5"}, registry)
    assert same.challenger is None and same.challenger_share == 0.0
    alone = desired_state({"champion": "3"}, {tag: "0.5"}, registry)
    assert alone.challenger is None and alone.challenger_share == 0.0
    bad = desired_state({"champion": "3", "challenger": "4"}, {tag: "half"}, registry)
    assert bad.challenger_share == 0.0 and "half" in bad.problems[0]


def test_loopline_serve_parses_the_service_options() -> None:
    import argparse

    from loopline.cli.serving import add_parser

    parser = argparse.ArgumentParser(prog="loopline")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve", "--port", "8123", "--model-uri", "models:/fraud_detector/4"])
    assert (args.port, args.model_uri, args.host) == (8123, "models:/fraud_detector/4", None)
    assert args.func.__name__ == "cmd_serve"
