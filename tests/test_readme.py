"""The README gives the two commands and points to docs/; docs/configuration.md documents
every setting; every link between them resolves."""

from __future__ import annotations

import re
from pathlib import Path

from followup.config.settings import setting_names

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text()
DOCS = sorted((ROOT / "docs").glob("*.md"))


def test_every_setting_is_in_the_configuration_table() -> None:
    """The common settings and every platform's own (FOLLOWUP_<DIALECT>_<FIELD>)."""
    for name in setting_names():
        assert f"| `FOLLOWUP_{name.upper()}` |" in CONFIGURATION, name


def test_the_two_commands_are_given() -> None:
    assert "make demo" in README
    assert "make test" in README


def test_the_readme_points_to_every_doc() -> None:
    for doc in DOCS:
        assert f"(docs/{doc.name})" in README, doc.name


def test_every_link_resolves() -> None:
    for page in [ROOT / "README.md", *DOCS]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.name}: {target}"


def test_the_readme_names_only_real_settings() -> None:
    """A setting the README names that does not exist would be ignored (or refused)."""
    known = {f"FOLLOWUP_{name.upper()}" for name in setting_names()}
    named = set(re.findall(r"FOLLOWUP_[A-Z0-9_]+[A-Z0-9]", README))
    # The tests' own variable, and the misspelling the README shows being refused.
    assert named - known <= {"FOLLOWUP_TEST_REDIS_URL", "FOLLOWUP_RATE_LIMIT"}, named - known


def test_the_readme_stays_short() -> None:
    """What a newcomer needs in the first hour; the rest belongs in docs/."""
    assert len(README.splitlines()) < 300


def test_every_wait_reason_is_in_the_operations_doc() -> None:
    from followup.worker.stats import WAIT_REASONS

    operations = (ROOT / "docs" / "operations.md").read_text()
    row = next(line for line in operations.splitlines() if line.startswith("| `waiting_by_reason`"))
    assert [r for r in WAIT_REASONS if f"`{r}`" not in row] == []


def _rows(text: str) -> dict[str, str]:
    """A settings table's rows: the variable, and the rest of its row."""
    return dict(re.findall(r"^\| `(FOLLOWUP_[A-Z0-9_]+)` \|(.*)$", text, re.M))


def test_the_readme_settings_agree_with_the_configuration_table() -> None:
    """A README row says no less than docs/configuration.md's: every value that names (a
    dialect, say) is in the README's row too."""
    full = _rows(CONFIGURATION)
    for name, row in _rows(README).items():
        assert name in full, name
        for value in re.findall(r"`([a-z][a-z_-]*)`", full[name].split("|")[1]):
            assert f"`{value}`" in row, (name, value)
