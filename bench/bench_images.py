"""Benchmark: image bundles against plain `docker save | gzip`, and the bytes a host is sent
after one service's image changed. Baselines are measured in the same run, on the same
images. Prints ratios. Needs root and the lab. Not a test: it asserts nothing.

    sudo .venv/bin/python bench/bench_images.py [--level 19] [--site DIR]

1. Bundle the demo site's images from lab host 1 (`images bundle`) -> size B; on the same
   host, `docker save <the same images> | gzip | wc -c` -> G.     Target: B/G <= 0.85.
2. Load the bundle into lab host 2. Then change one service's image on host 1 (rebuild the
   radicale recipe with a small change to its package step, so its package layer and the
   layers above are new), bundle again, load into host 2 -> bytes sent S; the new layers'
   size in the bundle -> C.                                          Target: S/C <= 1.1.
   The same with a change of one configuration file only (a tiny layer) shows the fixed
   cost of a load (image config and manifest) in bytes.

With --site, an existing lab site with two running hosts is used (its images already
built); otherwise a lab `imgtestbench` is made and removed at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from telecentre_ctl import images  # noqa: E402
from telecentre_ctl.lab import control, state, testing  # noqa: E402
from telecentre_ctl.paths import DEMO_SITE  # noqa: E402
from telecentre_ctl.site import load_site, read_site_name  # noqa: E402

SERVICE = "radicale"
RECIPE = f"/opt/telecentre/{SERVICE}/build"


def say(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


def changed_layers(old: images.BundleIndex, new: images.BundleIndex) -> tuple[int, int, int]:
    """Layers of `new` whose chain no image of `old` has: (count, compressed, raw bytes)."""
    had = {c for i in old.images for c in i.chains}
    seen: set[str] = set()
    csize = size = 0
    for image in new.images:
        for chain, name in zip(image.chains, image.layer_members, strict=True):
            if chain not in had and name not in seen:
                seen.add(name)
                member = new.member(name)
                csize += member.csize
                size += member.size
    return len(seen), csize, size


def rebuild(lab: testing.Lab, tag: str, base: str, edit: str) -> None:
    """Rebuild the service's image on host 1 from its recipe there, after `edit`."""
    lab.run(lab.hosts[0], f"cd {RECIPE} && {edit}")
    lab.run(
        lab.hosts[0],
        f"docker build --quiet --tag {tag} --build-arg BASE={base} {RECIPE} >/dev/null",
        timeout=1800,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--level", type=int, default=images.DEFAULT_LEVEL)
    parser.add_argument("--site", type=Path, help="existing lab site with 2 hosts up")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-images-"))
    os.environ.setdefault("XDG_CONFIG_HOME", str(work / "config"))
    own = args.site is None
    site_dir = args.site or testing.write_site(
        work / "imgtestbench", "imgtestbench", DEMO_SITE / "site.yml"
    )
    try:
        lab_state = control.up(site_dir, 2) if own else state.load(read_site_name(site_dir))
        if lab_state is None:
            raise SystemExit(f"{site_dir}: no lab up for it (telecentre-ctl lab up --hosts 2)")
        site = load_site(site_dir, check_secrets=False)
        lab = testing.Lab(site_dir, lab_state)
        builder, target = (images.SshTarget.of(h) for h in site.hosts[:2])
        refs = images.site_images(site)

        print(f"1. bundle vs docker save | gzip ({len(refs)} images, zstd -{args.level})")
        first = work / "v1.tcimg"
        began = time.monotonic()
        images.bundle_site(site_dir, first, builder.name, level=args.level, say=say)
        seconds = time.monotonic() - began
        quoted = " ".join(refs)
        gz = int(lab.run(lab.hosts[0], f"docker save {quoted} | gzip -c | wc -c").stdout)
        raw = int(lab.run(lab.hosts[0], f"docker save {quoted} | wc -c").stdout)
        size = first.stat().st_size
        print(f"   docker save      {raw / 1e6:9.1f} MB")
        print(f"   ... | gzip       {gz / 1e6:9.1f} MB   (baseline)")
        print(f"   bundle           {size / 1e6:9.1f} MB   made in {seconds:.0f} s")
        print(f"   bundle / gzip    {size / gz:9.3f}x   (target <= 0.85)")

        print("2. bytes sent after one service's image changed")
        if "docker" not in lab.run(lab.hosts[1], "command -v docker || true").stdout:
            lab.install_docker(lab.hosts[1])
        lab.run(lab.hosts[1], f"docker rmi {quoted} >/dev/null 2>&1 || true")
        loaded = images.load_bundle(site, first, [target.name], say=say)[target.name]
        print(f"   full load into a fresh host: {loaded.bytes_sent / 1e6:.1f} MB sent")
        entry = site.catalog[SERVICE]
        tag, base = entry.image, str(entry.data["build"]["base"])
        previous = images.read_index(first)
        cases = [
            ("package step changed", "sed -i 's|^ && rm -rf /var/lib/apt/lists|"
             " \\&\\& echo bench-$(date +%s) >/etc/bench-stamp \\\\\\n&|' Dockerfile"),
            ("config file changed", "echo '# bench '$(date +%s) >> config"),
        ]  # fmt: skip
        for n, (what, edit) in enumerate(cases, start=2):
            rebuild(lab, tag, base, edit)
            newer = work / f"v{n}.tcimg"
            index = images.save_from_host(
                builder, refs, newer, level=args.level, site=site.name, say=say, reuse=first
            )
            count, csize, rawsize = changed_layers(previous, index)
            got = images.load_bundle(site, newer, [target.name], say=say)[target.name]
            print(
                f"   {what}: {count} new layer(s), {csize / 1e6:.3f} MB in the bundle "
                f"({rawsize / 1e6:.1f} MB raw); sent {got.bytes_sent / 1e6:.3f} MB "
                f"= {got.bytes_sent / max(1, csize):.3f}x the new layers (target <= 1.1)"
                f"; {got.bytes_sent - csize} bytes of configs and manifest"
            )
            first, previous = newer, index
        print(f"   (whole bundle: {size / 1e6:.1f} MB; images.py copies frames, no recompression)")
    finally:
        if own:
            control.down(site_dir)
        else:
            print(
                f"note: {SERVICE}'s image on the first host of {site_dir} was rebuilt with "
                "bench changes; the next images bundle or deploy restores the recipe",
                file=sys.stderr,
            )


if __name__ == "__main__":
    main()
