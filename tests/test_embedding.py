"""followup embeds in other services: one `followup` namespace, layers that depend one way,
no side effects on import or enqueue, and the built wheel works inside a host project that
has its own `config` package, `tasks` module, structlog set-up and Celery app."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from followup.worker import store_lua
from followup.worker.records import TERMINAL_STATES, WAITING_STATES

ROOT = Path(__file__).resolve().parent.parent
SUBPACKAGES = ("config", "tasks", "worker", "simulator", "cli")

# Every platform package (a folder of worker/platforms/), found: its package and `profile`
# are what the settings know of it, its `client` is worker runtime.
PLATFORM_PACKAGES = sorted(
    init.parent.name for init in (ROOT / "worker" / "platforms").glob("*/__init__.py")
)

# Dependencies run one way: a module may import from its own layer and the layers before it.
LAYERS: list[tuple[str, set[str]]] = [
    (
        "config",
        {
            "config.settings",
            "config.redaction",
            "config.logging",
            "config.broker",
            "config.celery",
            "config.platform_profile",
            # The table and each platform's profile: what the settings know of a platform.
            "worker",
            "worker.platforms",
            *(f"worker.platforms.{name}" for name in PLATFORM_PACKAGES),
            *(f"worker.platforms.{name}.profile" for name in PLATFORM_PACKAGES),
        },
    ),
    ("request model", {"tasks.request"}),
    ("status store", {"worker.records", "worker.store_lua", "worker.store", "worker.stats"}),
    ("producer", {"tasks.publish", "tasks.producer", "tasks.outcomes", "followup"}),
    (
        "worker runtime",
        {
            "worker.backoff",
            "worker.http",
            "worker.metrics",
            "worker.calling_hours",
            "worker.calling_rules",
            "worker.classify",
            "worker.platforms.base",
            *(f"worker.platforms.{name}.client" for name in PLATFORM_PACKAGES),
            "worker.reconciler",
            "worker.tokens",
            "worker.api_client",
            "worker.pipeline",
            "worker.sweeper",
            "worker.runtime",
            "worker.intake",
        },
    ),
    (
        "entry points",
        {"worker.celery_app", "tasks.place_call", "cli.main", "cli.demo", "cli.batch_file"},
    ),
]
# Helpers that sit beside the layers: the simulator (a stand-in for the platform) and the
# local stack and tables the CLI, demo and tests use.
BESIDE = {
    "simulator.server",
    "simulator.state",
    "simulator.contracts",
    "simulator.cxone",
    "simulator.answers",
    "simulator.command",
    "cli.local_stack",
    "cli.table",
}
# Imports inside functions, each for a reason other than dodging a cycle.
DEFERRED_IMPORTS = {
    ("followup", "worker.celery_app"),  # `followup.app`: the worker, only if asked
    ("cli.main", "simulator.server"),  # an extra (aiohttp), only for `followup simulator`
}


def _module_files() -> dict[str, Path]:
    files = {"followup": ROOT / "followup" / "__init__.py"}
    for package in SUBPACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            files[".".join(parts[:-1] if path.stem == "__init__" else parts)] = path
    return files


def _imports(path: Path, known: set[str]) -> tuple[set[str], set[str]]:
    """(our modules imported at the top, our modules imported inside functions); imports
    for type checking only (`if TYPE_CHECKING:`) load nothing and do not count."""
    top, deferred = set(), set()
    tree = ast.parse(path.read_text())
    typing_only = {
        id(inner)
        for node in tree.body
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
        for inner in node.body
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            # `from followup.worker import store_lua` imports a module; `from x import y`, x
            names = [
                f"{node.module}.{a.name}"
                if _short(f"{node.module}.{a.name}") in known
                else node.module
                for a in node.names
            ]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        ours = {_short(n) for n in names if n.startswith("followup")}
        (top if node.col_offset == 0 else deferred).update(ours)
    return top, deferred


def _short(name: str) -> str:
    return name.removeprefix("followup.") if name != "followup" else name


def test_every_module_has_a_layer_and_imports_only_downwards() -> None:
    layer_of = {m: n for n, (_, members) in enumerate(LAYERS) for m in members}
    files = _module_files()
    unplaced = set(files) - set(layer_of) - BESIDE - {*SUBPACKAGES}
    assert not unplaced, f"give these modules a layer: {sorted(unplaced)}"

    for module, path in files.items():
        top, deferred = _imports(path, set(files))
        for target in top:
            if module in layer_of and target in layer_of:
                assert layer_of[target] <= layer_of[module], (
                    f"{module} ({LAYERS[layer_of[module]][0]}) imports {target} "
                    f"({LAYERS[layer_of[target]][0]}): dependencies must run one way"
                )
        for target in deferred:
            assert (module, target) in DEFERRED_IMPORTS, (
                f"{module} imports {target} inside a function; import it at the top"
            )


def test_config_and_the_store_import_no_worker_runtime_and_no_httpx() -> None:
    files = _module_files()
    for module in LAYERS[0][1] | LAYERS[1][1] | LAYERS[2][1] | LAYERS[3][1]:
        text = files[module].read_text()
        assert "import httpx" not in text, module


def test_each_lua_script_reads_exactly_the_arguments_it_declares() -> None:
    for script in store_lua.SCRIPTS:
        declared = (*store_lua.COMMON, *script.params)
        read = set(re.findall(r"ARG\.([a-z_]+)", script.source))
        assert len(declared) == len(set(declared)), script.name
        assert read == set(declared), (script.name, set(declared) ^ read)


def test_a_batch_registers_each_request_with_every_field_a_single_one_has() -> None:
    single = set(store_lua.REGISTER.params)
    read = set(re.findall(r"\br\.([a-z_]+)", store_lua.REGISTER.source))
    assert read == single
    shared = set(
        re.findall(r"\br\.([a-z_]+) *[,=]", store_lua.REGISTER_MANY.body.split("local out")[1])
    )
    assert set(store_lua.REGISTER_MANY.each) | shared == single


def test_the_lua_scripts_are_built_from_the_python_state_sets() -> None:
    source = store_lua.CLAIM.source
    for name, states in (("TERMINAL", TERMINAL_STATES), ("WAITING", WAITING_STATES)):
        line = next(x for x in source.splitlines() if x.startswith(f"local {name} = "))
        assert {p.split("=")[0].strip() for p in line.split("{")[1].rstrip("}").split(",")} == {
            s.value for s in states
        }
    common = {name: 1 for name in store_lua.COMMON}
    with pytest.raises(TypeError, match="missing \\['token'\\]"):
        store_lua.UNSEND.args(**common, id="r-1", detail="")
    with pytest.raises(TypeError, match="unexpected \\['tokn'\\]"):
        store_lua.UNSEND.args(**common, id="r-1", token="t", detail="", tokn="t")


IMPORT_EVERYTHING = """
import importlib, json, os, pkgutil, sys
import followup
for sub in ("config", "tasks", "worker", "simulator", "cli"):
    package = importlib.import_module("followup." + sub)
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(info.name)
followup.app  # the worker's entry point too
import followup.tasks.place_call
by_file = {}
for name, module in list(sys.modules.items()):
    path = getattr(module, "__file__", None)
    if path and os.path.realpath(path).startswith(sys.argv[1]):
        by_file.setdefault(os.path.realpath(path), []).append(name)
print(json.dumps({"twice": {f: n for f, n in by_file.items() if len(n) > 1},
                  "top_level": sorted(n for n in sys.modules if n.split(".")[0] in
                                      ("config", "tasks", "worker", "cli", "simulator"))}))
"""


def test_no_module_is_loaded_twice_under_two_names(env: dict[str, str]) -> None:
    """From the repository's own folder (the worst case: its folders are on sys.path)."""
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERYTHING, str(ROOT)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        check=True,
    )
    seen = json.loads(out.stdout)
    assert seen == {"twice": {}, "top_level": []}


HOST_SCRIPT = """
import json, logging, os, sys
import structlog
from celery import Celery, current_app

host_app = Celery("host", broker="memory://")  # the host's own app: current and default
import tasks  # the host's module with a @shared_task
import config.settings  # the host's settings package (cookiecutter-django style)

def host_processor(logger, method, event_dict):
    return event_dict

structlog.configure(processors=[host_processor, structlog.processors.JSONRenderer()])
logging.getLogger("httpx").setLevel(logging.DEBUG)
root_handlers = list(logging.getLogger().handlers)
structlog_before = structlog.get_config()["processors"]

import followup
from followup import FollowUpRequest, IdempotencyConflict, InvalidRequest, enqueue_follow_up
from followup import enqueue_many

request_id = enqueue_follow_up(contact_id="c-host", user_id="u-1", phone_number="+61298765432")
batch = enqueue_many([{"contact_id": "c-h2", "user_id": "u-1", "phone_number": "+61298765433"}])
record = followup.get_status(request_id)
try:
    enqueue_follow_up(contact_id="c-1", user_id="u-1", phone_number="+612987")
    invalid = None
except InvalidRequest as exc:
    invalid = exc.errors[0].field

os.environ["FOLLOWUP_LOG_LEVEL"] = "LOUD"
try:
    followup.FollowUpClient()
    bad_setting = None
except followup.ConfigError as exc:
    bad_setting = str(exc)

print(json.dumps({
    "state": record.state if record else None,
    "batch": len(batch),
    "invalid": invalid,
    "bad_setting": bad_setting,
    "config_file": config.settings.__file__,
    "tasks_file": tasks.__file__,
    "followup_file": followup.__file__,
    "current_app": current_app.main,
    "shared_task_app": tasks.host_task.app.main,
    "structlog_unchanged": structlog.get_config()["processors"] == structlog_before,
    "httpx_level": logging.getLogger("httpx").level,
    "root_handlers_unchanged": logging.getLogger().handlers == root_handlers,
    "loaded": sorted(m for m in sys.modules if m.startswith("followup")),
    "httpx_loaded": "httpx" in sys.modules,
    "extras_loaded": sorted(m for m in ("aiohttp", "flower") if m in sys.modules),
}))
"""


def _build_wheel(tmp_path: Path, extra_package: str = "") -> Path:
    """Build from a copy of the sources, so no earlier build output can slip into it
    (`extra_package`: a folder to add to the copy as an empty package)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for folder in ("followup", *SUBPACKAGES):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    if extra_package:
        (src / extra_package).mkdir()
        (src / extra_package / "__init__.py").write_text("")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(src),
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    return next((tmp_path / "dist").glob("followup-*.whl"))


def test_the_wheel_installs_only_the_followup_namespace_and_every_package_in_it(
    tmp_path: Path,
) -> None:
    """Every package under the mapped folders is in the wheel unlisted: a fourth platform is
    one new package (here a throwaway one) and one line in the table, nothing in the build."""
    wheel = _build_wheel(tmp_path, extra_package="worker/platforms/fourth")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {
        "followup",
        wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info",
    }
    packages = [
        "followup/" + str(init.relative_to(ROOT))
        for folder in SUBPACKAGES
        for init in (ROOT / folder).rglob("__init__.py")
    ]
    missing = sorted({*packages, "followup/worker/platforms/fourth/__init__.py"} - set(names))
    assert not missing, f"not in the wheel: {missing}"


def test_a_host_service_with_its_own_config_tasks_logging_and_celery_app_can_enqueue(
    tmp_path: Path, env: dict[str, str], private_queue: str
) -> None:
    wheel = _build_wheel(tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            "-q",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    # The dependencies (celery, redis, pydantic ...) come from this test run's environment,
    # read-only; followup itself only from the wheel (the editable install is not visible).
    site = next((venv / "lib").glob("python3*/site-packages"))
    deps = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    (site / "deps.pth").write_text(deps + "\n")

    host = tmp_path / "host"
    (host / "config" / "settings").mkdir(parents=True)
    (host / "config" / "__init__.py").write_text("")
    (host / "config" / "settings" / "__init__.py").write_text("DEBUG = True\n")
    (host / "tasks.py").write_text(
        "from celery import shared_task\n\n@shared_task\ndef host_task():\n    return 'host'\n"
    )
    (host / "check.py").write_text(textwrap.dedent(HOST_SCRIPT))
    out = subprocess.run(
        [str(python), "check.py"],
        cwd=host,
        capture_output=True,
        text=True,
        timeout=60,
        env={
            k: v
            for k, v in {**os.environ, **env, "FOLLOWUP_QUEUE": private_queue}.items()
            if k != "PYTHONPATH"
        },
    )
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)

    assert seen["state"] == "queued"
    assert seen["batch"] == 1
    assert seen["invalid"] == "phone_number"
    assert "FOLLOWUP_LOG_LEVEL" in seen["bad_setting"]
    assert seen["followup_file"].startswith(str(venv))
    assert seen["config_file"] == str(host / "config" / "settings" / "__init__.py")
    assert seen["tasks_file"] == str(host / "tasks.py")
    assert seen["current_app"] == "host"
    assert seen["shared_task_app"] == "host"
    assert seen["structlog_unchanged"] is True
    assert seen["httpx_level"] == 10  # the host's DEBUG, untouched
    assert seen["root_handlers_unchanged"] is True
    assert seen["httpx_loaded"] is False
    assert seen["extras_loaded"] == []
    # The status store, and of the platforms only the table and the profiles (the settings
    # read them): no platform's client.
    worker_only = [
        m
        for m in seen["loaded"]
        if m.startswith(("followup.cli", "followup.simulator", "followup.tasks.place_call"))
        or (
            m.startswith("followup.worker.")
            and m.split(".")[2] not in ("records", "store", "store_lua", "platforms")
        )
        or (
            m.startswith("followup.worker.platforms.")
            and m.split(".")[-1] != "profile"
            and m.removeprefix("followup.worker.platforms.") not in PLATFORM_PACKAGES
        )
    ]
    assert worker_only == []


PLATFORM_NAMES = re.compile(r"genesys|cxone|conversations_dialect|dialect ==", re.IGNORECASE)


def test_only_the_platform_modules_name_a_platform() -> None:
    """Every module of the service (config, the request model, the producer, the worker, the
    CLI) speaks to a platform's profile or to `worker.platforms.base.Platform` only: a new
    platform touches none of them. Outside: the platform packages, the simulator (a stand-in
    for each platform) and the demo (a table for each)."""
    paths = [
        path.relative_to(ROOT)
        for sub in ("config", "tasks", "worker", "cli", "followup")
        for path in sorted((ROOT / sub).rglob("*.py"))
    ]
    assert len(paths) > 40, paths  # the whole service, not an empty glob
    outside = {Path("cli/demo.py")}
    for path in paths:
        if path in outside or path.parts[:2] == ("worker", "platforms"):
            continue
        source = (ROOT / path).read_text()
        assert not PLATFORM_NAMES.findall(source), f"{path} names a platform"
