"""How a followup process is configured: settings, logging, Celery."""

from followup.config.settings import ConfigError, Settings, get_settings, load_settings

__all__ = ["ConfigError", "Settings", "get_settings", "load_settings"]
