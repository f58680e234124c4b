"""The README documents every setting and the two commands."""

from __future__ import annotations

from pathlib import Path

from followup.config.settings import Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table() -> None:
    for name in Settings.model_fields:
        assert f"| `FOLLOWUP_{name.upper()}` |" in README, name


def test_the_two_commands_are_given() -> None:
    assert "make demo" in README
    assert "make test" in README
