"""The configuration reference matches the CLI, and every option really has its variable."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from tusd_py import cli
from tusd_py.config import Config
from tusd_py.configdoc import main as configdoc
from tusd_py.configdoc import render_options

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "docs/configuration.md"


def test_the_reference_is_generated_from_the_cli() -> None:
    assert configdoc(["--check", str(REFERENCE)]) == 0, (
        "docs/configuration.md is out of date: run python -m tusd_py.configdoc "
        "docs/configuration.md"
    )
    for param in cli.main.params:
        if not (isinstance(param, click.Option) and param.is_eager):  # --version answers, exits
            assert f"`{param.opts[0]}`" in render_options()


def test_environment_variables_configure_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Config] = []
    monkeypatch.setattr(cli, "run", seen.append)
    env = {
        "TUSD_PORT": "9999",
        "TUSD_UPLOAD_DIR": "/srv/uploads",
        "TUSD_MAX_SIZE": "5GiB",
        "TUSD_DEMO": "true",
        "TUSD_METRICS": "false",
        "TUSD_LOG_FORMAT": "json",
        "TUSD_HOOKS_HTTP": "http://hooks.internal/tus",
        "TUSD_HOOKS_ENABLED_EVENTS": "pre-create,pre-terminate",
        "TUSD_HOOKS_HTTP_FORWARD_HEADERS": "Authorization, Cookie",
        "TUSD_PROGRESS_HOOKS_INTERVAL": "250ms",
        "TUSD_CORS_ORIGINS": "https://a.example,https://b.example",
    }
    result = CliRunner().invoke(cli.main, [], env=env)
    assert result.exit_code == 0, result.output
    (config,) = seen
    expected: dict[str, Any] = {
        "port": 9999,
        "upload_dir": "/srv/uploads",
        "max_size": 5 * 1024**3,
        "demo": True,
        "metrics": False,
        "log_format": "json",
        "hooks_http": "http://hooks.internal/tus",
        "hooks_enabled_events": ["pre-create", "pre-terminate"],
        "hooks_http_forward_headers": ["Authorization", "Cookie"],
        "progress_hooks_interval": 0.25,
        "cors_origins": ["https://a.example", "https://b.example"],
    }
    assert {key: getattr(config, key) for key in expected} == expected


def test_an_unknown_hook_event_is_refused() -> None:
    result = CliRunner().invoke(cli.main, ["--hooks-enabled-events", "pre-create,post-upload"])
    assert result.exit_code == 2
    assert "unknown hook event 'post-upload'" in result.output


def test_deployment_files_are_shown_verbatim_and_use_real_options() -> None:
    import yaml

    deployment = (REPO / "docs/deployment.md").read_text(encoding="utf-8")
    for name in ("compose.yaml", "nginx.conf"):
        assert (REPO / "deploy" / name).read_text(encoding="utf-8") in deployment, name
    compose = yaml.safe_load((REPO / "deploy/compose.yaml").read_text(encoding="utf-8"))
    options = {f"TUSD_{p.name.upper()}" for p in cli.main.params if p.name}
    variables = set(compose["services"]["tusd"]["environment"])
    assert {v for v in variables if v.startswith("TUSD_")} <= options
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert set(re.findall(r"\bTUSD_[A-Z0-9_]+\b", dockerfile)) <= options


def test_the_systemd_unit_is_shown_verbatim_and_uses_real_options_and_the_real_command() -> None:
    import shutil
    import subprocess
    import tomllib

    unit_path = REPO / "deploy/tusd-py.service"
    unit = unit_path.read_text(encoding="utf-8")
    assert unit in (REPO / "docs/deployment.md").read_text(encoding="utf-8")
    options = {f"TUSD_{p.name.upper()}" for p in cli.main.params if p.name}
    assert set(re.findall(r"\bTUSD_[A-Z0-9_]+\b", unit)) <= options
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    [command] = re.findall(r"^ExecStart=\S*/(\S+)$", unit, re.MULTILINE)
    assert command in scripts
    # The line the docs' sed turns into the template's (tusd-py@.service) TUSD_PORT=%i.
    assert "\nEnvironment=TUSD_PORT=8080\n" in unit
    if shutil.which("systemd-analyze"):
        done = subprocess.run(
            ["systemd-analyze", "verify", str(unit_path)], capture_output=True, text=True
        )
        # The command is not installed here: that is the only complaint allowed.
        problems = [
            line
            for line in done.stderr.splitlines()
            if line.strip() and "/opt/tusd-py/bin/tusd-py" not in line
        ]
        assert problems == [], done.stderr
