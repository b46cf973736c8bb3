"""The deployment files agree with the package: the Dockerfile copies what exists and starts a command the
CLI knows, the compose file mounts the config where the image looks for it, and the systemd unit parses
(with `systemd-analyze verify` where the machine has it) and runs real subcommands."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"


def _json_list(line: str) -> list[str]:
    return re.findall(r'"([^"]*)"', line)


def test_the_dockerfile_copies_what_exists_and_runs_a_real_command() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    for line in text.splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            *sources, _dest = line.split()[1:]
            for source in sources:
                assert (ROOT / source).exists(), f"Dockerfile copies {source}, which is not in the repository"
    entry = next(_json_list(line) for line in text.splitlines() if line.startswith("ENTRYPOINT"))
    cmd = next(_json_list(line) for line in text.splitlines() if line.startswith("CMD"))
    assert entry == ["gateway"]
    args = build_parser().parse_args(cmd)
    assert args.command == "run" and args.config == "/etc/gateway/site.toml"
    assert re.search(r"^USER (?!0\b|root\b)\S+", text, re.MULTILINE), "the image must not run as root"


def test_compose_mounts_the_config_where_the_image_reads_it() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    assert ":/etc/gateway/site.toml:ro" in text
    assert "dockerfile: deploy/Dockerfile" in text and "context: .." in text
    assert "cap_drop" in text and "read_only: true" in text


def test_the_systemd_unit_runs_real_subcommands_with_hardening() -> None:
    unit = DEPLOY / "gateway.service"
    text = unit.read_text()
    execs = [line.split("=", 1)[1].split()[1:] for line in text.splitlines() if line.startswith("ExecStart")]
    assert execs, "no ExecStart"
    for argv in execs:
        build_parser().parse_args(argv)  # exits (SystemExit) on an unknown subcommand or option
    hardening = ("NoNewPrivileges=yes", "ProtectSystem=strict", "CapabilityBoundingSet=", "RestartPreventExitStatus=2")
    for option in hardening:
        assert option in text


@pytest.mark.slow
def test_systemd_accepts_the_unit() -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed: the unit's syntax is not checked here")
    result = subprocess.run([analyze, "verify", str(DEPLOY / "gateway.service")], capture_output=True, text=True,
                            timeout=60)
    # The binary is not installed at /opt on a build machine; every other complaint is a real problem.
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if line.strip() and "is not executable" not in line]
    assert not problems, problems
