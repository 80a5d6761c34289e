"""deploy/: the systemd units pass systemd's own checker and run commands that exist; the script parses."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.database import missing_part
from threadline.cli import build_parser

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNITS = sorted([*DEPLOY.glob("*.service"), *DEPLOY.glob("*.timer")])
INSTALLED = "/opt/threadline/venv/bin/threadline"


def unit(path: Path) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path, encoding="utf-8")
    return parser


def verify(directory: Path, names: list[str]) -> str:
    checker = shutil.which("systemd-analyze")
    if checker is None:
        missing_part("systemd-analyze is not installed (Debian: apt install systemd)")
    assert checker is not None
    done = subprocess.run(
        [checker, "verify", "--man=no", *[f"./{name}" for name in names]],
        cwd=directory,
        capture_output=True,
        text=True,
        check=False,
    )
    return (done.stdout + done.stderr).strip()


def test_the_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    assert {p.name for p in UNITS} >= {
        "threadline-admin.service",
        "threadline-daemon.service",
        "threadline-backup.service",
        "threadline-backup.timer",
    }
    # the checker wants ExecStart's program to exist: point it at this checkout's command
    here = shutil.which("threadline") or str(Path(sys.executable).parent / "threadline")
    for path in UNITS:
        (tmp_path / path.name).write_text(path.read_text(encoding="utf-8").replace(INSTALLED, here))
    assert verify(tmp_path, [p.name for p in UNITS]) == ""

    # and the checker does catch mistakes
    (tmp_path / "broken.service").write_text("[Service]\nExecStart=/bin/true\nProtectSystem=banana\n")
    assert "protect system value" in verify(tmp_path, ["broken.service"])


@pytest.mark.parametrize(
    ("name", "command"),
    [("threadline-admin.service", "admin"), ("threadline-daemon.service", "daemon")],
)
def test_the_long_running_units_are_supervised_and_hardened(name: str, command: str) -> None:
    service = unit(DEPLOY / name)["Service"]
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert int(service["WatchdogSec"]) >= 30 and service["Restart"] == "on-failure"
    assert shlex.split(service["ExecStart"]) == [INSTALLED, command]
    assert (service["User"], service["Group"]) == ("threadline", "threadline")
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
        "UMask": "0077",
    }.items():
        assert service[key] == value, key


def test_every_command_the_units_run_exists() -> None:
    parser = build_parser()
    for path in UNITS:
        service = unit(path)
        if not service.has_section("Service"):
            continue
        command = service["Service"]["ExecStart"]
        words = shlex.split(command.replace("$$", "$").replace("%%", "%"))
        if words[:2] == ["/bin/sh", "-c"]:
            words = shlex.split(words[2])
        words = [w for w in words if w != "exec"]
        assert words[0] == INSTALLED, path.name
        args = parser.parse_args([*words[1:]])
        assert args.handler is not None, path.name


def test_the_helper_script_is_valid_shell() -> None:
    script = DEPLOY / "threadline.sh"
    assert script.stat().st_mode & 0o111
    subprocess.run(["sh", "-n", str(script)], check=True)
