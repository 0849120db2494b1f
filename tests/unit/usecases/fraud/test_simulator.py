"""The transaction simulator and ``loopline simulate``: contract, realism, labels, drift, CLI."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loopline.cli import simulate as simulate_cli
from loopline.usecases.fraud.schema import (
    AGE_BANDS,
    AMOUNT_MAX,
    AMOUNT_MIN,
    CHANNELS,
    LABEL_COLUMNS,
    MERCHANT_CATEGORIES,
    MERCHANT_COUNTRIES,
    REGIONS,
    TRANSACTION_COLUMNS,
)
from loopline.usecases.fraud.simulator import (
    BAD_KINDS,
    DRIFT_KINDS,
    NEW_CATEGORY,
    Drift,
    Simulation,
    SimulationConfig,
    simulate,
)

DAYS = 14
DRIFT_FROM = 7
DAY = pd.Timedelta(days=1)


@pytest.fixture(scope="module")
def base() -> Simulation:
    return simulate(SimulationConfig(days=DAYS))


_drifted: dict[str, Simulation] = {}


def drifted(kind: str) -> Simulation:
    if kind not in _drifted:
        _drifted[kind] = simulate(SimulationConfig(days=DAYS, drift=Drift(kind, DRIFT_FROM)))
    return _drifted[kind]


def fraud_mask(sim: Simulation) -> np.ndarray:
    return (sim.patterns != "genuine").to_numpy()


def local_hour(tx: pd.DataFrame) -> np.ndarray:
    return tx["event_timestamp"].dt.tz_convert("Europe/Berlin").dt.hour.to_numpy()


def after_drift(tx: pd.DataFrame) -> np.ndarray:
    start = pd.Timestamp(SimulationConfig(days=DAYS).day(DRIFT_FROM), tz="UTC")
    return (tx["event_timestamp"] >= start).to_numpy()


# --- the contract ------------------------------------------------------------------------------------


def test_every_day_is_exactly_the_contract(base: Simulation) -> None:
    assert len(base.days) == DAYS
    for batch in base.days:
        tx = batch.transactions
        assert list(tx.columns) == list(TRANSACTION_COLUMNS)
        assert {c: str(t) for c, t in tx.dtypes.items()} == TRANSACTION_COLUMNS
        assert list(batch.labels.columns) == list(LABEL_COLUMNS)
        assert {c: str(t) for c, t in batch.labels.dtypes.items()} == LABEL_COLUMNS
        assert {c: str(t) for c, t in batch.transaction_labels.dtypes.items()} == LABEL_COLUMNS
        assert not tx.isna().any().any()
        start = pd.Timestamp(batch.day, tz="UTC")
        assert tx["event_timestamp"].between(start, start + DAY, inclusive="left").all()
        assert tx["event_timestamp"].is_monotonic_increasing
        assert len(batch.patterns) == len(tx)


def test_values_stay_in_the_vocabularies_and_ranges(base: Simulation) -> None:
    tx = base.transactions
    assert set(tx["channel"]) == set(CHANNELS)
    assert set(tx["customer_age_band"]) == set(AGE_BANDS)
    assert set(tx["customer_region"]) == set(REGIONS)
    assert set(tx["merchant_category"]) == set(MERCHANT_CATEGORIES)  # no drift: every category, no new one
    assert set(tx["merchant_country"]) <= set(MERCHANT_COUNTRIES)
    assert tx["amount"].between(AMOUNT_MIN, AMOUNT_MAX).all()
    assert np.allclose(tx["amount"], tx["amount"].round(2))  # cents
    assert tx["transaction_id"].str.fullmatch(r"tx_\d{12}").all()
    assert tx["customer_id"].str.fullmatch(r"c_\d{5}").all()
    assert tx["card_id"].str.fullmatch(r"card_\d{5}_[123]").all()
    assert tx["merchant_id"].str.fullmatch(r"m_\d{4}").all()


def test_written_parquet_reads_back_with_the_contract(tmp_path: Path) -> None:
    from loopline.usecases.fraud.simulator import write_run

    config = SimulationConfig(days=9, n_customers=300)
    summary = write_run(config, tmp_path)
    sim = simulate(config)
    for batch, name in zip(sim.days, summary["transaction_files"], strict=True):
        back = pd.read_parquet(name)
        pd.testing.assert_frame_equal(back, batch.transactions)
    labels = sorted((tmp_path / "labels").glob("*.parquet"))
    assert len(labels) == summary["label_files"] > 0
    for path in labels:
        back = pd.read_parquet(path)
        assert {c: str(t) for c, t in back.dtypes.items()} == LABEL_COLUMNS
        assert (back["label_timestamp"].dt.date.astype(str) == path.stem.removeprefix("labels_")).all()


# --- determinism ---------------------------------------------------------------------------------------


def _assert_same(a: Simulation, b: Simulation) -> None:
    for x, y in zip(a.days, b.days, strict=True):
        pd.testing.assert_frame_equal(x.transactions, y.transactions)
        pd.testing.assert_frame_equal(x.labels, y.labels)
        pd.testing.assert_frame_equal(x.transaction_labels, y.transaction_labels)


def test_same_seed_same_data_other_seed_other_data(base: Simulation) -> None:
    again = simulate(SimulationConfig(days=3))
    _assert_same(again, Simulation(again.config, base.days[:3]))  # also: a shorter run is a prefix
    other = simulate(SimulationConfig(days=3, seed=43))
    assert not other.days[0].transactions.equals(base.days[0].transactions)
    assert other.days[0].transactions["amount"].sum() != base.days[0].transactions["amount"].sum()


def test_transaction_ids_are_unique_and_running_across_days(base: Simulation) -> None:
    ids = base.transactions["transaction_id"]
    assert ids.is_unique
    numbers = ids.str[3:].astype(int).to_numpy()
    assert (numbers == np.arange(1, len(ids) + 1)).all()


# --- realism ---------------------------------------------------------------------------------------------


def test_volume_and_weekly_rhythm(base: Simulation) -> None:
    per_day = pd.Series({b.day: len(b.transactions) for b in base.days})
    assert 4_000 <= per_day.mean() <= 8_000
    weekday = pd.Series([d.weekday() for d in per_day.index], index=per_day.index)
    fri_sat, sunday, midweek = (per_day[weekday.isin(s)].mean() for s in ([4, 5], [6], [1, 2, 3]))
    assert fri_sat > midweek * 1.1 > sunday * 1.1
    tx = base.transactions
    dow = tx["event_timestamp"].dt.dayofweek
    grocery_share = (tx["merchant_category"] == "grocery").groupby(dow).mean()
    assert grocery_share[6] < grocery_share[1] / 2  # shops are closed on Sunday
    restaurant_share = (tx["merchant_category"] == "restaurant").groupby(dow).mean()
    assert restaurant_share[6] > restaurant_share[1]


def test_daily_rhythm_quiet_nights_lunch_and_evening_peaks(base: Simulation) -> None:
    genuine = ~fraud_mask(base)
    hours = np.bincount(local_hour(base.transactions)[genuine], minlength=24) / genuine.sum()
    assert hours[0:6].sum() < 0.06
    assert hours[12] > 8 * hours[3] and hours[18] > 8 * hours[3]
    assert hours[12] > hours[9] and hours[12] > hours[15]  # lunch
    assert hours[18] > hours[15] and hours[18] > hours[22]  # evening


def test_amounts_by_category_are_plausible(base: Simulation) -> None:
    tx = base.transactions[~fraud_mask(base)]
    median = tx.groupby("merchant_category")["amount"].median()
    assert 25 <= median["grocery"] <= 60
    assert 45 <= median["fuel"] <= 80
    assert 250 <= median["travel"] <= 600
    assert 150 <= median["electronics"] <= 450
    assert 5 <= median["digital_goods"] <= 25
    assert (
        median["travel"]
        > median["electronics"]
        > median["fuel"]
        > median["grocery"]
        > median["digital_goods"]
    )
    assert tx.groupby("merchant_category")["amount"].quantile(0.9)["grocery"] < 200


def test_channels_and_devices(base: Simulation) -> None:
    tx = base.transactions
    share = tx["channel"].value_counts(normalize=True)
    assert 0.005 < share["atm"] < 0.05
    assert 0.2 < share["online"] < 0.45
    assert share["contactless"] > share["chip"]
    by_channel = tx.groupby("channel")["amount"].median()
    assert by_channel["contactless"] < by_channel["chip"]
    assert (tx.loc[tx["merchant_category"] == "digital_goods", "channel"] == "online").all()
    atm = tx[tx["channel"] == "atm"]
    assert (atm["amount"] % 10 == 0).all()
    assert atm["device_id"].str.startswith("ATM").all()
    assert tx.loc[tx["channel"] == "online", "device_id"].str.startswith("dev_").all()
    assert tx.loc[tx["channel"].isin(["chip", "contactless"]), "device_id"].str.startswith("T").all()


def test_customers_have_stable_attributes_cards_and_devices(base: Simulation) -> None:
    tx = base.transactions
    per_customer = tx.groupby("customer_id")[["customer_age_band", "customer_region"]].nunique()
    assert (per_customer == 1).all().all()
    assert tx["card_id"].str[5:10].eq(tx["customer_id"].str[2:]).all()  # a card belongs to its customer
    assert tx.groupby("customer_id")["card_id"].nunique().max() <= 3
    ages = tx.drop_duplicates("customer_id")["customer_age_band"].value_counts(normalize=True)
    assert ages.max() > 1.5 * ages.min()  # realistic, unequal groups
    regions = tx.drop_duplicates("customer_id")["customer_region"].value_counts(normalize=True)
    assert regions.max() > 1.5 * regions.min()
    genuine_online = tx[(tx["channel"] == "online") & ~fraud_mask(base)]
    devices = genuine_online.groupby("customer_id")["device_id"].nunique()
    assert devices.median() <= 3
    merchants = tx.drop_duplicates("merchant_id")
    assert 200 <= len(merchants) <= 500
    assert 0.6 < (merchants["merchant_country"] == "DE").mean() < 0.95


# --- fraud ----------------------------------------------------------------------------------------------


def test_fraud_rate_is_realistic(base: Simulation) -> None:
    rate = fraud_mask(base).mean()
    assert 0.003 <= rate <= 0.02
    assert 0.005 <= rate <= 0.012  # ~0.8 % by design
    assert base.labels["is_fraud"].mean() == pytest.approx(rate)


def test_every_fraud_pattern_is_present(base: Simulation) -> None:
    counts = base.patterns.value_counts()
    for pattern in ("stolen_card", "card_testing", "account_takeover", "merchant_compromise"):
        assert counts.get(pattern, 0) >= 20, pattern
    assert "scam" not in counts  # only under concept drift


def test_stolen_cards_come_in_quick_bursts(base: Simulation) -> None:
    tx = base.transactions[(base.patterns == "stolen_card").to_numpy()]
    span = tx.groupby("card_id")["event_timestamp"].agg(lambda t: t.max() - t.min())
    size = tx.groupby("card_id").size()
    bursts = size[(size >= 3) & (span <= pd.Timedelta(hours=6))]
    assert len(bursts) >= 10
    assert tx["merchant_category"].isin(["electronics", "fashion"]).mean() > 0.3
    assert tx["amount"].median() > base.transactions["amount"].median() * 2


def test_card_testing_is_tiny_online_amounts_then_a_big_one(base: Simulation) -> None:
    tx = base.transactions[(base.patterns == "card_testing").to_numpy()]
    assert (tx["channel"] == "online").all()
    incidents = 0
    for _, card in tx.groupby("card_id"):
        tiny = card[(card["amount"] <= 2.0) & (card["merchant_category"] == "digital_goods")]
        big = card[card["amount"] > 50]
        if len(tiny) >= 3 and len(big) and big["event_timestamp"].min() > tiny["event_timestamp"].max():
            incidents += 1
    assert incidents >= 10
    assert tx["amount"].between(0.5, 2.0).mean() > 0.6


def test_account_takeover_uses_a_device_the_customer_never_used(base: Simulation) -> None:
    tx = base.transactions
    genuine = tx[~fraud_mask(base)]
    known = set(zip(genuine["customer_id"], genuine["device_id"], strict=True))
    ato = tx[(base.patterns == "account_takeover").to_numpy()]
    assert (ato["channel"] == "online").all()
    assert not any((c, d) in known for c, d in zip(ato["customer_id"], ato["device_id"], strict=True))
    assert ato["amount"].median() > 200


def test_breached_merchant_customers_see_fraud_later(base: Simulation) -> None:
    tx = base.transactions
    fraud = tx[(base.patterns == "merchant_compromise").to_numpy()]
    first_fraud = fraud.groupby("card_id")["event_timestamp"].min()
    genuine = tx[~fraud_mask(base) & (tx["channel"] != "online").to_numpy()]
    before = genuine.merge(first_fraud.rename("fraud_at"), left_on="card_id", right_index=True)
    before = before[before["event_timestamp"] < before["fraud_at"]]
    common = before.drop_duplicates(["card_id", "merchant_id"])["merchant_id"].value_counts()
    assert common.iloc[0] >= 0.8 * len(first_fraud)  # one merchant (the breached one) links the victims
    assert len(first_fraud) >= 10
    assert (fraud["merchant_country"] != "DE").mean() > 0.4  # cashed out abroad / online abroad


def test_fraud_leans_to_night_and_abroad_but_is_not_trivially_separable(base: Simulation) -> None:
    tx, fraud = base.transactions, fraud_mask(base)
    night = local_hour(tx) < 6
    abroad = (tx["merchant_country"] != "DE").to_numpy()
    assert night[fraud].mean() > 3 * night[~fraud].mean()
    assert night[fraud].mean() < 0.5
    assert abroad[fraud].mean() > 2 * abroad[~fraud].mean()
    assert abroad[~fraud].mean() > 0.03
    genuine = tx[~fraud]
    assert ((genuine["amount"] <= 2) & (genuine["merchant_category"] == "digital_goods")).sum() > 50
    assert genuine["merchant_category"].isin(["electronics", "travel"]).sum() > 1000


# --- labels ---------------------------------------------------------------------------------------------


def test_exactly_one_label_per_transaction_and_after_it(base: Simulation) -> None:
    tx, labels = base.transactions, base.labels
    assert labels["transaction_id"].is_unique
    assert (labels["transaction_id"].to_numpy() == tx["transaction_id"].to_numpy()).all()
    delay = labels["label_timestamp"] - tx["event_timestamp"]
    assert (delay > pd.Timedelta(0)).all()
    fraud = labels["is_fraud"].to_numpy() == 1
    assert (fraud == fraud_mask(base)).all()
    fraud_days = delay[fraud] / DAY
    assert fraud_days.between(1, 21).all()
    assert 3 <= fraud_days.median() <= 10
    assert fraud_days.between(3, 10).mean() > 0.6
    genuine_days = delay[~fraud] / DAY
    assert genuine_days.between(7, 7.25).all()


def test_label_batches_land_on_their_day_within_the_run(base: Simulation) -> None:
    landed = base.landed_labels
    assert landed["transaction_id"].is_unique
    end = pd.Timestamp(base.config.end, tz="UTC") + DAY
    expected = base.labels[base.labels["label_timestamp"] < end]
    assert len(landed) == len(expected)
    assert set(landed["transaction_id"]) == set(expected["transaction_id"])
    for batch in base.days:
        start = pd.Timestamp(batch.day, tz="UTC")
        assert batch.labels["label_timestamp"].between(start, start + DAY, inclusive="left").all()
    assert len(base.days[0].labels) == 0  # nothing is known on the first day
    assert len(base.days[-1].labels) > 1_000  # genuine transactions mature after 7 days


# --- drift ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(DRIFT_KINDS))
def test_drift_changes_nothing_before_its_first_day(base: Simulation, kind: str) -> None:
    sim = drifted(kind)
    for x, y in zip(base.days[:DRIFT_FROM], sim.days[:DRIFT_FROM], strict=True):
        pd.testing.assert_frame_equal(x.transactions, y.transactions)
    assert not sim.days[DRIFT_FROM].transactions.equals(base.days[DRIFT_FROM].transactions)


def test_covariate_drift_raises_amounts_and_online_share(base: Simulation) -> None:
    tx = drifted("covariate").transactions
    post = after_drift(tx)
    online = (tx["channel"] == "online").to_numpy()
    assert tx["amount"][post].mean() > 1.25 * tx["amount"][~post].mean()
    assert online[post].mean() > online[~post].mean() + 0.05
    base_tx = base.transactions
    base_post = after_drift(base_tx)
    assert base_tx["amount"][base_post].mean() == pytest.approx(base_tx["amount"][~base_post].mean(), rel=0.1)


def test_new_category_appears_only_from_the_drift_day() -> None:
    tx = drifted("new_category").transactions
    post = after_drift(tx)
    new = (tx["merchant_category"] == NEW_CATEGORY).to_numpy()
    assert NEW_CATEGORY not in MERCHANT_CATEGORIES
    assert not new[~post].any()
    assert 0.02 < new[post].mean() < 0.10
    crypto = tx[new]
    assert crypto["merchant_id"].nunique() >= 3
    assert (crypto["channel"] == "online").all()


def test_prior_drift_multiplies_the_fraud_rate() -> None:
    sim = drifted("prior")
    post, fraud = after_drift(sim.transactions), fraud_mask(sim)
    assert fraud[post].mean() >= 2 * fraud[~post].mean()
    assert fraud[post].mean() <= 0.05


def test_concept_drift_moves_fraud_while_features_barely_move() -> None:
    sim = drifted("concept")
    tx, fraud = sim.transactions, fraud_mask(sim)
    post = after_drift(tx)
    pre_rate, post_rate = fraud[~post].mean(), fraud[post].mean()
    assert 0.5 < post_rate / pre_rate < 2.0
    # marginals: almost unchanged
    online = (tx["channel"] == "online").to_numpy()
    night = local_hour(tx) < 6
    assert tx["amount"][post].mean() == pytest.approx(tx["amount"][~post].mean(), rel=0.08)
    assert online[post].mean() == pytest.approx(online[~post].mean(), abs=0.02)
    assert night[post].mean() == pytest.approx(night[~post].mean(), abs=0.01)
    # fraud itself: a different segment and pattern
    senior = (tx["customer_age_band"] == "60+").to_numpy()
    domestic = (tx["merchant_country"] == "DE").to_numpy()
    assert senior[fraud & post].mean() > senior[fraud & ~post].mean() + 0.2
    assert night[fraud & post].mean() < night[fraud & ~post].mean()
    assert domestic[fraud & post].mean() > domestic[fraud & ~post].mean() + 0.2
    genuine = tx[~fraud]
    known = set(zip(genuine["customer_id"], genuine["device_id"], strict=True))
    scam = tx[(sim.patterns == "scam").to_numpy()]
    assert len(scam) > 100 and after_drift(scam).all()
    assert (
        np.mean([(c, d) in known for c, d in zip(scam["customer_id"], scam["device_id"], strict=True)]) > 0.9
    )


def test_configuration_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="days must be"):
        SimulationConfig(days=0).validate()
    with pytest.raises(ValueError, match="valid kinds: covariate"):
        SimulationConfig(days=3, drift=Drift("sideways", 1)).validate()
    with pytest.raises(ValueError, match=r"within the run \(day 0\.\.2"):
        SimulationConfig(days=3, drift=Drift("prior", 3)).validate()


def test_thirty_days_are_fast() -> None:
    started = time.perf_counter()
    sim = simulate(SimulationConfig(days=30))
    assert time.perf_counter() - started < 10
    assert len(sim.transactions) > 30 * 4_000


# --- the CLI ----------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loopline")
    simulate_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def _run(*argv: str) -> int:
    args = _parser().parse_args(["simulate", *argv])
    return args.func(args)


def test_cli_lists_bad_kinds(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("--list-bad") == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(BAD_KINDS) >= 10
    for line, (kind, description) in zip(lines, BAD_KINDS.items(), strict=True):
        assert line.split()[0] == kind and description in line


def test_cli_json_summary_matches_the_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("--days", "9", "--customers", "300", "--out", str(tmp_path), "--json", "--quiet") == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["out"] == str(tmp_path.resolve())
    assert summary["days"] == 9
    assert summary["bad_file"] is None and summary["drift"] is None
    files = sorted((tmp_path / "transactions").glob("transactions_*.parquet"))
    assert summary["transaction_files"] == [str(p) for p in files]
    assert [p.name for p in files][0] == "transactions_2026-01-01.parquet"
    assert summary["transactions"] == sum(len(pd.read_parquet(p)) for p in files)
    assert summary["label_files"] == len(list((tmp_path / "labels").glob("labels_*.parquet"))) > 0
    assert 0 < summary["fraud_rate"] < 0.05


def test_cli_is_deterministic_and_writes_bad_batch_and_drift(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ("--days", "4", "--customers", "200", "--start", "2026-03-27", "--seed", "7", "--json")
    extra = ("--bad", "missing_column", "--drift", "covariate", "--drift-from", "2026-03-29")
    assert _run(*common, *extra, "--out", str(tmp_path / "a")) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert _run(*common, *extra, "--out", str(tmp_path / "b")) == 0
    capsys.readouterr()
    for name in (Path(p).name for p in first["transaction_files"]):
        a, b = (pd.read_parquet(tmp_path / d / "transactions" / name) for d in ("a", "b"))
        pd.testing.assert_frame_equal(a, b)
    assert Path(first["bad_file"]).name == "transactions_2026-03-27_bad-missing_column.parquet"
    assert Path(first["bad_file"]).is_file()
    assert first["drift"]["kind"] == "covariate" and first["drift"]["from_day"] == 2
    assert first["drift"]["from_date"] == "2026-03-29"


def test_cli_csv_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("--days", "2", "--customers", "100", "--format", "csv", "--out", str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "Simulated 2 days" in out and "fraud rate" in out
    frame = pd.read_csv(tmp_path / "transactions" / "transactions_2026-01-02.csv")
    assert list(frame.columns) == list(TRANSACTION_COLUMNS)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--days", "0"], "--days: must be at least 1"),
        (["--days", "two"], "--days: not a whole number"),
        (["--days", "3", "--start", "2026-13-01"], "--start: not a date"),
        (["--days", "3"], "required: --out"),
        ([], "required: --days, --out"),
        (["--days", "3", "--drift", "covariate"], "--drift and --drift-from go together"),
        (["--days", "3", "--drift-from", "1"], "--drift and --drift-from go together"),
        (["--days", "3", "--drift", "covariate", "--drift-from", "3"], "outside the simulated days (0..2)"),
        (["--days", "3", "--drift", "covariate", "--drift-from", "2025-12-31"], "outside the simulated days"),
        (["--days", "3", "--drift", "covariate", "--drift-from", "soon"], "not a day index or a date"),
        (["--days", "3", "--drift", "sideways", "--drift-from", "1"], "choose from covariate, new_category"),
        (["--days", "3", "--bad", "nope"], "choose from missing_column, renamed_column"),
    ],
)
def test_cli_usage_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    if "--days" in argv and not any(m in message for m in ("required",)):
        argv = [*argv, "--out", str(tmp_path)]
    with pytest.raises(SystemExit) as caught:
        _run(*argv)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and message in err
    assert not (tmp_path / "transactions").exists()


def test_cli_lists_the_simulators_drift_kinds(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("--list-drift") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "drift kinds of the fraud simulator (--drift):"
    assert [line.split()[0] for line in lines[1 : 1 + len(DRIFT_KINDS)]] == list(DRIFT_KINDS)
    assert lines[1 + len(DRIFT_KINDS)] == "its options (--option NAME=VALUE):"
    assert [line.split()[0] for line in lines[2 + len(DRIFT_KINDS) :]] == ["customers", "bad"]


def test_cli_module_imports_light() -> None:
    code = "import sys, loopline.cli.simulate; print(sorted({'pandas', 'numpy'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_default_start_is_the_documented_one() -> None:
    assert SimulationConfig(days=1).start == date(2026, 1, 1)
