"""Configuration errors name the variable; nothing secret or personal is printed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import phonenumbers
import pytest

from followup.cli.local_stack import Stack
from followup.config.celery import create_app
from followup.config.logging import redact_event
from followup.config.redaction import argument_reprs, dialling, mask_phone, mask_text, mask_url
from followup.config.settings import ConfigError, Settings, load_settings
from followup.worker.backoff import retry_delay
from tests.conftest import followup

CELERY = str(Path(sys.executable).parent / "celery")


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (
            "FOLLOWUP_HTTP_TIMEOUT_S",
            "abc",
            "FOLLOWUP_HTTP_TIMEOUT_S: Input should be a valid number",
        ),
        (
            "FOLLOWUP_MAX_ATTEMPTS",
            "0",
            "FOLLOWUP_MAX_ATTEMPTS: Input should be greater than or equal to 1",
        ),
        ("FOLLOWUP_REDIS_URL", "localhost:6379", "FOLLOWUP_REDIS_URL: must start with redis://"),
        (
            "FOLLOWUP_BROKER_URL",
            "kafka://k:9092",
            "FOLLOWUP_BROKER_URL: must start with redis://, rediss://, unix://, amqp://",
        ),
        ("FOLLOWUP_QUEUE_TYPE", "stream", "FOLLOWUP_QUEUE_TYPE: Input should be 'quorum' or"),
        (
            "FOLLOWUP_REDIS_WAIT_REPLICAS",
            "-1",
            "FOLLOWUP_REDIS_WAIT_REPLICAS: Input should be greater than or equal to 0",
        ),
        ("FOLLOWUP_API_BASE_URL", "ftp://x", "FOLLOWUP_API_BASE_URL: must be an http"),
        (
            "FOLLOWUP_CLAIM_LEASE_S",
            "3",
            "FOLLOWUP_CLAIM_LEASE_S must be longer than 4 x FOLLOWUP_HTTP_TIMEOUT_S",
        ),
        ("FOLLOWUP_LOG_FORMAT", "xml", "FOLLOWUP_LOG_FORMAT: Input should be 'console' or 'json'"),
        (
            "FOLLOWUP_RECORD_TTL_S",
            "7000",
            "FOLLOWUP_RECORD_TTL_S must be more than 2 x FOLLOWUP_VISIBILITY_TIMEOUT_S",
        ),
    ],
)
def test_a_wrong_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert expected in str(caught.value)


def test_defaults_follow_the_redis_and_api_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FOLLOWUP_BROKER_URL", "FOLLOWUP_TOKEN_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FOLLOWUP_REDIS_URL", "redis://r:6379/2")
    monkeypatch.setenv("FOLLOWUP_API_BASE_URL", "https://api.example.test/")
    settings = Settings()
    assert settings.effective_broker_url == "redis://r:6379/2"
    assert settings.effective_token_url == "https://api.example.test/oauth/token"


def test_a_sentinel_store_needs_a_broker_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FOLLOWUP_BROKER_URL", raising=False)
    monkeypatch.setenv("FOLLOWUP_REDIS_URL", "redis+sentinel://s1:26379,s2:26379/mymaster/0")
    with pytest.raises(ConfigError, match="FOLLOWUP_BROKER_URL must be set when FOLLOWUP_REDIS"):
        load_settings()
    monkeypatch.setenv("FOLLOWUP_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
    assert load_settings().broker_is_rabbitmq


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
def test_on_rabbitmq_the_queue_has_its_type_and_every_publish_is_confirmed(
    monkeypatch: pytest.MonkeyPatch, queue_type: str
) -> None:
    monkeypatch.setenv("FOLLOWUP_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
    monkeypatch.setenv("FOLLOWUP_QUEUE_TYPE", queue_type)
    settings = load_settings()
    app = create_app(settings)  # what the worker, the producer, the sweeper and Flower use
    queue = app.amqp.queues[settings.queue]
    assert queue.queue_arguments == {"x-queue-type": queue_type}
    assert queue.exchange.type == "topic"  # native delayed delivery routes through topics
    assert app.conf.broker_transport_options["confirm_publish"] is True
    assert app.conf.task_acks_late and app.conf.worker_prefetch_multiplier == 1


def test_missing_credentials_name_both_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FOLLOWUP_CLIENT_ID", raising=False)
    monkeypatch.delenv("FOLLOWUP_CLIENT_SECRET", raising=False)
    with pytest.raises(ConfigError, match="FOLLOWUP_CLIENT_ID, FOLLOWUP_CLIENT_SECRET must be set"):
        Settings().require_credentials()


def test_the_secret_is_never_in_the_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOLLOWUP_CLIENT_SECRET", "hunter2-very-secret")
    assert "hunter2" not in repr(Settings())


def test_url_passwords_are_secrets_in_the_settings_repr_and_the_demo() -> None:
    """Issue 26.7: repr(Settings) and `followup demo`'s "using the Redis at ..." line."""
    settings = load_settings(
        {
            "FOLLOWUP_REDIS_URL": "redis://:redis-pass-1@redis.internal:6379/0",
            "FOLLOWUP_BROKER_URL": "amqp://fleet:rabbit-pass-2@mq.internal:5672/followup",
        }
    )
    for shown in (repr(settings), str(settings)):
        assert "redis-pass-1" not in shown and "rabbit-pass-2" not in shown
        assert "redis://:****@redis.internal:6379/0" in shown
        assert "amqp://fleet:****@mq.internal:5672/followup" in shown
    stack = Stack("demo-x", "redis://default:redis-pass-1@redis.internal:6379/0")
    origin = stack.redis_origin
    stack.log_dir.rmdir()  # nothing was started
    assert origin == "the Redis at redis://default:****@redis.internal:6379/0"
    assert mask_url("redis://redis.internal:6379/0") == "redis://redis.internal:6379/0"


def test_a_queue_that_could_name_a_store_key_is_refused_naming_the_variable() -> None:
    """Issue 26.3: FOLLOWUP_QUEUE comes from configuration, and cannot name a store key."""
    for queue in ("followup:outcomes", "unacked", "_kombu.binding.x", "amq.direct", ""):
        with pytest.raises(ConfigError, match="FOLLOWUP_QUEUE"):
            load_settings({"FOLLOWUP_QUEUE": queue})
    assert load_settings({"FOLLOWUP_QUEUE": "followup-eu.1"}).queue == "followup-eu.1"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"FOLLOWUP_HTTP_TIMEOUT_S": "-1"}, "FOLLOWUP_HTTP_TIMEOUT_S"),
        ({"FOLLOWUP_CLIENT_ID": ""}, "FOLLOWUP_CLIENT_ID"),
    ],
)
def test_a_worker_with_bad_settings_exits_at_start_naming_the_variable(
    env: dict[str, str], expected: str
) -> None:
    import os

    result = subprocess.run(
        [CELERY, "-A", "followup", "worker", "--without-mingle", "--without-gossip"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_masking() -> None:
    assert mask_phone("+61298765432") == "+61*******32"
    assert mask_phone(mask_phone("+61298765432")) == "+61*******32"
    assert mask_phone("%2B61298765432") == "+61*******32"
    assert mask_text("call +61298765432 or +44 20 7946 0958 now") == (
        "call +61*******32 or +44********58 now"
    )


def _formats(e164: str) -> list[str]:
    """The number as phonenumbers writes it, and as people and systems punctuate it."""
    number = phonenumbers.parse(e164)
    f = phonenumbers.PhoneNumberFormat
    written = [
        phonenumbers.format_number(number, fmt)
        for fmt in (f.E164, f.INTERNATIONAL, f.NATIONAL, f.RFC3966)
    ]
    digits = e164[1:]
    national = phonenumbers.national_significant_number(number)
    return [
        *written,
        e164.replace("+", "%2B"),  # URL-encoded
        " ".join([digits[:2], digits[2:3], digits[3:7], digits[7:]]),  # 61 2 9876 5432
        "-".join([digits[:2], digits[2:3], digits[3:7], digits[7:]]),  # 61-2-9876-5432
        "+" + ".".join([digits[:2], digits[2:3], digits[3:7], digits[7:]]),  # +61.2.9876.5432
        "00" + digits,
        national,
        f"{national[:3]} {national[3:6]} {national[6:]}",
    ]


@pytest.mark.parametrize("e164", ["+61298765432", "+14155550100", "+442079460958"])
def test_every_format_of_a_number_is_masked_in_free_text(e164: str) -> None:
    last_four = e164[-6:-2]  # digits that a mask never shows
    for written in _formats(e164):
        general = mask_text(f"the platform said: {written} is busy")
        assert last_four not in general.replace(" ", "").replace("-", ""), (written, general)
        with dialling(e164):
            dialled = mask_text(f"code=callee.{written}.busy")
        assert last_four not in dialled.replace(" ", "").replace("-", ""), (written, dialled)


def test_masking_leaves_ids_and_times_readable() -> None:
    text = "conversation 74346afa-6512-4537-9876-f354516659d2 at 10:08:04, request 5f0c1a2b"
    assert mask_text(text) == text
    # outcome-stream entry ids (<ms>-<seq>), alone or as a gap, as outcomes() logs them
    entries = "first=1795864626462-0 last=1795864626531-12 gap 1795864626462-0..1795864626531-0"
    assert mask_text(entries) == entries
    # a number shaped like one is masked all the same, with its +, or when dialled
    assert "4626" not in mask_text("call +1795864626462-0 now")
    with dialling("+14155550100"):
        assert "5550" not in mask_text("1415555010012-3")


def test_task_arguments_show_ids_and_sizes_never_personal_values() -> None:
    args, kwargs = argument_reprs(
        (),
        {
            "request": {
                "contact_id": "c-1",
                "user_id": "u-1",
                "phone_number": "+61298765432",
                "reason": "call Jane Doe back",
                "metadata": {"email": "jane.doe@example.com", "vip": True},
            }
        },
    )
    assert args == "[]"
    assert "c-1" in kwargs and "+61*******32" in kwargs
    for value in ("Jane", "jane.doe", "98765432"):
        assert value not in kwargs
    assert "'email': '<20 chars>'" in kwargs


def test_log_events_drop_secrets_and_mask_numbers() -> None:
    event = redact_event(
        None,
        "info",
        {
            "event": "calling +61298765432",
            "client_secret": "s3cr3t",
            "authorization": "Bearer abc",
            "access_token": "tok",
            "detail": {"to": "+61298765432"},
        },
    )
    text = repr(event)
    for leaked in ("+61298765432", "s3cr3t", "Bearer abc", "tok'"):
        assert leaked not in text


def test_backoff_grows_is_capped_and_honours_retry_after() -> None:
    delays = [retry_delay(n, base_s=1, max_s=8) for n in range(1, 8)]
    assert all(
        0.5 * min(8, 2 ** (n - 1)) <= d <= min(8, 2 ** (n - 1)) for n, d in enumerate(delays, 1)
    )
    assert retry_delay(1, base_s=1, max_s=8, retry_after_s=30) >= 30


def test_the_cli_exits_2_naming_a_bad_setting() -> None:
    result = followup(
        "enqueue",
        "--contact-id",
        "c-1",
        "--user-id",
        "u-1",
        "--phone-number",
        "+61298765432",
        env={"FOLLOWUP_MAX_ATTEMPTS": "0"},
    )
    assert result.returncode == 2
    assert "FOLLOWUP_MAX_ATTEMPTS: Input should be greater than or equal to 1" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_cli_says_when_redis_is_unreachable() -> None:
    result = followup("list", env={"FOLLOWUP_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert result.returncode == 1
    assert "cannot reach Redis" in result.stderr
    assert "FOLLOWUP_REDIS_URL" in result.stderr


def test_the_cli_names_an_unreadable_batch_file(tmp_path: Path) -> None:
    result = followup("enqueue", "--file", str(tmp_path / "missing.jsonl"))
    assert result.returncode == 2
    assert "--file: cannot read it" in result.stderr


@pytest.mark.parametrize(
    ("variable", "closest"),
    [
        ("FOLLOWUP_RATE_LIMIT", "FOLLOWUP_RATE_LIMIT_PER_S"),
        ("FOLLOWUP_REDIS_URI", "FOLLOWUP_REDIS_URL"),
    ],
)
def test_an_unknown_variable_is_refused_naming_the_closest(
    monkeypatch: pytest.MonkeyPatch, variable: str, closest: str
) -> None:
    monkeypatch.setenv(variable, "10")
    for read in (load_settings, Settings):
        with pytest.raises(ConfigError) as caught:
            read()
        assert f"{variable}: unknown setting; did you mean {closest}?" in str(caught.value)
    with pytest.raises(ConfigError, match=f"did you mean {closest}"):
        load_settings({variable: "10"})


def test_the_test_suites_own_variables_are_not_settings_and_are_allowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FOLLOWUP_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
    load_settings()


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"http_timeout_s": "abc"}, "FOLLOWUP_HTTP_TIMEOUT_S: Input should be a valid number"),
        ({"redis_url": "localhost:6379"}, "FOLLOWUP_REDIS_URL: must start with redis://"),
        ({"rate_limit": 10}, "rate_limit: unknown setting; did you mean rate_limit_per_s?"),
    ],
)
def test_settings_built_in_python_raise_config_error(
    values: dict[str, object], expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings(**values)  # type: ignore[arg-type]
    assert expected in str(caught.value)


def test_every_entry_point_refuses_an_unknown_variable() -> None:
    import os

    env = {**os.environ, "FOLLOWUP_RATE_LIMIT": "10"}
    for command in (
        [sys.executable, "-m", "followup.cli.main", "list"],
        [str(Path(sys.executable).parent / "followup"), "stats"],
        [str(Path(sys.executable).parent / "followup"), "simulator", "--port", "0"],
        [CELERY, "-A", "followup", "worker", "--without-mingle", "--without-gossip"],
        [CELERY, "-A", "followup", "flower", "--port=0"],
    ):
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, (command, result.stderr[-2000:])
        assert "FOLLOWUP_RATE_LIMIT: unknown setting; did you mean FOLLOWUP_RATE_LIMIT_PER_S?" in (
            result.stderr
        ), (command, result.stderr[-2000:])
        assert "Traceback" not in result.stderr, command


def test_tracebacks_in_logs_are_masked_too() -> None:
    """An exception's message and traceback, from our events and from other libraries'
    records, go through the same masking as the event itself."""
    script = """
import logging, structlog
from followup.config.logging import configure_logging
from followup.config.settings import Settings
configure_logging(Settings())
try:
    raise ValueError("no route to +61298765432")
except ValueError:
    structlog.get_logger("followup.x").exception("ours failed")
    logging.getLogger("celery.x").exception("theirs failed")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("ValueError") >= 2, done.stderr
    assert "+61298765432" not in done.stderr
    assert "61298765432" not in done.stderr
