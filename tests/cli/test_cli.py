"""The command-line contract: exit codes, messages on stderr, JSON on stdout, no tracebacks."""

from __future__ import annotations

import json
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from telecentre_ctl import __version__
from telecentre_ctl.cli.main import cli
from telecentre_ctl.site import load_site
from tests.conftest import MakeSite

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJFIoYZwAOeX4J3WqvuxLO2YhC4q8efkn34i93YjJhUI a@b"


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(cli, list(args), input=input)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "id_ed25519.pub"
    path.write_text(KEY + "\n")
    return path


def test_version_and_help() -> None:
    assert run("--version").output.strip().endswith(__version__)
    top = run("--help")
    assert top.exit_code == 0 and "Exit codes" in top.output
    for command in ("services", "init", "validate", "secrets", "plan"):
        result = run(command, "--help")
        assert result.exit_code == 0, command
        assert "Usage: " in result.output and len(result.output.splitlines()) > 5


def test_unknown_command_is_usage_error() -> None:
    assert run("deplyo").exit_code == 2


def test_services_table_and_json() -> None:
    table = run("services")
    assert table.exit_code == 0 and "radicale" in table.output and "MiB" in table.output
    data = json.loads(run("services", "--json").stdout)
    by_name = {s["name"]: s for s in data}
    assert by_name["nextcloud"]["depends"] == ["postgres", "redis"]
    assert by_name["webdav"]["built_locally"] is True


def test_validate_ok_and_invalid(make_site: MakeSite) -> None:
    good = run("validate", str(make_site()))
    assert good.exit_code == 0 and "valid" in good.stderr
    bad = run("validate", str(make_site(site={"locale": "xx", "profile": "big"}, secrets=False)))
    assert bad.exit_code == 2
    assert "site.yml" in bad.stderr and "locale" in bad.stderr and "profile" in bad.stderr
    assert "Traceback" not in bad.output
    assert bad.stdout == ""


def test_validate_missing_folder() -> None:
    result = run("validate", "/nonexistent/site")
    assert result.exit_code == 2 and "telecentre-ctl init" in result.stderr


@pytest.fixture
def network_attempts() -> Iterator[list[str]]:
    """Every socket connect or name lookup made while the test runs (Python audit events)."""
    attempts: list[str] = []
    active = [True]

    def hook(event: str, args: tuple) -> None:
        if active[0] and event in ("socket.connect", "socket.getaddrinfo", "socket.sendto"):
            attempts.append(f"{event} {args!r}")

    sys.addaudithook(hook)
    yield attempts
    active[0] = False  # audit hooks cannot be removed; this one goes quiet


def test_validate_and_plan_open_no_network_connection(
    make_site: MakeSite, network_attempts: list[str]
) -> None:
    site_dir = str(make_site())
    network_attempts.clear()
    assert run("validate", site_dir).exit_code == 0
    assert run("plan", site_dir, "--json").exit_code == 0
    assert run("validate", str(make_site(site={"tls": "acme"}, secrets=False))).exit_code == 2
    assert network_attempts == []


def test_plan_json_and_out(make_site: MakeSite, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run("plan", str(make_site()), "--json", "--out", str(out))
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["urls"]["radicale"] == "https://agenda.demo.home.arpa/"
    assert (out / "demo-1" / "opt/telecentre/radicale/compose.yml").is_file()
    text = run("plan", str(make_site())).stdout
    assert "RAM:" in text and "https://wiki.demo.home.arpa/" in text


def test_init_non_interactive(tmp_path: Path, key_file: Path, isolated_config: Path) -> None:
    site_dir = tmp_path / "comptoir"
    result = run(
        "init",
        str(site_dir),
        "--yes",
        "--profile",
        "standard",
        "--domain",
        "comptoir.example.org",
        "--admin-email",
        "a@example.org",
        "--ssh-key",
        str(key_file),
        "--ram-gb",
        "8",
        "--host",
        "192.0.2.10",
    )
    assert result.exit_code == 0, result.output
    assert {p.name for p in site_dir.iterdir()} == {"site.yml", "hosts.yml", "secrets.yml"}
    password_file = isolated_config / "telecentre-ctl" / "vault" / "comptoir.pass"
    assert str(password_file) in result.stderr
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert run("validate", str(site_dir)).exit_code == 0
    from telecentre_ctl.secrets import read_secrets

    for values in read_secrets(site_dir, password_file).values():
        for value in values.values():
            assert value not in result.output


def test_init_interactive_prompts(tmp_path: Path, key_file: Path) -> None:
    answers = (
        "\n".join(
            [
                "atelier",
                "L'Atelier",
                "en",
                "lite",
                "radicale,dokuwiki",
                "",
                "x@example.org",
                "bob",
                "",
                "",
            ]
        )
        + "\n"
    )
    result = run("init", str(tmp_path / "atelier"), "--ssh-key", str(key_file), input=answers)
    assert result.exit_code == 0, result.output
    text = (tmp_path / "atelier" / "site.yml").read_text(encoding="utf-8")
    assert "name: atelier" in text and "radicale: {}" in text and "webdav" not in text


def test_init_never_overwrites_without_force(make_site: MakeSite, key_file: Path) -> None:
    site_dir = make_site()
    before = {p.name: p.read_bytes() for p in site_dir.iterdir()}
    result = run("init", str(site_dir), "--yes", "--ssh-key", str(key_file))
    assert result.exit_code == 2 and "--force" in result.stderr
    assert {p.name: p.read_bytes() for p in site_dir.iterdir()} == before
    forced = run(
        "init", str(site_dir), "--yes", "--force", "--name", "demo", "--ssh-key", str(key_file)
    )
    assert forced.exit_code == 0, forced.output


def test_init_bad_answers_write_nothing(tmp_path: Path, key_file: Path) -> None:
    site_dir = tmp_path / "new"
    result = run("init", str(site_dir), "--yes", "--name", "Bad Name", "--ssh-key", str(key_file))
    assert result.exit_code == 2 and "name" in result.stderr
    assert not site_dir.exists()
    result = run(
        "init",
        str(site_dir),
        "--yes",
        "--profile",
        "lite",
        "--services",
        "nextcloud",
        "--ssh-key",
        str(key_file),
    )
    assert result.exit_code == 2 and "not part of the lite profile" in result.stderr
    assert not site_dir.exists()


def test_secrets_command_fills_only_missing(make_site: MakeSite) -> None:
    site_dir = make_site(secrets=False)
    first = run("secrets", str(site_dir))
    needed = load_site(site_dir, check_secrets=False).required_secrets()
    count = sum(len(names) for names in needed.values())
    assert first.exit_code == 0 and f"{count} secret(s) generated" in first.stderr
    second = run("secrets", str(site_dir))
    assert "all present" in second.stderr


def test_debug_shows_traceback_only_when_asked(make_site: MakeSite) -> None:
    site_dir = make_site(secrets=False)
    (site_dir / "secrets.yml").write_bytes(b"$ANSIBLE_VAULT;1.1;AES256\nnot-hex\n")
    plain = run("secrets", str(site_dir))
    assert plain.exit_code == 2 and "Traceback" not in plain.output
    debug = run("--debug", "secrets", str(site_dir))
    assert debug.exit_code == 2


def test_secrets_stores_the_smtp_password_without_showing_it(make_site: MakeSite) -> None:
    from tests.conftest import EXAMPLE_SITE

    relay = {"host": "smtp.example.org", "username": "bot@example.org"}
    site_dir = make_site(source=EXAMPLE_SITE, site={"smtp": relay})
    missing = run("validate", str(site_dir))
    assert missing.exit_code == 2 and "--smtp-password" in missing.stderr
    stored = run("secrets", str(site_dir), "--smtp-password", input="relay s3cret\n")
    assert stored.exit_code == 0 and "smtp.password stored" in stored.stderr
    assert "relay s3cret" not in stored.output
    assert run("validate", str(site_dir)).exit_code == 0
    lite = make_site()
    refused = run("secrets", str(lite), "--smtp-password", input="x\n")
    assert refused.exit_code == 2 and "smtp.username is not set" in refused.stderr
