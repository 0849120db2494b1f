"""Typed settings (env ``LOOPLINE_*``) and the one state directory of the embedded mode."""

from loopline.config.settings import Settings, StatePaths, get_settings, telemetry_off_env

__all__ = ["Settings", "StatePaths", "get_settings", "telemetry_off_env"]
