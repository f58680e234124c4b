"""Keep phone numbers and secrets out of anything a person or a log store can read."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# E.164-looking numbers (with +) and long bare digit runs. Timestamps in free text may be
# masked too: a false positive costs readability, a false negative leaks a customer's number.
_PHONE_LIKE = re.compile(r"\+\d[\d\s-]{3,18}\d|\b\d{8,15}\b")
_SECRET_KEYS = re.compile(r"secret|password|token|authorization|credential", re.IGNORECASE)
REDACTED = "[redacted]"


def mask_phone(number: str) -> str:
    """'+61298765432' -> '+61*******32': keeps the country-code end and the last two digits."""
    if "*" in number:  # already masked: masking twice would hide even the country code
        return number
    digits = re.sub(r"\D", "", number)
    if len(digits) <= 4:
        return "*" * len(number)
    prefix = "+" if number.strip().startswith("+") else ""
    return f"{prefix}{digits[:2]}{'*' * (len(digits) - 4)}{digits[-2:]}"


def mask_text(text: str) -> str:
    """Mask every phone-like run inside free text (error messages, API bodies)."""
    return _PHONE_LIKE.sub(lambda match: mask_phone(match.group(0)), text)


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
