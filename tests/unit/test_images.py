"""Image bundles on small synthetic docker-save tars: format, index, verification, and the
per-host filtering (which layers a host is sent)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
import zstandard

from telecentre_ctl import compose, connection, images
from telecentre_ctl.errors import InvalidInput, OperationFailed
from telecentre_ctl.site import Host


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _layer(seed: str, size: int = 3000) -> bytes:
    """A small layer tar with one file of pseudo-random content."""
    body = hashlib.sha256(seed.encode()).digest() * (size // 32)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(f"{seed}.bin")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    return buf.getvalue()


def docker_save(spec: dict[str, list[bytes]], *, corrupt: str | None = None) -> bytes:
    """A docker-save tar (Docker 25+ OCI layout) of images {tag: [layer tars]}."""
    files: dict[str, bytes] = {}
    manifest = []
    for tag, layers in spec.items():
        diff_ids = []
        layer_paths = []
        for layer in layers:
            name = f"blobs/sha256/{_digest(layer)}"
            files[name] = layer
            diff_ids.append(f"sha256:{_digest(layer)}")
            layer_paths.append(name)
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "tag": tag,
                "rootfs": {"type": "layers", "diff_ids": diff_ids},
            }
        ).encode()
        config_name = f"blobs/sha256/{_digest(config)}"
        files[config_name] = config
        oci = json.dumps({"schemaVersion": 2, "config": {"digest": config_name}}).encode()
        files[f"blobs/sha256/{_digest(oci)}"] = oci
        manifest.append({"Config": config_name, "RepoTags": [tag], "Layers": layer_paths})
    files["index.json"] = b'{"schemaVersion":2,"manifests":[]}'
    files["oci-layout"] = b'{"imageLayoutVersion":"1.0.0"}'
    files["repositories"] = b"{}"
    if corrupt is not None:
        files[corrupt] = files[corrupt][:-1] + b"X"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("blobs/", "blobs/sha256/"):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        # docker save writes manifest.json before the other files it holds back
        order = ["manifest.json", *sorted(files)]
        files["manifest.json"] = json.dumps(manifest).encode()
        for name in order:
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            tar.addfile(info, io.BytesIO(files[name]))
    return buf.getvalue()


BASE = _layer("base", 20000)
APT_A = _layer("apt-a")
APT_B = _layer("apt-b")
CONF = _layer("conf", 600)
SPEC = {
    "telecentre/debian-base:trixie": [BASE],
    "telecentre/a:1": [BASE, APT_A, CONF],
    "telecentre/b:1": [BASE, APT_B],
}


def make_bundle(tmp_path: Path, spec: dict[str, list[bytes]] = SPEC) -> Path:
    path = tmp_path / "site.tcimg"
    with path.open("wb") as out:
        images.write_bundle(io.BytesIO(docker_save(spec)), out, level=3, site="demo")
    return path


def _untar(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        return tar.getmembers()


def test_chain_ids_follow_docker() -> None:
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    chains = images.chain_ids([a, b])
    assert chains[0] == a
    assert chains[1] == "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    assert images.chain_ids([]) == []


def test_bundle_index_lists_images_ids_and_layers(tmp_path: Path) -> None:
    index = images.read_index(make_bundle(tmp_path))
    assert index.format == images.FORMAT and index.site == "demo"
    a = index.image("telecentre/a:1")
    assert a is not None
    assert a.layers == tuple(f"sha256:{_digest(x)}" for x in (BASE, APT_A, CONF))
    config = index.member(a.config)
    assert a.id == f"sha256:{config.sha256}" and config.kind == "config"
    kinds = {m.name: m.kind for m in index.members}
    assert kinds[f"blobs/sha256/{_digest(BASE)}"] == "layer"
    assert sum(1 for k in kinds.values() if k == "layer") == 4  # the base layer once
    assert kinds["index.json"] == "meta"


def test_bundle_is_a_plain_docker_save_tar_with_manifest_last(tmp_path: Path) -> None:
    """zstd -dc FILE | docker load works by hand: concatenated frames, skippable index."""
    path = make_bundle(tmp_path)
    data = (
        zstandard.ZstdDecompressor().stream_reader(path.open("rb"), read_across_frames=True).read()
    )
    members = _untar(data)
    names = [m.name for m in members]
    assert names[-1] == "manifest.json"
    assert f"blobs/sha256/{_digest(APT_B)}" in names
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        f = tar.extractfile(f"blobs/sha256/{_digest(CONF)}")
        assert f is not None and f.read() == CONF
    assert len(data) == images.read_index(path).data_size


def test_compression_pays(tmp_path: Path) -> None:
    spec = {"x:1": [b"\0" * 0 + _layer("zeros", 64) + b"\0" * 200_000]}
    path = make_bundle(tmp_path, spec)
    assert path.stat().st_size < images.read_index(path).data_size / 10


def test_corrupt_blob_from_the_builder_is_refused(tmp_path: Path) -> None:
    bad = docker_save(SPEC, corrupt=f"blobs/sha256/{_digest(APT_A)}")
    with pytest.raises(OperationFailed, match="does not match its digest"):
        images.write_bundle(io.BytesIO(bad), io.BytesIO(), level=1)


def test_verify_accepts_a_sound_bundle(tmp_path: Path) -> None:
    path = make_bundle(tmp_path)
    seen: list[int] = []
    index = images.verify_bundle(path, on_progress=lambda done, total: seen.append(done))
    assert seen[-1] == index.frames_size
    assert len(index.images) == 3


@pytest.mark.parametrize("cut", [1, 100, 5000, -1])
def test_truncated_bundle_is_invalid_input(tmp_path: Path, cut: int) -> None:
    path = make_bundle(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:cut])
    with pytest.raises(InvalidInput, match=r"truncated|index"):
        images.verify_bundle(path)


def test_a_flipped_byte_anywhere_in_a_layer_is_found(tmp_path: Path) -> None:
    path = make_bundle(tmp_path)
    layer = images.read_index(path).member(f"blobs/sha256/{_digest(APT_A)}")
    data = bytearray(path.read_bytes())
    data[layer.offset + layer.csize // 2] ^= 0x40
    path.write_bytes(bytes(data))
    images.read_index(path)  # the index itself is intact
    with pytest.raises(InvalidInput, match=_digest(APT_A)[:12]):
        images.verify_bundle(path)


def test_damaged_index_is_invalid_input(tmp_path: Path) -> None:
    path = make_bundle(tmp_path)
    data = bytearray(path.read_bytes())
    data[-40] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidInput):
        images.read_index(path)


def test_not_a_bundle(tmp_path: Path) -> None:
    path = tmp_path / "x.tar.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(b"hello" * 100))
    with pytest.raises(InvalidInput, match="not a bundle"):
        images.read_index(path)
    with pytest.raises(InvalidInput, match="no such file"):
        images.read_index(tmp_path / "missing")


def _have(*tagged: tuple[str, list[bytes]]) -> images.HostImages:
    lines = []
    for n, (tag, layers) in enumerate(tagged):
        diff = [f"sha256:{_digest(x)}" for x in layers]
        lines.append(f"sha256:{n:064x} {json.dumps([tag] if tag else [])} {json.dumps(diff)}")
    return images.HostImages.parse("\n".join(lines) + "\n")


def test_host_images_parse_docker_inspect_lines() -> None:
    text = 'sha256:1 ["a:1","a:latest"] ["sha256:x","sha256:y"]\nsha256:2 [] null\n'
    have = images.HostImages.parse(text)
    assert have.tags == {"sha256:1": ("a:1", "a:latest"), "sha256:2": ()}
    assert have.chains == frozenset(images.chain_ids(["sha256:x", "sha256:y"]))


def test_a_fresh_host_gets_every_layer_once(tmp_path: Path) -> None:
    index = images.read_index(make_bundle(tmp_path))
    plan = images.plan_host(index, list(SPEC), _have())
    assert len(plan.images) == 3 and not plan.present
    assert len(plan.layers) == 4
    assert sum(1 for m in plan.members if m.kind == "config") == 3


def test_a_host_with_the_base_gets_only_the_layers_above_it(tmp_path: Path) -> None:
    index = images.read_index(make_bundle(tmp_path))
    have = _have(("telecentre/debian-base:trixie", [BASE]))
    plan = images.plan_host(index, ["telecentre/a:1"], have)
    assert {m.name for m in plan.layers} == {
        f"blobs/sha256/{_digest(APT_A)}",
        f"blobs/sha256/{_digest(CONF)}",
    }


def test_same_layer_on_another_parent_is_sent(tmp_path: Path) -> None:
    """Docker keys layers by chain: CONF on top of APT_B is not CONF on top of APT_A."""
    index = images.read_index(make_bundle(tmp_path))
    have = _have(("other:1", [BASE, APT_B, CONF]))
    plan = images.plan_host(index, ["telecentre/a:1"], have)
    assert {m.name for m in plan.layers} == {
        f"blobs/sha256/{_digest(APT_A)}",
        f"blobs/sha256/{_digest(CONF)}",
    }


def test_present_and_tagged_means_nothing_to_send(tmp_path: Path) -> None:
    index = images.read_index(make_bundle(tmp_path))
    a = index.image("telecentre/a:1")
    assert a is not None
    have = images.HostImages(tags={a.id: ("telecentre/a:1",)}, chains=frozenset(a.chains))
    plan = images.plan_host(index, ["telecentre/a:1", "not/in-bundle:1"], have)
    assert plan.images == [] and plan.members == [] and plan.present == ["telecentre/a:1"]


def test_present_untagged_gets_its_config_only(tmp_path: Path) -> None:
    index = images.read_index(make_bundle(tmp_path))
    a = index.image("telecentre/a:1")
    assert a is not None
    have = images.HostImages(tags={a.id: ()}, chains=frozenset(a.chains))
    plan = images.plan_host(index, ["telecentre/a:1"], have)
    assert [m.name for m in plan.members] == [a.config]


def test_host_stream_is_a_docker_load_tar_of_what_is_missing(tmp_path: Path) -> None:
    path = make_bundle(tmp_path)
    index = images.read_index(path)
    have = _have(("telecentre/debian-base:trixie", [BASE]))
    plan = images.plan_host(index, ["telecentre/b:1"], have)
    out = io.BytesIO()
    counted: list[int] = []
    with path.open("rb") as f:
        sent = images.write_host_stream(f, index, plan, out, counted.append)
    assert sent == len(out.getvalue()) == sum(counted)
    layer = index.member(f"blobs/sha256/{_digest(APT_B)}")
    # the layer's frame is copied byte for byte: no recompression when deploying
    assert layer.csize < sent < layer.csize + 2000
    data = (
        zstandard.ZstdDecompressor()
        .stream_reader(io.BytesIO(out.getvalue()), read_across_frames=True)
        .read()
    )
    names = [m.name for m in _untar(data)]
    assert names[-1] == "manifest.json"
    assert f"blobs/sha256/{_digest(BASE)}" not in names
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        f2 = tar.extractfile("manifest.json")
        assert f2 is not None
        manifest = json.load(f2)
    assert [e["RepoTags"] for e in manifest] == [["telecentre/b:1"]]


def test_ssh_target_uses_the_inventory_and_keeps_host_key_checks() -> None:
    host_vars = {
        "ansible_host": "192.0.2.10",
        "ansible_user": "root",
        "ansible_port": 2222,
        "ansible_ssh_private_key_file": "/keys/id",
        "ansible_ssh_common_args": "-o UserKnownHostsFile=/kh -o StrictHostKeyChecking=yes",
    }
    host = Host("box1", host_vars, connection.of("box1", host_vars))
    argv = images.SshTarget.of(host).argv("docker load")
    assert argv[0] == "ssh" and argv[-2:] == ["192.0.2.10", "docker load"]
    assert "Port=2222" in argv and "User=root" in argv and "IdentityFile=/keys/id" in argv
    assert "UserKnownHostsFile=/kh" in argv and "BatchMode=yes" in argv
    assert not any("StrictHostKeyChecking=no" in a for a in argv)


def test_rebundling_copies_the_frames_it_already_has(tmp_path: Path) -> None:
    old = make_bundle(tmp_path)
    changed = {**SPEC, "telecentre/b:1": [BASE, _layer("apt-b2")]}
    new = tmp_path / "new.tcimg"
    with new.open("wb") as out:
        images.write_bundle(io.BytesIO(docker_save(changed)), out, level=3, reuse=old)
    fresh = tmp_path / "fresh.tcimg"
    with fresh.open("wb") as out:
        images.write_bundle(io.BytesIO(docker_save(changed)), out, level=3)
    index = images.verify_bundle(new)
    frames = index.end.offset + index.end.csize
    assert new.read_bytes()[:frames] == fresh.read_bytes()[:frames]  # only the index differs


# --- the command line: bad input exits 2 before any connection -------------------------


def _cli(*args: str) -> Any:
    from click.testing import CliRunner

    from telecentre_ctl.cli.images import images as images_group
    from telecentre_ctl.cli.main import cli

    if "images" not in cli.commands:
        cli.add_command(images_group)
    return CliRunner().invoke(cli, list(args))


def test_bundle_of_a_missing_site_exits_2(tmp_path: Path) -> None:
    result = _cli("images", "bundle", str(tmp_path / "nowhere"), "-o", str(tmp_path / "b"))
    assert result.exit_code == 2
    assert "no such site folder" in result.output and "Traceback" not in result.output


def test_bundle_with_an_unknown_builder_exits_2(make_site: Any, tmp_path: Path) -> None:
    site = make_site()
    result = _cli("images", "bundle", str(site), "-o", str(tmp_path / "b"), "--builder", "demo-9")
    assert result.exit_code == 2
    assert "demo-9" in result.output and "demo-1" in result.output  # what, and the choices
    assert not (tmp_path / "b").exists() and not (site / "logs").exists()


def test_load_of_a_damaged_bundle_exits_2_before_any_connection(
    make_site: Any, tmp_path: Path
) -> None:
    site = make_site()
    path = make_bundle(tmp_path)
    path.write_bytes(path.read_bytes()[:-100])
    result = _cli("images", "load", str(site), str(path))
    assert result.exit_code == 2
    assert str(path) in result.output and "images bundle" in result.output


def test_load_into_an_unknown_host_exits_2(make_site: Any, tmp_path: Path) -> None:
    result = _cli("images", "load", str(make_site()), str(make_bundle(tmp_path)), "--limit", "x")
    assert result.exit_code == 2 and "demo-1" in result.output


def test_show_lists_the_images(tmp_path: Path) -> None:
    result = _cli("images", "show", str(make_bundle(tmp_path)), "--verify")
    assert result.exit_code == 0, result.output
    assert "telecentre/a:1" in result.output and "checked: ok" in result.output


def test_recipe_digest_follows_content_mode_and_base(tmp_path: Path) -> None:
    recipe = tmp_path / "build"
    recipe.mkdir()
    (recipe / "Dockerfile").write_text("FROM x\n")
    (recipe / "entrypoint").write_text("#!/bin/sh\n")
    first = compose.recipe_digest(recipe, "base:1")
    assert first == compose.recipe_digest(recipe, "base:1")
    assert first != compose.recipe_digest(recipe, "base:2")
    (recipe / "entrypoint").chmod(0o755)
    second = compose.recipe_digest(recipe, "base:1")
    assert second != first
    (recipe / "Dockerfile").write_text("FROM y\n")
    assert compose.recipe_digest(recipe, "base:1") not in (first, second)
