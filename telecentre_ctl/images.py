"""Images without a registry: one zstd bundle of every image a site needs, and loading it
into hosts while sending only the layers they lack.

`bundle_site` runs playbooks/images.yml on a builder host (Docker, then the service role's
image phase for every service of the site: recipes built, upstream images pulled), then
streams `docker save` of those images back over SSH and writes the bundle.
`load_bundle` asks each host which layers it has (`docker image inspect`, over SSH), then
streams a filtered docker-save tar (image configs, the missing layers, a manifest.json of
the images that host needs) compressed with zstd into `zstd -d | docker load`.

The bundle file (format telecentre-images/1) is a docker-save tar (OCI layout, as Docker 25+
writes it) compressed as one zstd frame per tar member, followed by a zstd *skippable* frame
holding the index (JSON) and a footer. So:
- `zstd -dc FILE | docker load` loads the whole bundle by hand, without this tool (zstd
  ignores the skippable frame; docker load ignores nothing it needs);
- a host's stream is made by copying the frames of the members it needs, byte for byte:
  no recompression when deploying, and the bytes sent are the compressed size of what is
  missing there (plus a few kB of manifest);
- every frame carries zstd's content checksum and every member its SHA-256 (blobs are named
  by it): `verify_bundle` finds a truncated or corrupt file before any host is touched.
Inside the tar, manifest.json comes last: a stream cut short has no manifest, and docker
load then loads nothing.

SSH goes where Ansible's would, from the host's inventory variables as Ansible reads them
(telecentre_ctl.connection: address, port, user, keys, ssh arguments, ProxyJump); host
keys are checked against the inventory's known_hosts files, never skipped.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shlex
import struct
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from telecentre_ctl.errors import HostUnreachable, InvalidInput, OperationFailed

if TYPE_CHECKING:
    from telecentre_ctl.connection import Connection
    from telecentre_ctl.runner import HostProgress, RunResult
    from telecentre_ctl.site import Host, Site

FORMAT = "telecentre-images/1"
# The index travels in a zstd skippable frame (magic 0x184D2A50-5F; zstd -d skips it),
# whose payload ends with: u32 length of the JSON, then this magic.
SKIPPABLE_MAGIC = 0x184D2A5E
FOOTER_MAGIC = b"TCIMGIX1"
FOOTER_LEN = 4 + len(FOOTER_MAGIC)
BLOCK = tarfile.BLOCKSIZE  # 512
END_OF_ARCHIVE = b"\0" * (2 * BLOCK)
MANIFEST = "manifest.json"
# Members of docker save's tar written after the blobs, manifest.json the very last.
TRAILING = ("oci-layout", "index.json", "repositories", MANIFEST)
DEFAULT_LEVEL = 19
# Compression of the stream from the builder (the bundle is recompressed per member).
TRANSPORT_LEVEL = 3
CHUNK = 1 << 20
SMALL = 1 << 20  # non-blob members smaller than this are held back to the end of the tar
SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=15")
SSH_UNREACHABLE = 255
PROGRESS_EVERY = 3.0  # seconds between progress lines


def _zstd() -> Any:
    """The zstandard module (imported when needed: it is not needed for --help)."""
    import zstandard

    return zstandard


# --------------------------------------------------------------------------- index


@dataclass(frozen=True)
class Member:
    """One tar member of the bundle: its zstd frame (offset, csize) and its content."""

    name: str
    kind: str  # layer | config | blob (OCI manifests and indexes) | meta | dir | link
    offset: int
    csize: int  # compressed size of its frame
    size: int  # size of its data (0 for directories and links)
    sha256: str  # hex digest of its data
    mode: int = 0o644
    linkname: str = ""

    def as_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "offset": self.offset,
            "csize": self.csize,
            "size": self.size,
            "sha256": self.sha256,
            "mode": self.mode,
        }
        if self.linkname:
            data["linkname"] = self.linkname
        return data

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Member:
        return cls(
            name=str(data["name"]),
            kind=str(data["kind"]),
            offset=int(data["offset"]),
            csize=int(data["csize"]),
            size=int(data["size"]),
            sha256=str(data["sha256"]),
            mode=int(data.get("mode", 0o644)),
            linkname=str(data.get("linkname", "")),
        )


@dataclass(frozen=True)
class ImageEntry:
    """One image of the bundle: its tags, id (config digest) and layers (diff ids, in
    order) with the members holding them."""

    tags: tuple[str, ...]
    id: str
    config: str
    layers: tuple[str, ...]
    layer_members: tuple[str, ...]

    def as_data(self) -> dict[str, Any]:
        return {
            "tags": list(self.tags),
            "id": self.id,
            "config": self.config,
            "layers": list(self.layers),
            "layer_members": list(self.layer_members),
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> ImageEntry:
        return cls(
            tags=tuple(data["tags"]),
            id=str(data["id"]),
            config=str(data["config"]),
            layers=tuple(data["layers"]),
            layer_members=tuple(data["layer_members"]),
        )

    @property
    def chains(self) -> list[str]:
        return chain_ids(self.layers)


@dataclass
class BundleIndex:
    """What a bundle holds and where each member's frame is."""

    images: list[ImageEntry]
    members: list[Member]
    end: Member  # the frame of the tar's end-of-archive marker
    manifest: list[dict[str, Any]]  # docker save's manifest.json
    site: str = ""
    builder: str = ""
    created: str = ""
    level: int = DEFAULT_LEVEL
    format: str = FORMAT

    def member(self, name: str) -> Member:
        for member in self.members:
            if member.name == name:
                return member
        raise KeyError(name)

    def image(self, ref: str) -> ImageEntry | None:
        return next((i for i in self.images if ref in i.tags), None)

    @property
    def refs(self) -> list[str]:
        return [t for i in self.images for t in i.tags]

    @property
    def data_size(self) -> int:
        """Bytes of the uncompressed tar (what `zstd -dc FILE` gives)."""
        return sum(_frame_content_len(m) for m in self.members) + len(END_OF_ARCHIVE)

    @property
    def frames_size(self) -> int:
        return sum(m.csize for m in self.members) + self.end.csize

    def as_data(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "site": self.site,
            "builder": self.builder,
            "created": self.created,
            "level": self.level,
            "images": [i.as_data() for i in self.images],
            "manifest": self.manifest,
            "members": [m.as_data() for m in self.members],
            "end": self.end.as_data(),
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> BundleIndex:
        return cls(
            format=str(data["format"]),
            site=str(data.get("site", "")),
            builder=str(data.get("builder", "")),
            created=str(data.get("created", "")),
            level=int(data.get("level", DEFAULT_LEVEL)),
            images=[ImageEntry.from_data(i) for i in data["images"]],
            manifest=list(data["manifest"]),
            members=[Member.from_data(m) for m in data["members"]],
            end=Member.from_data(data["end"]),
        )


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """Docker's chain id of each prefix of a layer list: how the engine names a layer *on
    top of its parents*. A layer is present on a host only if its chain is."""
    chains: list[str] = []
    for diff in diff_ids:
        if not chains:
            chains.append(diff)
        else:
            text = f"{chains[-1]} {diff}".encode()
            chains.append("sha256:" + hashlib.sha256(text).hexdigest())
    return chains


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _frame_content_len(member: Member) -> int:
    return BLOCK + _padded(member.size)


def _tar_header(name: str, size: int, kind: str, mode: int, linkname: str = "") -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = mode
    info.mtime = 0
    if kind == "dir":
        info.type = tarfile.DIRTYPE
    elif kind == "link":
        info.type = tarfile.SYMTYPE
        info.linkname = linkname
    header = info.tobuf(format=tarfile.USTAR_FORMAT, encoding="utf-8", errors="strict")
    if len(header) != BLOCK:  # pragma: no cover - USTAR headers are one block
        raise ValueError(f"{name}: unexpected tar header length")
    return header


# --------------------------------------------------------------------------- writing


class BundleWriter:
    """Writes a bundle: one zstd frame per tar member, then the index in a skippable frame.

    add() members in tar order; close() writes the end-of-archive frame and the index."""

    def __init__(self, out: BinaryIO, level: int = DEFAULT_LEVEL, threads: int = 0) -> None:
        zstd = _zstd()
        self.out = out
        self.level = level
        self.offset = 0
        self.members: list[Member] = []
        params = zstd.ZstdCompressionParameters.from_level(
            level, threads=threads, write_checksum=True, write_content_size=True
        )
        self._cctx = zstd.ZstdCompressor(compression_params=params)

    def _frame(self, content_len: int, parts: Iterable[bytes]) -> tuple[int, int]:
        cobj = self._cctx.compressobj(size=content_len)
        start = self.offset
        for part in parts:
            if part:
                self._write(cobj.compress(part))
        self._write(cobj.flush())
        return start, self.offset - start

    def _write(self, data: bytes) -> None:
        if data:
            self.out.write(data)
            self.offset += len(data)

    def add(
        self,
        name: str,
        kind: str,
        size: int,
        chunks: Iterable[bytes],
        *,
        mode: int = 0o644,
        linkname: str = "",
        expect_sha256: str | None = None,
        reuse: tuple[BinaryIO, Member] | None = None,
    ) -> Member:
        """Add one member whose data (exactly `size` bytes) comes in `chunks`. With
        `reuse` (a bundle file and its member of the same name), the data is only read and
        checked, and that member's frame is copied instead of compressed again."""
        if reuse is not None:
            return self._add_reused(name, kind, size, chunks, reuse, expect_sha256)
        digest = hashlib.sha256()
        counted = 0

        def parts() -> Iterator[bytes]:
            nonlocal counted
            yield _tar_header(name, size, kind, mode, linkname)
            for chunk in chunks:
                digest.update(chunk)
                counted += len(chunk)
                yield chunk
            yield b"\0" * (_padded(size) - size)

        offset, csize = self._frame(BLOCK + _padded(size), parts())
        if counted != size:
            raise OperationFailed(f"{name}: {counted} bytes read, {size} announced")
        sha = digest.hexdigest()
        if expect_sha256 is not None and sha != expect_sha256:
            raise OperationFailed(
                f"{name}: its content does not match its digest (corrupted on the way)",
                fix="make the bundle again",
            )
        member = Member(name, kind, offset, csize, size, sha, mode, linkname)
        self.members.append(member)
        return member

    def _add_reused(
        self,
        name: str,
        kind: str,
        size: int,
        chunks: Iterable[bytes],
        reuse: tuple[BinaryIO, Member],
        expect_sha256: str | None,
    ) -> Member:
        f, old = reuse
        digest = hashlib.sha256()
        counted = 0
        for chunk in chunks:
            digest.update(chunk)
            counted += len(chunk)
        sha = digest.hexdigest()
        if counted != size or sha != old.sha256 or sha != (expect_sha256 or sha):
            raise OperationFailed(
                f"{name}: its content does not match its digest (corrupted on the way)",
                fix="make the bundle again",
            )
        start = self.offset
        for chunk in _frame_bytes(f, old):
            self._write(chunk)
        member = Member(name, kind, start, self.offset - start, size, sha, old.mode)
        self.members.append(member)
        return member

    def add_bytes(self, name: str, kind: str, data: bytes, mode: int = 0o644) -> Member:
        return self.add(name, kind, len(data), [data], mode=mode)

    def close(self, index: BundleIndex) -> BundleIndex:
        """Write the end of the tar and the index; returns the index with members filled."""
        offset, csize = self._frame(len(END_OF_ARCHIVE), [END_OF_ARCHIVE])
        index.members = list(self.members)
        index.end = Member("", "end", offset, csize, 0, "")
        index.level = self.level
        payload = json.dumps(index.as_data(), separators=(",", ":")).encode()
        payload += struct.pack("<I", len(payload)) + FOOTER_MAGIC
        self._write(struct.pack("<II", SKIPPABLE_MAGIC, len(payload)) + payload)
        return index


def _chunks(reader: IO[bytes]) -> Iterator[bytes]:
    while chunk := reader.read(CHUNK):
        yield chunk


def _member_kind(name: str, configs: set[str], layers: set[str]) -> str:
    if name in configs:
        return "config"
    if name in layers:
        return "layer"
    return "blob" if name.startswith("blobs/") else "meta"


def write_bundle(
    save_stream: BinaryIO,
    out: BinaryIO,
    *,
    level: int = DEFAULT_LEVEL,
    threads: int = 0,
    site: str = "",
    builder: str = "",
    on_member: Callable[[str, int], None] | None = None,
    reuse: Path | None = None,
) -> BundleIndex:
    """Turn a `docker save` tar stream into a bundle written to `out`. Blobs that an
    earlier bundle `reuse` (same zstd level) already holds are copied from it, not
    compressed again: re-bundling after one image changed costs that image only.

    Blobs are written as they come (checked against their digest); other small members
    are held back and written at the end, manifest.json last. Which blobs are layers and
    which are configs is only known from manifest.json, so kinds are settled at the end."""
    writer = BundleWriter(out, level=level, threads=threads)
    held: dict[str, tuple[tarfile.TarInfo, bytes]] = {}
    dirs: list[tarfile.TarInfo] = []
    old: dict[str, Member] = {}
    with ExitStack() as stack:
        old_file: BinaryIO | None = None
        if reuse is not None:
            try:
                previous = read_index(reuse)
            except InvalidInput:
                previous = None
            if previous is not None and previous.level == level:
                old = {m.name: m for m in previous.members if m.name.startswith("blobs/")}
                old_file = stack.enter_context(Path(reuse).open("rb"))
        _read_save_stream(save_stream, writer, held, dirs, old, old_file, on_member)
    return _finish_bundle(writer, held, dirs, site, builder)


def _read_save_stream(
    save_stream: BinaryIO,
    writer: BundleWriter,
    held: dict[str, tuple[tarfile.TarInfo, bytes]],
    dirs: list[tarfile.TarInfo],
    old: dict[str, Member],
    old_file: BinaryIO | None,
    on_member: Callable[[str, int], None] | None,
) -> None:
    with tarfile.open(fileobj=save_stream, mode="r|") as tar:
        for info in tar:
            if info.isdir():
                dirs.append(info)
                continue
            if info.issym():
                held[info.name] = (info, b"")
                continue
            if not info.isfile():
                raise OperationFailed(f"docker save wrote {info.name!r} of an unexpected type")
            reader = tar.extractfile(info)
            if reader is None:  # pragma: no cover - regular files always have a reader
                raise OperationFailed(f"docker save: cannot read {info.name!r}")
            if info.name.startswith("blobs/") or info.size >= SMALL:
                expect = None
                if info.name.startswith("blobs/sha256/"):
                    expect = info.name.rsplit("/", 1)[1]
                previous = old.get(info.name)
                reused = None
                if old_file is not None and previous is not None and previous.size == info.size:
                    reused = (old_file, previous)
                writer.add(
                    info.name,
                    "blob",
                    info.size,
                    _chunks(reader),
                    mode=0o644,
                    expect_sha256=expect,
                    reuse=reused,
                )
                if on_member is not None:
                    on_member(info.name, info.size)
            else:
                held[info.name] = (info, reader.read())


def _finish_bundle(
    writer: BundleWriter,
    held: dict[str, tuple[tarfile.TarInfo, bytes]],
    dirs: list[tarfile.TarInfo],
    site: str,
    builder: str,
) -> BundleIndex:
    """Write the held-back members (manifest.json last), settle kinds, write the index."""
    if MANIFEST not in held:
        raise OperationFailed("docker save wrote no manifest.json: is this a docker-save tar?")
    manifest = json.loads(held[MANIFEST][1])
    for info in dirs:
        writer.add(info.name.rstrip("/") + "/", "dir", 0, [], mode=0o755)
    order = sorted(held, key=lambda n: (n in TRAILING, TRAILING.index(n) if n in TRAILING else 0))
    for name in order:
        info, data = held[name]
        if info.issym():
            writer.add(name, "link", 0, [], mode=0o777, linkname=info.linkname)
        else:
            writer.add_bytes(name, "meta", data)
    configs = {str(e["Config"]) for e in manifest}
    layers = {str(p) for e in manifest for p in e["Layers"]}
    writer.members = [
        Member(
            m.name,
            m.kind if m.kind in ("dir", "link") else _member_kind(m.name, configs, layers),
            m.offset,
            m.csize,
            m.size,
            m.sha256,
            m.mode,
            m.linkname,
        )
        for m in writer.members
    ]
    config_data = {name: data for name, (_, data) in held.items()}
    images = _images_of(manifest, writer.members, config_data)
    index = BundleIndex(
        images=images,
        members=[],
        end=Member("", "end", 0, 0, 0, ""),
        manifest=manifest,
        site=site,
        builder=builder,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    return writer.close(index)


def _images_of(
    manifest: list[dict[str, Any]], members: list[Member], held: dict[str, bytes]
) -> list[ImageEntry]:
    """Image entries from docker save's manifest.json; diff ids are the layer blobs' digests
    (docker save writes layers uncompressed, named by digest)."""
    by_name = {m.name: m for m in members}
    images = []
    for entry in manifest:
        config = str(entry["Config"])
        if config not in by_name:
            raise OperationFailed(f"docker save: manifest.json names {config} but it is missing")
        layer_members = tuple(str(p) for p in entry["Layers"])
        diff_ids = []
        for path in layer_members:
            if path not in by_name:
                raise OperationFailed(f"docker save: manifest.json names {path} but it is missing")
            diff_ids.append("sha256:" + by_name[path].sha256)
        images.append(
            ImageEntry(
                tags=tuple(entry.get("RepoTags") or ()),
                id="sha256:" + by_name[config].sha256,
                config=config,
                layers=tuple(diff_ids),
                layer_members=layer_members,
            )
        )
    del held
    return images


# --------------------------------------------------------------------------- reading


def _bad_bundle(path: Path, what: str) -> InvalidInput:
    return InvalidInput(
        f"{path}: {what}",
        fix="make the bundle again with: telecentre-ctl images bundle SITE_DIR -o FILE "
        "(and copy it whole: compare the sizes)",
    )


def read_index(path: Path) -> BundleIndex:
    """The bundle's index, from its last frame. Raises InvalidInput (exit 2) when the file
    is not a complete bundle."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file", fix="give the file images bundle wrote")
    size = path.stat().st_size
    with path.open("rb") as f:
        if size < 8 + FOOTER_LEN:
            raise _bad_bundle(path, "too short to be an image bundle (truncated?)")
        f.seek(size - FOOTER_LEN)
        tail = f.read(FOOTER_LEN)
        (json_len,) = struct.unpack("<I", tail[:4])
        if tail[4:] != FOOTER_MAGIC or json_len > size - 8 - FOOTER_LEN:
            raise _bad_bundle(path, "no bundle index at its end: truncated, or not a bundle")
        start = size - FOOTER_LEN - json_len - 8
        f.seek(start)
        magic, payload_len = struct.unpack("<II", f.read(8))
        if magic != SKIPPABLE_MAGIC or payload_len != json_len + FOOTER_LEN:
            raise _bad_bundle(path, "its index frame is damaged")
        raw = f.read(json_len)
    try:
        index = BundleIndex.from_data(json.loads(raw))
    except (ValueError, KeyError, TypeError) as err:
        raise _bad_bundle(path, f"its index is damaged ({err})") from err
    if index.format != FORMAT:
        raise _bad_bundle(path, f"format {index.format!r}, this tool reads {FORMAT!r}")
    expected = 0
    for member in [*index.members, index.end]:
        if member.offset != expected or member.csize <= 0:
            raise _bad_bundle(path, f"its index is inconsistent at {member.name or 'the end'}")
        expected += member.csize
    if expected != start:
        raise _bad_bundle(path, "its frames do not add up to its size")
    return index


def _frame_bytes(f: BinaryIO, member: Member) -> Iterator[bytes]:
    """The compressed bytes of a member's frame, in chunks."""
    f.seek(member.offset)
    left = member.csize
    while left:
        chunk = f.read(min(CHUNK, left))
        if not chunk:
            raise EOFError(member.name)
        left -= len(chunk)
        yield chunk


def _decompress_frame(f: BinaryIO, member: Member) -> Iterator[bytes]:
    """A member's frame decompressed; checks it is exactly one whole frame."""
    zstd = _zstd()
    dobj = zstd.ZstdDecompressor().decompressobj()
    for chunk in _frame_bytes(f, member):
        out = dobj.decompress(chunk)
        if out:
            yield out
    if not dobj.eof or dobj.unused_data:
        raise ValueError("the frame does not end where the index says")


def _check_member(f: BinaryIO, member: Member) -> None:
    """Decompress one frame and check its tar header, size, padding and SHA-256."""
    header = b""
    digest = hashlib.sha256()
    data_left = member.size
    pad_left = _padded(member.size) - member.size + (BLOCK if member.kind == "end" else 0)
    for out in _decompress_frame(f, member):
        view = memoryview(out)
        if len(header) < BLOCK:
            take = BLOCK - len(header)
            header += bytes(view[:take])
            view = view[take:]
        if data_left:
            take = min(data_left, len(view))
            digest.update(view[:take])
            data_left -= take
            view = view[take:]
        if len(view) > pad_left or any(view):
            raise ValueError("trailing data after the member")
        pad_left -= len(view)
    if len(header) < BLOCK or data_left or pad_left:
        raise ValueError("the member is shorter than the index says")
    if member.kind == "end":
        if header != b"\0" * BLOCK:
            raise ValueError("the end of the archive is damaged")
        return
    info = tarfile.TarInfo.frombuf(header, "utf-8", "strict")
    if info.name.rstrip("/") != member.name.rstrip("/") or info.size != member.size:
        raise ValueError(f"its tar header says {info.name} ({info.size} bytes)")
    if member.kind not in ("dir", "link") and digest.hexdigest() != member.sha256:
        raise ValueError("its content does not match its SHA-256")


def verify_bundle(path: Path, on_progress: Callable[[int, int], None] | None = None) -> BundleIndex:
    """Read the whole bundle and check every frame; raises InvalidInput on any damage.
    on_progress(done_bytes, total_bytes) is called after each member."""
    index = read_index(path)
    total = index.frames_size
    done = 0
    with Path(path).open("rb") as f:
        for member in [*index.members, index.end]:
            try:
                _check_member(f, member)
            except (ValueError, EOFError, tarfile.TarError) as err:
                raise _bad_bundle(path, f"member {member.name or '(end)'}: {err}") from err
            except Exception as err:  # zstandard.ZstdError: corrupt frame or bad checksum
                if type(err).__name__ != "ZstdError":
                    raise
                raise _bad_bundle(path, f"member {member.name or '(end)'}: {err}") from err
            done += member.csize
            if on_progress is not None:
                on_progress(done, total)
    names = {m.name for m in index.members}
    for image in index.images:
        missing = [n for n in (image.config, *image.layer_members) if n not in names]
        if missing:
            raise _bad_bundle(path, f"image {image.tags}: members missing: {missing[:3]}")
    return index


# --------------------------------------------------------------------------- per host


@dataclass(frozen=True)
class HostImages:
    """What a host has: image id -> its tags, and the chain ids of all its layers."""

    tags: dict[str, tuple[str, ...]]
    chains: frozenset[str]

    @classmethod
    def parse(cls, text: str) -> HostImages:
        """Lines of `docker image inspect --format '{{.Id}} {{json .RepoTags}}
        {{json .RootFS.Layers}}'`."""
        tags: dict[str, tuple[str, ...]] = {}
        chains: set[str] = set()
        for line in text.splitlines():
            line = line.strip()
            if not line:
                continue
            image_id, rest = line.split(" ", 1)
            decoder = json.JSONDecoder()
            repo_tags, end = decoder.raw_decode(rest)
            layers, _ = decoder.raw_decode(rest[end:].strip())
            tags[image_id] = tuple(repo_tags or ())
            chains.update(chain_ids(layers or []))
        return cls(tags=tags, chains=frozenset(chains))


@dataclass
class HostPlan:
    """What one host gets from a bundle."""

    images: list[ImageEntry]  # to load (missing, or present without their tag)
    members: list[Member]  # configs and missing layers, in bundle order
    present: list[str] = field(default_factory=list)  # refs already there

    @property
    def layers(self) -> list[Member]:
        return [m for m in self.members if m.kind == "layer"]


def plan_host(index: BundleIndex, refs: Iterable[str], have: HostImages) -> HostPlan:
    """The images of `refs` the host lacks, and the members to send it: their configs and
    every layer whose chain the host does not have. Refs the bundle lacks are ignored
    (the deploy builds or pulls them)."""
    images: list[ImageEntry] = []
    present: list[str] = []
    for ref in refs:
        image = index.image(ref)
        if image is None:
            continue
        if ref in have.tags.get(image.id, ()):
            present.append(ref)
        elif image not in images:
            images.append(image)
    wanted: set[str] = set()
    for image in images:
        wanted.add(image.config)
        for chain, member in zip(image.chains, image.layer_members, strict=True):
            if chain not in have.chains:
                wanted.add(member)
    return HostPlan(
        images=images, members=[m for m in index.members if m.name in wanted], present=present
    )


def host_manifest(index: BundleIndex, images: Sequence[ImageEntry]) -> bytes:
    """docker save's manifest.json reduced to these images."""
    configs = {i.config for i in images}
    entries = [e for e in index.manifest if e["Config"] in configs]
    return json.dumps(entries, separators=(",", ":")).encode()


def write_host_stream(
    f: BinaryIO,
    index: BundleIndex,
    plan: HostPlan,
    out: IO[bytes],
    on_bytes: Callable[[int], None] | None = None,
) -> int:
    """Write the host's zstd stream to `out`: the planned members' frames copied as they
    are, then a fresh frame with its manifest.json, then the end of the tar. Returns the
    number of bytes written."""
    sent = 0

    def emit(data: bytes) -> None:
        nonlocal sent
        out.write(data)
        sent += len(data)
        if on_bytes is not None:
            on_bytes(len(data))

    for member in plan.members:
        for chunk in _frame_bytes(f, member):
            emit(chunk)
    manifest = io.BytesIO()
    writer = BundleWriter(manifest, level=3)
    writer.add_bytes(MANIFEST, "meta", host_manifest(index, plan.images))
    emit(manifest.getvalue())
    for chunk in _frame_bytes(f, index.end):
        emit(chunk)
    return sent


# --------------------------------------------------------------------------- SSH


@dataclass(frozen=True)
class SshTarget:
    """How to reach one host with OpenSSH: its inventory's view (telecentre_ctl.connection)."""

    connection: Connection

    @classmethod
    def of(cls, host: Host) -> SshTarget:
        return cls(host.connection)

    @property
    def name(self) -> str:
        return self.connection.name

    @property
    def address(self) -> str:
        return self.connection.address

    def argv(self, command: str) -> list[str]:
        return self.connection.ssh_argv(command, first=SSH_OPTIONS)

    def run(self, command: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                self.argv(command),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as err:
            raise HostUnreachable(
                f"{self.name} ({self.address}): no answer over SSH in {timeout:.0f} s",
                fix="check that the host is up and reachable, then run again",
            ) from err

    def failed(self, what: str, proc: subprocess.CompletedProcess[Any]) -> Exception:
        err = proc.stderr if isinstance(proc.stderr, str) else (proc.stderr or b"").decode()
        detail = err.strip().splitlines()[-3:] if err.strip() else []
        text = f"{self.name} ({self.address}): {what}" + (
            f": {' / '.join(detail)}" if detail else ""
        )
        if proc.returncode == SSH_UNREACHABLE:
            return HostUnreachable(
                text,
                fix="check that the host is up, answers SSH, and that its host key is in the "
                "known_hosts file hosts.yml names",
            )
        return OperationFailed(text, fix="read the message above, fix the host, run again")


def _quote_all(words: Iterable[str]) -> str:
    return " ".join(shlex.quote(w) for w in words)


INSPECT_SCRIPT = r"""
command -v docker >/dev/null || { echo NO-DOCKER; exit 0; }
ids=$(docker image ls --all --quiet --no-trunc | sort -u) || exit 1
[ -z "$ids" ] || docker image inspect \
  --format '{{.Id}} {{json .RepoTags}} {{json .RootFS.Layers}}' $ids
"""

ZSTD_SCRIPT = r"""
command -v zstd >/dev/null && exit 0
export DEBIAN_FRONTEND=noninteractive
{ apt-get install -y -q --no-install-recommends zstd \
  || { apt-get update -q && apt-get install -y -q --no-install-recommends zstd; }; } >&2
"""


def host_images(target: SshTarget) -> HostImages:
    """Ask a host which images and layers it has; raises if Docker is not there."""
    proc = target.run(INSPECT_SCRIPT)
    if proc.returncode != 0:
        raise target.failed("could not list its Docker images", proc)
    if proc.stdout.strip() == "NO-DOCKER":
        raise OperationFailed(
            f"{target.name} ({target.address}): Docker is not installed there",
            fix="run the deploy (its docker role installs Docker) before loading images",
        )
    return HostImages.parse(proc.stdout)


def _bash(script: str) -> str:
    return f"bash -o pipefail -c {shlex.quote(script)}"


# --------------------------------------------------------------------------- load


@dataclass
class LoadResult:
    """What loading a bundle did on one host."""

    host: str
    bytes_sent: int
    images: list[str]  # refs loaded
    present: list[str]  # refs already there
    layers_sent: int
    layers_skipped: int
    seconds: float
    missing_from_bundle: list[str] = field(default_factory=list)

    def as_data(self) -> dict[str, Any]:
        return {
            "bytes_sent": self.bytes_sent,
            "images_loaded": self.images,
            "images_present": self.present,
            "layers_sent": self.layers_sent,
            "layers_skipped": self.layers_skipped,
            "missing_from_bundle": self.missing_from_bundle,
            "seconds": round(self.seconds, 1),
        }


Say = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


def site_images(site: Site, services: Iterable[str] | None = None) -> list[str]:
    """The image refs of these services (default: all the site's), with the base images of
    their build recipes first (so a host given the bundle needs no debootstrap either)."""
    if services is None:
        services = [s for placed in site.placement().values() for s in placed]
    refs: list[str] = []
    for name in services:
        entry = site.catalog[name]
        base = entry.data.get("build", {}).get("base")
        for ref in (base, entry.image):
            if ref and ref not in refs:
                refs.append(str(ref))
    bases = [r for r in refs if _is_base(site, r)]
    return bases + [r for r in refs if r not in bases]


def _is_base(site: Site, ref: str) -> bool:
    return any(s.data.get("build", {}).get("base") == ref for s in site.catalog.services.values())


def load_into_host(
    bundle: Path,
    index: BundleIndex,
    target: SshTarget,
    refs: Sequence[str],
    say: Say = _quiet,
) -> LoadResult:
    """Send the host the members of `refs` it lacks and `docker load` them; checks after
    that the host has each image with the bundle's id."""
    started = time.monotonic()
    have = host_images(target)
    plan = plan_host(index, refs, have)
    missing = [r for r in refs if index.image(r) is None]
    all_layers = {m for i in plan.images for m in i.layer_members}
    result = LoadResult(
        host=target.name,
        bytes_sent=0,
        images=[t for i in plan.images for t in i.tags if t in refs],
        present=plan.present,
        layers_sent=len(plan.layers),
        layers_skipped=len(all_layers) - len(plan.layers),
        seconds=0.0,
        missing_from_bundle=missing,
    )
    if not plan.images:
        say(f"{target.name}: all {len(plan.present)} image(s) already there, nothing to send")
        result.seconds = time.monotonic() - started
        return result
    proc = target.run(ZSTD_SCRIPT, timeout=900)
    if proc.returncode != 0:
        raise target.failed("could not install zstd", proc)
    planned = sum(m.csize for m in plan.members)
    say(
        f"{target.name}: sending {len(plan.images)} image(s), {len(plan.layers)} layer(s) "
        f"missing there ({_mb(planned)}), {result.layers_skipped} already there"
    )
    counter = _Counter(planned, lambda done, total: say(f"{target.name}: {_pct(done, total)}"))
    with tempfile.TemporaryFile() as err, Path(bundle).open("rb") as f:
        load = subprocess.Popen(
            target.argv(_bash("zstd -d -c -q | docker load")),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
        )
        assert load.stdin is not None and load.stdout is not None
        out_lines: list[bytes] = []
        reader = threading.Thread(target=lambda: out_lines.extend(load.stdout or []))
        reader.start()
        try:
            result.bytes_sent = write_host_stream(f, index, plan, load.stdin, counter.add)
            load.stdin.close()
        except BrokenPipeError:
            pass
        finally:
            rc = load.wait()
            reader.join()
        if rc != 0:
            err.seek(0)
            stderr = err.read().decode(errors="replace")
            raise target.failed(
                "docker load failed", subprocess.CompletedProcess([], rc, "", stderr)
            )
    after = host_images(target)
    wrong = [r for r in refs if (i := index.image(r)) and r not in after.tags.get(i.id, ())]
    if wrong:
        raise OperationFailed(
            f"{target.name}: after docker load, {', '.join(wrong)} missing or with another id",
            fix="run again; if it persists, remove those images on the host (docker rmi) "
            "and load again",
        )
    result.seconds = time.monotonic() - started
    say(f"{target.name}: loaded {len(plan.images)} image(s), sent {_mb(result.bytes_sent)}")
    return result


def load_bundle(
    site: Site,
    bundle: Path,
    hosts: Sequence[str] | None = None,
    say: Say = _quiet,
    *,
    verified: BundleIndex | None = None,
    workers: int = 4,
) -> dict[str, LoadResult]:
    """Load a bundle into the site's hosts (all, or `hosts`): each host gets the images of
    the services placed on it that it lacks, and only the layers it lacks. The bundle is
    verified whole first (InvalidInput, nothing touched, if damaged).

    This is what `deploy --images FILE` runs once the Docker engine is on the hosts,
    before the service role (which then finds the images and neither builds nor pulls)."""
    names = [h.name for h in site.hosts]
    chosen = list(hosts) if hosts is not None else names
    unknown = [h for h in chosen if h not in names]
    if unknown:
        raise InvalidInput(
            f"{', '.join(unknown)}: not in {site.dir / 'hosts.yml'}",
            fix=f"use one of: {', '.join(names)}",
        )
    index = verified
    if index is None:
        say(f"checking {bundle}")
        index = verify_bundle(bundle)
    if index.site and index.site != site.name:
        say(f"note: {bundle} was made for site {index.site!r}, loading it into {site.name!r}")
    placement = site.placement()
    targets = {h.name: SshTarget.of(h) for h in site.hosts if h.name in chosen}
    results: dict[str, LoadResult] = {}
    errors: list[Exception] = []
    lock = threading.Lock()

    def one(name: str) -> None:
        try:
            res = load_into_host(
                bundle, index, targets[name], site_images(site, placement[name]), say
            )
            with lock:
                results[name] = res
        except Exception as err:
            with lock:
                errors.append(err)

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(targets)))) as pool:
        list(pool.map(one, chosen))
    if errors:
        unreachable = [e for e in errors if isinstance(e, HostUnreachable)]
        first = unreachable[0] if unreachable else errors[0]
        if len(errors) > 1:
            extra = "; ".join(str(e).splitlines()[0] for e in errors if e is not first)
            if isinstance(first, HostUnreachable | OperationFailed):
                raise type(first)(f"{first.message}; also: {extra}", fix=first.fix) from first
        raise first
    return results


# --------------------------------------------------------------------------- bundle


@dataclass
class BundleResult:
    path: Path
    index: BundleIndex
    bytes: int
    seconds: float
    log_file: Path | None

    def as_data(self) -> dict[str, Any]:
        sizes = {m.name: m for m in self.index.members}
        return {
            "file": str(self.path),
            "bytes": self.bytes,
            "uncompressed_bytes": self.index.data_size,
            "ratio": round(self.bytes / max(1, self.index.data_size), 3),
            "site": self.index.site,
            "builder": self.index.builder,
            "seconds": round(self.seconds, 1),
            "log": str(self.log_file) if self.log_file else None,
            "images": [
                {
                    "tags": list(i.tags),
                    "id": i.id,
                    "layers": len(i.layers),
                    "bytes": sum(sizes[n].csize for n in i.layer_members),
                }
                for i in self.index.images
            ],
        }


def builder_host(site: Site, builder: str | None) -> Host:
    names = [h.name for h in site.hosts]
    if builder is None:
        return site.hosts[0]
    for host in site.hosts:
        if host.name == builder:
            return host
    raise InvalidInput(
        f"--builder {builder}: no such host in {site.dir / 'hosts.yml'}",
        fix=f"use one of: {', '.join(names)}",
    )


def prepare_builder(
    site: Site, host: Host, on_progress: Callable[[HostProgress], None] | None = None
) -> RunResult:
    """Run playbooks/images.yml on the builder: Docker, zstd, every image of the site."""
    from telecentre_ctl import runner
    from telecentre_ctl.paths import PLAYBOOKS_DIR
    from telecentre_ctl.secrets import SECRETS_FILE, vault_password_file

    password_file = vault_password_file(site.name)
    secrets_present = (site.dir / SECRETS_FILE).is_file() and password_file.is_file()
    secrets = [password_file.read_text(encoding="utf-8").strip()] if secrets_present else []
    request = runner.RunRequest(
        inventory=site.dir / "hosts.yml",
        playbook=PLAYBOOKS_DIR / "images.yml",
        log_file=runner.log_path(site.dir, "images"),
        vault_password_file=password_file if secrets_present else None,
        limit=host.name,
        secrets=secrets,
    )
    result = runner.run_playbook(request, on_progress=on_progress)
    code = result.exit_code
    if code != 0:
        detail = f"{result.problem}; " if result.problem else ""
        message = next((h.message for h in result.hosts.values() if h.message), "")
        text = f"{detail}the images could not be made on {host.name}" + (
            f": {message}" if message else ""
        )
        fix = (
            f"read the failed task in {result.log_file}; images of upstream services need a "
            "reachable registry on the builder (choose another with --builder)"
        )
        if code == 3:
            raise HostUnreachable(text, fix=f"check that {host.name} answers SSH; {fix}")
        raise OperationFailed(text, fix=fix)
    return result


def save_from_host(
    target: SshTarget,
    refs: Sequence[str],
    output: Path,
    *,
    level: int = DEFAULT_LEVEL,
    threads: int = 0,
    site: str = "",
    say: Say = _quiet,
    reuse: Path | None = None,
) -> BundleIndex:
    """Stream `docker save REFS` from the host (zstd-compressed on the way) into a bundle
    at `output`, written to a temporary name first and renamed when complete. Frames of
    `reuse` (default: the bundle `output` replaces, if any) are copied where they fit."""
    zstd = _zstd()
    output = Path(output)
    part = output.with_name(f".{output.name}.part")
    script = f"docker save {_quote_all(refs)} | zstd -{TRANSPORT_LEVEL} -T0 -q -c"
    say(f"{target.name}: docker save of {len(refs)} image(s), compressing (zstd -{level})")
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            target.argv(_bash(script)), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err
        )
        assert proc.stdout is not None
        received = _Counter(0, lambda done, _: say(f"{target.name}: {_mb(done)} of images in"))

        def on_member(name: str, size: int) -> None:
            received.add(size)

        try:
            with part.open("wb") as out:
                reader = zstd.ZstdDecompressor().stream_reader(proc.stdout, read_across_frames=True)
                index = write_bundle(
                    reader,
                    out,
                    level=level,
                    threads=threads,
                    site=site,
                    builder=target.name,
                    on_member=on_member,
                    reuse=reuse if reuse is not None else (output if output.is_file() else None),
                )
                out.flush()
                os.fsync(out.fileno())
        except Exception as err_:
            proc.kill()
            proc.wait()
            part.unlink(missing_ok=True)
            if proc.returncode not in (0, -9):
                err.seek(0)
                stderr = err.read().decode(errors="replace")
                raise target.failed(
                    "docker save failed",
                    subprocess.CompletedProcess([], proc.returncode, "", stderr),
                ) from err_
            if type(err_).__name__ == "ZstdError" or isinstance(err_, tarfile.TarError):
                raise OperationFailed(
                    f"{target.name}: the image stream was cut or damaged ({err_})",
                    fix="run again",
                ) from err_
            raise
        rc = proc.wait()
        if rc != 0:
            part.unlink(missing_ok=True)
            err.seek(0)
            stderr = err.read().decode(errors="replace")
            raise target.failed(
                "docker save failed", subprocess.CompletedProcess([], rc, "", stderr)
            )
    got = set(index.refs)
    lacking = [r for r in refs if r not in got]
    if lacking:
        part.unlink(missing_ok=True)
        raise OperationFailed(f"{target.name}: docker save did not include {', '.join(lacking)}")
    part.replace(output)
    return index


def bundle_site(
    site_dir: Path,
    output: Path,
    builder: str | None = None,
    *,
    level: int = DEFAULT_LEVEL,
    threads: int = 0,
    say: Say = _quiet,
    on_progress: Callable[[HostProgress], None] | None = None,
) -> BundleResult:
    """Make every image the site needs on the builder host (Ansible), then write them all
    into one bundle at `output`."""
    from telecentre_ctl.site import load_site

    output = Path(output)
    if not output.parent.is_dir():
        raise InvalidInput(
            f"-o {output}: folder {output.parent} does not exist", fix="create it or choose another"
        )
    if output.is_dir():
        raise InvalidInput(f"-o {output}: is a folder", fix="give a file name, e.g. site.tcimg")
    site = load_site(Path(site_dir), check_secrets=False)
    host = builder_host(site, builder)
    refs = site_images(site)
    started = time.monotonic()
    say(f"making {len(refs)} image(s) of {site.name} on {host.name}: {', '.join(refs)}")
    run = prepare_builder(site, host, on_progress)
    index = save_from_host(
        SshTarget.of(host), refs, output, level=level, threads=threads, site=site.name, say=say
    )
    return BundleResult(
        path=output,
        index=index,
        bytes=output.stat().st_size,
        seconds=time.monotonic() - started,
        log_file=run.log_file,
    )


# --------------------------------------------------------------------------- recipes


# --------------------------------------------------------------------------- helpers


class _Counter:
    """Calls back at most every PROGRESS_EVERY seconds with the bytes done so far."""

    def __init__(self, total: int, report: Callable[[int, int], None]) -> None:
        self.total, self.done, self.report = total, 0, report
        self.last = time.monotonic()

    def add(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY:
            self.last = now
            self.report(self.done, self.total)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _pct(done: int, total: int) -> str:
    return f"{_mb(done)} of {_mb(total)} sent ({100 * done // max(1, total)}%)"
