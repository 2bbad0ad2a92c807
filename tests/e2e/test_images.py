"""Images without a registry, for real: the images of the deployed demo site, bundled from
its lab host (the builder: it has them all, built by its deploy), loaded into a fresh lab
host of another copy of the demo site, which then has every image (same ids) and whose
deploy builds nothing (deploy --images); a second load sends nothing; a damaged bundle
loads nothing."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from telecentre_ctl import images
from telecentre_ctl.lab import testing
from telecentre_ctl.paths import DEMO_SITE
from telecentre_ctl.site import load_site
from tests.conftest import DeployedSite

pytestmark = pytest.mark.e2e

SITE = testing.site_name("imgtestb")
TARGET = f"{SITE}-1"

# The CLI as users run it, in its own process.
CLI = "from telecentre_ctl.cli.main import main\nmain()\n"


@dataclass
class ImagesLab:
    site_dir: Path  # the target's site
    lab: testing.Lab
    env: dict[str, str]
    bundle: Path
    builder: DeployedSite

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", CLI, *args],
            capture_output=True, text=True, env=self.env, timeout=3600, check=False,
        )  # fmt: skip

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        proc = self.cli(*args)
        assert proc.returncode == 0, f"{args} exited {proc.returncode}\n{proc.stderr[-3000:]}"
        return proc

    def on_target(self, command: str) -> str:
        return self.lab.run(self.lab.hosts[0], command).stdout

    def image_ids(self, on_builder: bool = False) -> dict[str, str]:
        """ref -> image id of every tagged image on the target (or the builder)."""
        fmt = "'{{.Repository}}:{{.Tag}} {{.ID}}'"
        command = f"docker image ls --no-trunc --format {fmt}"
        out = self.builder.run(command).stdout if on_builder else self.on_target(command)
        return dict(line.split() for line in out.splitlines() if line and "<none>" not in line)


@pytest.fixture(scope="module")
def img_lab(
    lab_factory: Any, tmp_path_factory: pytest.TempPathFactory, deployed_demo: DeployedSite
) -> Iterator[ImagesLab]:
    base = tmp_path_factory.mktemp("images")
    site_dir = testing.write_site(base / SITE, SITE, DEMO_SITE / "site.yml")
    lab = lab_factory(site_dir, 1)
    env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(base / "config"),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    found = ImagesLab(site_dir, lab, env, base / "demo.tcimg", deployed_demo)
    found.ok("secrets", str(site_dir))
    # The target gets Docker as the deploy's docker role would; images come from the bundle.
    lab.install_docker(lab.hosts[0])
    yield found


@pytest.fixture(scope="module")
def bundled(img_lab: ImagesLab) -> dict[str, Any]:
    """The demo's images from its deployed host: made by its deploy, none built here (the
    bundle's playbook finds each one made from its recipe)."""
    demo = img_lab.builder
    before = img_lab.image_ids(on_builder=True)
    proc = demo.cli(
        "images", "bundle", str(demo.site_dir), "-o", str(img_lab.bundle),
        "--builder", demo.lab.hosts[0].name, "--json", "--level", "3",  # bench/bench_images.py
    )  # fmt: skip
    after = img_lab.image_ids(on_builder=True)
    assert {r: i for r, i in after.items() if r.startswith("telecentre/")} == {
        r: i for r, i in before.items() if r.startswith("telecentre/")
    }, "the builder rebuilt an image its deploy had made"
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def test_bundle_holds_every_image_of_the_site(img_lab: ImagesLab, bundled: dict[str, Any]) -> None:
    index = images.verify_bundle(img_lab.bundle)
    from telecentre_ctl.site import load_site

    wanted = images.site_images(load_site(img_lab.site_dir, check_secrets=False))
    assert "telecentre/debian-base:trixie" in wanted
    assert sorted(index.refs) == sorted(wanted)
    on_builder = img_lab.image_ids(on_builder=True)
    assert {ref: index.image(ref).id for ref in wanted} == {  # type: ignore[union-attr]
        ref: on_builder[ref] for ref in wanted
    }
    assert bundled["bytes"] == img_lab.bundle.stat().st_size
    assert bundled["bytes"] < 0.5 * bundled["uncompressed_bytes"]


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_a_damaged_bundle_loads_nothing(
    img_lab: ImagesLab, bundled: dict[str, Any], tmp_path: Path, damage: str
) -> None:
    data = bytearray(img_lab.bundle.read_bytes())
    if damage == "truncated":
        data = data[: len(data) * 2 // 3]
    else:
        data[len(data) // 3] ^= 0x20
    bad = tmp_path / f"{damage}.tcimg"
    bad.write_bytes(bytes(data))
    before = img_lab.on_target("docker image ls --all --quiet --no-trunc")
    proc = img_lab.cli("images", "load", str(img_lab.site_dir), str(bad), "--limit", TARGET)
    assert proc.returncode == 2, proc.stderr
    assert str(bad) in proc.stderr and "images bundle" in proc.stderr  # where, and the fix
    assert "Traceback" not in proc.stderr
    assert img_lab.on_target("docker image ls --all --quiet --no-trunc") == before


def test_fresh_host_gets_every_image_with_the_same_ids(
    img_lab: ImagesLab, bundled: dict[str, Any]
) -> None:
    assert not any(r.startswith("telecentre/") for r in img_lab.image_ids())
    proc = img_lab.ok("images", "load", str(img_lab.site_dir), str(img_lab.bundle),
                      "--limit", TARGET, "--json")  # fmt: skip
    got = json.loads(proc.stdout)["hosts"][TARGET]
    index = images.read_index(img_lab.bundle)
    assert got["layers_skipped"] == 0 and got["layers_sent"] == len(
        {m for i in index.images for m in i.layer_members}
    )
    # the whole bundle's layers, once each, copied frame by frame: about the file's size
    assert 0.9 * bundled["bytes"] < got["bytes_sent"] <= bundled["bytes"]
    on_target = img_lab.image_ids()
    for image in index.images:
        for tag in image.tags:
            assert on_target[tag] == image.id


def test_second_load_sends_nothing(img_lab: ImagesLab, bundled: dict[str, Any]) -> None:
    proc = img_lab.ok("images", "load", str(img_lab.site_dir), str(img_lab.bundle),
                      "--limit", TARGET, "--json")  # fmt: skip
    got = json.loads(proc.stdout)["hosts"][TARGET]
    assert got["bytes_sent"] == 0 and got["images_loaded"] == []
    assert len(got["images_present"]) == len(images.read_index(img_lab.bundle).images)


def test_deploy_with_the_bundle_builds_nothing(img_lab: ImagesLab, bundled: dict[str, Any]) -> None:
    """`deploy --images`: the bundle checked, Docker prepared, only missing layers sent
    (none: the host has them from the load above), then the full deploy builds nothing."""
    before = img_lab.image_ids()
    proc = img_lab.ok("deploy", str(img_lab.site_dir), "--limit", TARGET,
                      "--images", str(img_lab.bundle), "--json")  # fmt: skip
    loaded = json.loads(proc.stdout)["images"][TARGET]
    assert loaded["bytes_sent"] == 0 and loaded["images_loaded"] == []
    assert f"checking {img_lab.bundle}" in proc.stderr
    after = img_lab.image_ids()
    for image in images.read_index(img_lab.bundle).images:
        for tag in image.tags:
            assert after[tag] == before[tag] == image.id, f"{tag} was rebuilt"
    logs = sorted((img_lab.site_dir / "logs").glob("deploy-*.log"))
    text = logs[-1].read_text()
    builds = re.findall(r"TASK \[service : (Build the image of \S+)\][^\n]*\n(\w+):", text)
    site = load_site(img_lab.site_dir, check_secrets=False)
    recipes = [s for s in site.services_on(TARGET) if site.catalog[s].built_locally]
    assert sorted(b.removeprefix("Build the image of ") for b, _ in builds) == sorted(recipes)
    assert {outcome for _, outcome in builds} == {"skipping"}, builds
    assert not re.search(r"TASK \[service : Make the minbase[^\n]*\n(changed|ok):", text)
    assert "telecentre" in proc.stderr
