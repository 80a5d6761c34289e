"""The built wheel, installed into a fresh virtual environment, is a working Threadline.

Builds the wheel the way a release would (`pip wheel`, build dependencies from PyPI), installs it with its
dependencies into a new venv outside the source tree (pip's cache keeps this to a few tens of seconds), and
runs the installed command: --help, `db upgrade` on a new SQLite file (the migrations are inside the wheel),
and `threadline admin` serving the login page with its templates and every static file it links to.
Also checks that every non-Python file of the packages (templates, static files, migrations, data files)
made it into the wheel.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.database import missing_part

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("threadline", "settings", "models", "daemon", "admin")


def _run(*args: str | Path, cwd: Path, timeout: float = 600, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    assert done.returncode == 0, f"{' '.join(map(str, args))} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Build from a clean copy: setuptools reuses an in-tree build/ directory, whose leftovers (a module
    # deleted since) would end up in the wheel, and building must not litter the checkout.
    source = tmp_path_factory.mktemp("source") / "threadline"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "test-output"
        ),
    )
    out = tmp_path_factory.mktemp("dist")
    try:
        _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", out, source, cwd=out)
    except AssertionError as exc:
        if "No matching distribution" in str(exc) or "Could not find a version" in str(exc):
            missing_part(f"the build dependencies could not be downloaded from PyPI: {exc}")
        raise
    [built] = out.glob("threadline-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv (no system site-packages) with the wheel and its dependencies; returns its bin dir."""
    venv = tmp_path_factory.mktemp("venv")
    _run(sys.executable, "-m", "venv", "--clear", venv, cwd=venv)
    _run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-compile", wheel, cwd=venv)
    return venv / "bin"


def _clean_env(home: Path) -> dict[str, str]:
    """No trace of this checkout: the installed package must stand on its own."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "THREADLINE_CONFIG")}
    env["HOME"] = str(home)
    return env


def test_the_wheel_holds_every_file_of_the_packages(wheel: Path) -> None:
    assert wheel.name.endswith("-py3-none-any.whl")  # pure Python: one wheel for every platform
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    expected = {
        path.relative_to(ROOT).as_posix()
        for package in PACKAGES
        for path in (ROOT / package).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    assert expected - names == set(), "files missing from the wheel"
    assert any(n.startswith("models/migrations/versions/") for n in names)
    assert any(n.startswith("admin/templates/") for n in names)
    assert any(n.startswith("admin/static/") for n in names)
    assert not any(n.startswith("tests/") for n in names), "the tests are not part of the package"
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    assert any(n.endswith(".dist-info/entry_points.txt") for n in names)
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read(metadata).decode()
    assert "Requires-Dist: prometheus-client" in text and "License-Expression: MIT" in text


@pytest.fixture
def running_panel(installed: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    home = tmp_path / "home"
    home.mkdir()
    config = tmp_path / "threadline.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "crm.db"}"\n', encoding="utf-8")
    env = _clean_env(home)
    threadline = installed / "threadline"

    help_text = _run(threadline, "--help", cwd=home, env=env)
    for command in ("db", "status", "backup", "restore", "admin", "daemon"):
        assert command in help_text
    upgraded = _run(threadline, "--config", config, "db", "upgrade", cwd=home, env=env)
    assert "upgraded from empty to revision" in upgraded
    where = _run(installed / "python", "-c", "import admin, models; print(admin.__file__)", cwd=home, env=env)
    assert str(ROOT) not in where and str(installed.parent) in where

    process = subprocess.Popen(
        [str(threadline), "--config", str(config), "admin", "--port", "0"],
        cwd=home,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        found = re.match(r"admin panel on (http://[\d.]+:\d+)/", first)
        assert found, first + (process.stderr.read() if process.poll() is not None and process.stderr else "")
        yield found.group(1), config
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert process.returncode == 0


def _get(url: str) -> tuple[int, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=20) as response:
        return int(response.status), response.read().decode("utf-8", "replace")


def test_the_installed_command_migrates_and_serves_the_panel(running_panel: tuple[str, Path]) -> None:
    base, _ = running_panel
    status, login = _get(f"{base}/login")
    assert status == 200 and 'name="password"' in login and "Threadline" in login
    assets = re.findall(r'(?:href|src)="(/[^"]+\.(?:css|js))', login)
    assert any("threadline-static/threadline.css" in a for a in assets), assets
    for asset in assets:
        code, body = _get(f"{base}{asset}")
        assert code == 200 and body, asset
    assert _get(f"{base}/healthz") == (200, "ok\n")
    assert _get(f"{base}/readyz") == (200, "ready\n")
