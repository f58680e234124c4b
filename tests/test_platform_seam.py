"""One seam for every platform: each platform's own settings belong to its profile (known,
validated, refused with another dialect), and a fourth platform is one package and one line
in the table."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from followup.config.settings import ConfigError, Settings, load_settings
from followup.tasks.request import FollowUpRequest, platform_errors
from followup.worker import platforms
from followup.worker.http import PlatformHttp
from followup.worker.platforms import platform_for
from followup.worker.platforms.cxone import profile as cxone

CXONE = {"FOLLOWUP_API_DIALECT": "cxone", "FOLLOWUP_CXONE_SKILL_ID": "4242"}


@pytest.fixture
def no_settings_in_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """This process's environment without FOLLOWUP_* settings: the session's `env` fixture
    puts some there (FOLLOWUP_API_BASE_URL ...) for the rest of the session."""
    for name in list(os.environ):
        if name.upper().startswith("FOLLOWUP_") and not name.upper().startswith("FOLLOWUP_TEST_"):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        (
            {"FOLLOWUP_API_DIALECT": "genesys", "FOLLOWUP_CXONE_SKILL_ID": "4242"},
            "FOLLOWUP_CXONE_SKILL_ID apply to NICE CXone only: set FOLLOWUP_API_DIALECT=cxone "
            "(it is genesys)",
        ),
        (
            {"FOLLOWUP_GENESYS_REGION": "mypurecloud.ie"},
            "FOLLOWUP_GENESYS_REGION apply to Genesys Cloud only: set "
            "FOLLOWUP_API_DIALECT=genesys (it is conversations)",
        ),
        (
            {**CXONE, "FOLLOWUP_GENESYS_QUEUE_ID": "q-1"},
            "FOLLOWUP_GENESYS_QUEUE_ID apply to Genesys Cloud only",
        ),
    ],
)
def test_a_variable_of_another_platform_is_refused_naming_it_and_the_dialect(
    environ: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ)
    assert expected in str(caught.value)


def test_a_missing_cxone_skill_names_its_variable_and_what_it_is() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"FOLLOWUP_API_DIALECT": "cxone"})
    assert (
        "FOLLOWUP_CXONE_SKILL_ID must be set for FOLLOWUP_API_DIALECT=cxone: the id (an "
        "integer) of the outbound phone skill the callbacks go to"
    ) in str(caught.value)
    with pytest.raises(ConfigError, match="FOLLOWUP_CXONE_SKILL_ID: Input should be greater"):
        load_settings({**CXONE, "FOLLOWUP_CXONE_SKILL_ID": "0"})


def test_a_misspelt_platform_variable_is_refused_naming_the_right_one(
    no_settings_in_environment: pytest.MonkeyPatch,
) -> None:
    monkeypatch = no_settings_in_environment
    with pytest.raises(ConfigError, match="did you mean FOLLOWUP_CXONE_SKILL_ID"):
        load_settings({**CXONE, "FOLLOWUP_CXONE_SKIL_ID": "4242"})
    with pytest.raises(ConfigError, match="did you mean cxone_skill_id"):
        Settings(api_dialect="cxone", cxone_skil_id=4242)
    monkeypatch.setenv("FOLLOWUP_CXONE_SKIL_ID", "4242")
    with pytest.raises(ConfigError, match="FOLLOWUP_CXONE_SKIL_ID: unknown setting; did you"):
        Settings()


def test_platform_settings_are_given_by_name_or_read_from_the_environment(
    no_settings_in_environment: pytest.MonkeyPatch,
) -> None:
    monkeypatch = no_settings_in_environment
    by_name = Settings(api_dialect="cxone", cxone_skill_id=5, cxone_access_key_secret="k-9z")
    own = cxone.of(by_name)
    assert own.skill_id == 5 and own.phone_format == "e164"
    assert "k-9z" not in repr(by_name) and "k-9z" not in str(by_name)
    assert own.access_key_secret is not None
    assert own.access_key_secret.get_secret_value() == "k-9z"

    for name, value in CXONE.items():
        monkeypatch.setenv(name, value)
    from_environment = Settings()
    assert cxone.of(from_environment).skill_id == 4242
    assert from_environment.effective_token_url == cxone.DEFAULT_TOKEN_URL
    assert from_environment.api_discovered
    assert Settings(cxone_skill_id=6).platform_settings == cxone.CxoneSettings(skill_id=6)

    with pytest.raises(ConfigError, match="FOLLOWUP_API_DIALECT is conversations"):
        cxone.of(load_settings({}))


def test_a_dialect_not_in_the_table_is_refused_listing_the_table() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"FOLLOWUP_API_DIALECT": "avaya"})
    assert "FOLLOWUP_API_DIALECT: 'avaya' is no platform; one of conversations, genesys, cxone" in (
        str(caught.value)
    )


def test_a_platform_that_cannot_answer_refuses_the_questions() -> None:
    with pytest.raises(ConfigError, match="FOLLOWUP_RECONCILE=true need a platform that can"):
        load_settings({"FOLLOWUP_RECONCILE": "true"})
    assert load_settings({**CXONE, "FOLLOWUP_CHECK_AGENT_BUSY": "true"}).check_agent_busy


def test_the_request_rule_is_the_profiles() -> None:
    request = FollowUpRequest(contact_id="c-1", user_id="u-1001", phone_number="+14155550123")
    assert platform_errors(request, "conversations") == []
    (error,) = platform_errors(request, "cxone")
    assert error.field == "user_id" and "numeric" in error.message
    assert platform_errors(request.model_copy(update={"user_id": "1001"}), "cxone") == []


FOURTH_PROFILE = """
from pydantic import Field

from followup.config.platform_profile import PlatformSettings, Profile


class FourthSettings(PlatformSettings):
    site: str = Field(description="the site's name")


class FourthProfile(Profile):
    title = "Fourth Contact"
    settings = FourthSettings

    def default_api_base_url(self, own):
        return f"https://{own.site}.fourth.test"

    def request_errors(self, request):
        return [] if request.user_id.startswith("a-") else [("user_id", "starts with a-")]


PROFILE = FourthProfile()
"""
FOURTH_CLIENT = """
from followup.worker.platforms.base import CallRequest


class FourthPlatform:
    name = "fourth"

    def __init__(self, settings):
        self.site = settings.platform_settings.site

    def call_request(self, request, request_id):
        return CallRequest("POST", f"/sites/{self.site}/calls", json={"to": request.phone_number})


def build(settings, http):
    return FourthPlatform(settings)
"""


def test_a_fourth_platform_is_one_package_and_one_line_in_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "fourth_platform"
    package.mkdir()
    (package / "__init__.py").write_text('"""A fourth platform."""\n')
    (package / "profile.py").write_text(textwrap.dedent(FOURTH_PROFILE))
    (package / "client.py").write_text(textwrap.dedent(FOURTH_CLIENT))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(platforms.PLATFORMS, "fourth", "fourth_platform")

    settings = load_settings({"FOLLOWUP_API_DIALECT": "fourth", "FOLLOWUP_FOURTH_SITE": "eu"})
    assert settings.effective_api_base_url == "https://eu.fourth.test"
    assert settings.effective_token_url == "https://eu.fourth.test/oauth/token"
    http = PlatformHttp(timeout_s=1, keepalive_s=0, max_connections=1)
    request = FollowUpRequest(contact_id="c-1", user_id="a-7", phone_number="+14155550123")
    call = platform_for(settings, http).call_request(request, "r-1")
    assert (call.method, call.path) == ("POST", "/sites/eu/calls")
    assert platform_errors(request.model_copy(update={"user_id": "b-7"}), "fourth")[0].field == (
        "user_id"
    )

    with pytest.raises(ConfigError, match="FOLLOWUP_FOURTH_SITE must be set for FOLLOWUP_API"):
        load_settings({"FOLLOWUP_API_DIALECT": "fourth"})
    with pytest.raises(ConfigError, match="FOLLOWUP_FOURTH_SITE apply to Fourth Contact only"):
        load_settings({"FOLLOWUP_FOURTH_SITE": "eu"})


def test_a_platform_in_the_table_that_is_not_installed_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(platforms.PLATFORMS, "fourth", "followup.worker.platforms.fourth")
    with pytest.raises(ConfigError) as caught:
        load_settings({"FOLLOWUP_API_DIALECT": "fourth"})
    assert "FOLLOWUP_API_DIALECT" in str(caught.value)
    assert "followup.worker.platforms.fourth" in str(caught.value)


def test_a_platform_variable_in_lower_case_is_read_as_a_common_one_is(
    no_settings_in_environment: pytest.MonkeyPatch,
) -> None:
    """pydantic-settings reads FOLLOWUP_* case-insensitively; a platform's own variables are
    read (and refused) alike."""
    monkeypatch = no_settings_in_environment
    monkeypatch.setenv("followup_api_dialect", "genesys")
    monkeypatch.setenv("followup_max_attempts", "7")
    monkeypatch.setenv("followup_genesys_region", "mypurecloud.ie")
    settings = Settings()
    assert (settings.api_dialect, settings.max_attempts) == ("genesys", 7)
    assert settings.effective_api_base_url == "https://api.mypurecloud.ie"

    monkeypatch.setenv("followup_api_dialect", "cxone")
    monkeypatch.delenv("followup_genesys_region")
    monkeypatch.setenv("followup_cxone_skill_id", "4242")
    assert cxone.of(Settings()).skill_id == 4242

    monkeypatch.delenv("followup_api_dialect")
    with pytest.raises(ConfigError, match="FOLLOWUP_CXONE_SKILL_ID apply to NICE CXone only"):
        Settings()
    with pytest.raises(ConfigError, match="FOLLOWUP_CXONE_SKIL_ID: unknown setting; did you"):
        load_settings({"followup_cxone_skil_id": "4242"})


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        (
            {**CXONE, "FOLLOWUP_CXONE_SKILL_ID": "x", "FOLLOWUP_MAX_ATTEMPTS": "0"},
            ["FOLLOWUP_MAX_ATTEMPTS: Input should be", "FOLLOWUP_CXONE_SKILL_ID: Input should be"],
        ),
        (
            {"FOLLOWUP_GENESYS_REGION": "mypurecloud.ie", "FOLLOWUP_MAX_ATTEMPTS": "0"},
            ["FOLLOWUP_MAX_ATTEMPTS: Input should be", "FOLLOWUP_GENESYS_REGION apply to Genesys"],
        ),
        (
            {"FOLLOWUP_API_DIALECT": "cxone", "FOLLOWUP_GENESYS_REGION": "mypurecloud.ie"},
            ["FOLLOWUP_GENESYS_REGION apply to Genesys", "FOLLOWUP_CXONE_SKILL_ID must be set"],
        ),
        (  # an unknown variable hides nothing
            {
                "FOLLOWUP_API_DIALECT": "cxone",
                "FOLLOWUP_MAX_ATEMPTS": "3",
                "FOLLOWUP_REDIS_URL": "http://x",
                "FOLLOWUP_CXONE_PHONE_FORMAT": "bogus",
            },
            [
                "FOLLOWUP_MAX_ATEMPTS: unknown setting; did you mean FOLLOWUP_MAX_ATTEMPTS?",
                "FOLLOWUP_REDIS_URL: must start with redis://",
                "FOLLOWUP_CXONE_SKILL_ID must be set",
                "FOLLOWUP_CXONE_PHONE_FORMAT: Input should be",
            ],
        ),
    ],
)
def test_every_bad_variable_is_named_at_once_a_platforms_own_too(
    environ: dict[str, str], expected: list[str]
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ)
    for part in expected:
        assert part in str(caught.value)


def test_an_unknown_setting_by_name_hides_no_bad_value(
    no_settings_in_environment: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings(max_atempts=3, redis_url="http://x")
    said = str(caught.value)
    assert "max_atempts: unknown setting; did you mean max_attempts?" in said
    assert "FOLLOWUP_REDIS_URL: must start with redis://" in said


def test_an_empty_variable_of_another_platform_is_accepted() -> None:
    """docker compose passes every variable it names through, set or not: empty is unset."""
    settings = load_settings({"FOLLOWUP_CXONE_SKILL_ID": "", "FOLLOWUP_GENESYS_REGION": ""})
    assert settings.api_dialect == "conversations"
