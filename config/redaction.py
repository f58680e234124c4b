"""Keep phone numbers, personal data and secrets out of anything a person or a log store can
read: logs, Flower, status listings, error messages.

Phone numbers are masked two ways: by a general pattern (8 to 15 digits, with or without +,
%2B or 00, in any common grouping: spaces, dots, dashes, slashes, parentheses), and, while a
request is being handled, by the very number it dials, in any grouping of its digits
(`dialling`). A false positive costs readability; a false negative leaks a customer's number.
`reason` and `metadata` are personal data too: shown as keys and sizes, never values.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import phonenumbers

REDACTED = "[redacted]"
_SEP = r"[\s.\-/()]"
# A Redis stream entry id (`<ms>-<seq>`: 13 digits from 1 in milliseconds since 1970, a dash,
# a sequence number), bare, stays readable: no phone number is 13 digits starting with 1
# (country code 1 numbers have 11), and one with +, %2B or 00 before it is masked all the same.
_ENTRY_ID = r"1\d{12}-\d{1,20}(?![\w-])"
_PHONE_LIKE = re.compile(
    rf"(?<![\w%-])(?!{_ENTRY_ID})(?:\+|%2[Bb])?\(?\d(?:{_SEP}{{0,3}}\d){{7,14}}(?![\w-])",
)
_SECRET_KEYS = re.compile(r"secret|password|token|authorization|credential", re.IGNORECASE)
_dialled: ContextVar[re.Pattern[str] | None] = ContextVar("followup_dialled", default=None)


def mask_phone(number: str) -> str:
    """'+61298765432' -> '+61*******32': keeps the country-code end and the last two digits."""
    if "*" in number:  # already masked: masking twice would hide even the country code
        return number
    plus = number.strip().startswith(("+", "%2B", "%2b"))
    digits = re.sub(r"\D", "", re.sub(r"^\s*%2[Bb]", "", number))
    if len(digits) <= 4:
        return "*" * len(number)
    prefix = "+" if plus else ""
    return f"{prefix}{digits[:2]}{'*' * (len(digits) - 4)}{digits[-2:]}"


@lru_cache(maxsize=4096)
def _number_pattern(e164: str) -> re.Pattern[str] | None:
    """The digits of this number's national part with any separators between them, and what
    may stand before them: +, %2B or 00 and the country code, or a trunk 0 in parentheses."""
    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return None
    national = phonenumbers.national_significant_number(parsed)
    if len(national) < 4:
        return None
    sep = f"{_SEP}*"
    country = sep.join(str(parsed.country_code))
    prefix = rf"(?:(?:\+|%2[Bb]|00)?{sep}{country}{sep})?(?:\(?0\)?{sep})?"
    return re.compile(prefix + sep.join(national))


@contextmanager
def dialling(e164: str) -> Iterator[None]:
    """While handling a request: mask its own number in every form, wherever text is masked."""
    reset = _dialled.set(_number_pattern(e164))
    try:
        yield
    finally:
        _dialled.reset(reset)


def mask_text(text: str) -> str:
    """Mask every phone-like run inside free text (error messages, API bodies, log values)."""
    dialled = _dialled.get()
    if dialled is not None:
        text = dialled.sub(lambda m: mask_phone(m.group(0)), text)
    return _PHONE_LIKE.sub(lambda match: mask_phone(match.group(0)), text)


_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@/\s]*@")


def mask_url(url: str) -> str:
    """A URL's password is a secret: 'redis://:s3cret@host:6379/0' -> 'redis://:****@host:6379/0'
    (a user name stays; so does a URL without a password)."""
    return _URL_PASSWORD.sub(lambda m: f"{m.group('head')}****@", url)


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEYS.search(key))


def redact(value: Any) -> Any:
    """Recursively mask phone-like text and blank out values under secret-sounding keys."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if isinstance(k, str) and is_secret_key(k) else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    return value


# Values that identify, and may be shown: ids (masked all the same). Everything else in a
# message is shown by its size only.
_SHOWN = {"contact_id", "user_id", "idempotency_key", "request_id"}
_REPR_CHARS = 1024


def summarize(value: Any, key: str | None = None, depth: int = 0) -> Any:
    """A task argument as a dashboard may show it: ids, a masked number, and for anything
    else (reason, metadata, unknown fields) its keys and sizes, never its values."""
    if isinstance(value, Mapping) and depth < 3:
        items = list(value.items())[:20]
        return {mask_text(str(k)[:64]): summarize(v, str(k), depth + 1) for k, v in items}
    if isinstance(value, list | tuple) and depth < 3:
        return [summarize(v, None, depth + 1) for v in value[:10]]
    if isinstance(value, str):
        if key in _SHOWN and len(value) <= 128:
            return mask_text(value)
        if key == "phone_number" and len(value) <= 32:
            return mask_phone(value)
        return f"<{len(value)} chars>"
    if value is None or isinstance(value, bool):
        return value
    return f"<{type(value).__name__}>"


def argument_reprs(args: Any, kwargs: Any) -> tuple[str, str]:
    """argsrepr and kwargsrepr for a task message: summaries, bounded (of whatever a sender
    wrote: args that are not a list, kwargs that are not a dict, are summarized as they are)."""
    args = list(args) if isinstance(args, list | tuple) else [] if args is None else args
    kwargs = dict(kwargs) if isinstance(kwargs, dict) else {} if kwargs is None else kwargs
    return repr(summarize(args))[:_REPR_CHARS], repr(summarize(kwargs))[:_REPR_CHARS]


def url_host(url: str) -> str:
    """A URL as a message may show it: scheme, host, port and path; never a user, a password
    or a query (a Redis, broker or API URL can carry credentials)."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(a URL that does not parse)"
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"
