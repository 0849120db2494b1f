"""The served-events feed of a serving app reads the other replicas' answered rows as the events of the use case
of the settings the app was given, not of whatever ``LOOPLINE_USE_CASE`` says in the process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loopline.config import Settings
from loopline.features.definitions import definitions_for
from loopline.serving import app as serving_app
from loopline.serving.config import ServingConfig
from loopline.serving.prediction_log import AnsweredFeed, PredictionLog


class _RecordingFreshFeatures:
    """Stands in for ``FreshFeatures``: keeps what the app hands it, loads and starts nothing."""

    def __init__(self, settings: Settings, **_: Any) -> None:
        self.settings = settings
        self.windows: set[str] = set()
        self.served: AnsweredFeed | None = None
        self.backlog: Any = None

    def knows(self, event_id: str) -> bool:
        return event_id in self.windows

    def bootstrap(self) -> None:
        pass

    def start(self) -> _RecordingFreshFeatures:
        return self


def test_the_feed_reads_events_as_the_given_settings_use_case(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The process says delivery (no streaming features: its feed would have no way to read an event), the app
    # was given fraud settings (streaming features on): the feed must read the rows as fraud's events.
    monkeypatch.setenv("LOOPLINE_USE_CASE", "delivery")
    monkeypatch.setattr("loopline.features.fresh.FreshFeatures", _RecordingFreshFeatures)
    settings = Settings(state_dir=tmp_path, use_case="fraud")
    plog = PredictionLog(tmp_path / "p.db")
    try:
        fresh = serving_app._fresh_features(settings, ServingConfig(), plog)
        assert isinstance(fresh, _RecordingFreshFeatures) and fresh.served is not None
        streaming = definitions_for(settings)[1].streaming
        assert streaming is not None
        assert fresh.served.to_event == streaming.event
    finally:
        plog.close()
