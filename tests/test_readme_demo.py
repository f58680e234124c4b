"""The demo output the README shows is what `followup demo` prints: the same lines, cells
and checks, ids, times, ports, paths and the cities of the hour aside."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from followup.cli.demo import CITIES
from tests.conftest import FOLLOWUP_BIN

pytestmark = pytest.mark.integration
README = (Path(__file__).resolve().parent.parent / "README.md").read_text()

_SHAPES = [
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<uuid>"),
    (re.compile(r"\b[0-9a-f]{12}\b"), "<id>"),
    (re.compile(r"redis://[^\s)]+"), "<redis>"),
    (re.compile(r"http://127\.0\.0\.1:\d+"), "<sim>"),
    (re.compile(r"/tmp/\S+?(?=\))"), "<logs>"),
    (
        re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}(:\d{2})?( UTC)?|\d{2}:\d{2}(:\d{2})?( UTC)?"),
        "<time>",
    ),
    (re.compile(r"\b(Mon|Tue|Wed|Thu|Fri|Sat|Sun)\b"), "<day>"),
    (re.compile(r"\d+\.\ds to settle"), "<s> to settle"),
    (re.compile("|".join(sorted(map(re.escape, CITIES), key=len, reverse=True))), "<city>"),
    (re.compile(r"^-+$"), "---"),
]


def shape(text: str) -> list[list[str]]:
    """Each line as its cells (split where columns are), every varying part replaced."""
    lines = []
    for line in text.strip().splitlines():
        cells = []
        for cell in re.split(r"\s{2,}", line.strip()):
            for pattern, replacement in _SHAPES:
                cell = pattern.sub(replacement, cell)
            cells.append(cell)
        lines.append(cells)
    return lines


def test_the_readme_shows_the_demo_as_it_runs(redis_url: str) -> None:
    shown = README.split("says where they are and how to remove them", 1)[1]
    shown = shown.split("```\n", 1)[1].split("```", 1)[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOLLOWUP_")}
    env["FOLLOWUP_REDIS_URL"] = redis_url
    demo = subprocess.run(
        [FOLLOWUP_BIN, "demo"], env=env, capture_output=True, text=True, timeout=600
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert shape(demo.stdout) == shape(shown)
