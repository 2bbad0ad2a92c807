"""The service catalogue: services/<name>/service.yml, each service declared once.

The Python side reads entries into `Service` objects; the Ansible side receives the same
validated data (`Catalog.as_data()`) as one variable, `tc_catalog`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from telecentre_ctl import compose, yamlio
from telecentre_ctl.errors import InvalidInput, Problem
from telecentre_ctl.paths import SCHEMA_FILE, SERVICES_DIR

PROFILES = ("lite", "standard", "full")
# What a site may say about any app in site.yml, besides the options its entry declares.
COMMON_OPTIONS = {
    "subdomain": {"type": "string", "pattern": "^[a-z][a-z0-9-]{0,30}$"},
    "memory_mb": {"type": "integer", "minimum": 16, "maximum": 16384},
}


@dataclass(frozen=True)
class Service:
    """One catalogue entry. `data` is the validated entry, as Ansible receives it."""

    name: str
    kind: str
    data: dict[str, Any] = field(repr=False)

    @property
    def profiles(self) -> tuple[str, ...]:
        return tuple(self.data.get("profiles", ()))

    @property
    def memory_mb(self) -> int:
        return int(self.data["memory_mb"])

    @property
    def depends(self) -> tuple[str, ...]:
        return tuple(self.data.get("depends", ()))

    @property
    def image(self) -> str:
        """The image reference deployed: pinned upstream, or the tag of the local build."""
        build = self.data.get("build")
        return str(build["tag"]) if build else str(self.data["image"])

    @property
    def built_locally(self) -> bool:
        return "build" in self.data

    @property
    def download_mb(self) -> int | None:
        value = self.data.get("download_mb")
        return int(value) if value is not None else None

    @property
    def subdomain(self) -> str | None:
        route = self.data.get("route")
        return str(route["subdomain"]) if route else None

    @property
    def secrets(self) -> dict[str, dict[str, Any]]:
        return dict(self.data.get("secrets", {}))

    @property
    def options_schema(self) -> dict[str, Any]:
        return {**COMMON_OPTIONS, **self.data.get("options", {})}

    def text(self, key: str, locale: str) -> str:
        return str(self.data[key][locale])


@dataclass(frozen=True, eq=False)  # compared by identity: cached views per profile
class Catalog:
    services: dict[str, Service]
    root: Path

    def __contains__(self, name: object) -> bool:
        return name in self.services

    def __getitem__(self, name: str) -> Service:
        return self.services[name]

    def apps(self) -> list[Service]:
        return [s for s in self.services.values() if s.kind == "app"]

    def infra(self) -> list[Service]:
        return [s for s in self.services.values() if s.kind == "infra"]

    def in_profile(self, profile: str) -> list[Service]:
        return [s for s in self.apps() if profile in s.profiles]

    def as_data(self) -> dict[str, dict[str, Any]]:
        return {name: s.data for name, s in self.services.items()}

    def for_profile(self, profile: str) -> Catalog:
        """The catalogue as a site of that profile deploys it: each entry's variant for the
        profile applied (see `with_variant`). Made once per profile."""
        return _for_profile(self, profile)


def with_variant(data: dict[str, Any], profile: str) -> dict[str, Any]:
    """An entry with its `variants[profile]` keys in place of its own; a variant's build
    drops the entry's image (and download size), a variant's image drops the build."""
    variant = data.get("variants", {}).get(profile)
    merged = {k: v for k, v in data.items() if k != "variants"}
    if not variant:
        return merged
    if "build" in variant:
        merged.pop("image", None)
        merged.pop("download_mb", None)
    if "image" in variant:
        merged.pop("build", None)
    merged.update(variant)
    return merged


@cache
def _for_profile(catalog: Catalog, profile: str) -> Catalog:
    services = {
        name: Service(name=name, kind=s.kind, data=with_variant(s.data, profile))
        for name, s in catalog.services.items()
    }
    return Catalog(services=services, root=catalog.root)


@cache
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return loaded


def _schema_problems(data: Any, shown: str, raw: Any) -> list[Problem]:
    from jsonschema import Draft202012Validator

    problems = []
    validator = Draft202012Validator(schema())
    for err in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.path))):
        key = ".".join(str(p) for p in err.absolute_path)
        problems.append(
            Problem(
                shown,
                key,
                err.message,
                "see services/schema.json for the allowed form",
                yamlio.line_of(raw, tuple(err.absolute_path)),
            )
        )
    return problems


def check_entry(name: str, data: Any, shown: str, raw: Any = None) -> list[Problem]:
    """Schema plus the rules a schema cannot say; empty when the entry is sound."""
    problems = _schema_problems(data, shown, raw)
    if problems:
        return problems
    for profile in data.get("variants", {}):
        for problem in _schema_problems(with_variant(data, profile), shown, raw):
            problems.append(
                Problem(
                    shown,
                    f"variants.{profile}",
                    f"with this variant: {problem.message}",
                    problem.fix,
                    problem.line,
                )
            )
    if problems:
        return problems
    if data["name"] != name:
        problems.append(
            Problem(
                shown,
                "name",
                f"says {data['name']!r} but the folder is {name!r}",
                "make name: match the folder name",
            )
        )
    for path in data.get("backup", {}).get("sqlite", []):
        if path.split("/")[0] not in data.get("backup", {}).get("volumes", []) or ".." in path:
            problems.append(
                Problem(
                    shown,
                    "backup.sqlite",
                    f"{path!r} is not in a backed-up volume",
                    "write <volume>/<path> with the volume listed in backup.volumes",
                )
            )
    for vol in data.get("backup", {}).get("volumes", []):
        if vol not in data.get("volumes", {}):
            problems.append(
                Problem(
                    shown,
                    "backup.volumes",
                    f"{vol!r} is not a declared volume",
                    "list only names declared under volumes:",
                )
            )
    if data.get("backup", {}).get("database") and not set(data.get("depends", [])) & {
        "postgres",
        "mariadb",
    }:
        problems.append(
            Problem(
                shown,
                "backup.database",
                "no database dependency to dump",
                "add postgres or mariadb to depends:, or drop database: true",
            )
        )
    if "db_password" in data.get("secrets", {}) and not set(data.get("depends", [])) & {
        "postgres",
        "mariadb",
    }:
        problems.append(
            Problem(
                shown,
                "secrets.db_password",
                "no database dependency",
                "add postgres or mariadb to depends:",
            )
        )
    rules = data.get("upgrade") or {}
    tag = str((data.get("build") or {}).get("tag") or data.get("image", "")).rsplit(":", 1)[-1]
    if (rules.get("major_steps") or rules.get("migrate_major")) and not tag[:1].isdigit():
        problems.append(
            Problem(
                shown,
                "upgrade",
                f"major version rules, but the tag {tag!r} does not start with its major",
                "pin a tag that starts with the version number, or drop the major rules",
            )
        )
    for vol in data.get("volume_owners", {}):
        if vol not in data.get("volumes", {}):
            problems.append(
                Problem(
                    shown,
                    f"volume_owners.{vol}",
                    "not a declared volume",
                    "list only names declared under volumes:",
                )
            )
    for src in data.get("files", {}):
        if ".." in src.split("/") or not (SERVICES_DIR / name / src).is_file():
            problems.append(
                Problem(
                    shown,
                    f"files.{src}",
                    "no such file in the catalogue folder",
                    f"add services/{name}/{src}",
                )
            )
    for i, timer in enumerate(data.get("timers", [])):
        try:
            compose.timer_calendar(timer["every"])
        except ValueError as err:
            problems.append(
                Problem(shown, f"timers.{i}.every", str(err), "use e.g. 5m, 15m, 1h or 6h")
            )
    for secret, spec in data.get("secrets", {}).items():
        source = str(spec.get("same_as", ""))
        owner = source.partition(".")[0]
        if (
            source
            and source not in compose.PROVIDED_SECRETS
            and owner not in [*data.get("depends", []), *compose.partners(data)]
        ):
            problems.append(
                Problem(
                    shown,
                    f"secrets.{secret}.same_as",
                    f"{source!r} is neither a dependency's or partner app's secret nor one "
                    "the site gives",
                    "share a secret of a service listed in depends: or colocated_with: (or of "
                    "the directory, with members:), or " + ", ".join(compose.PROVIDED_SECRETS),
                )
            )
    backup = data.get("backup", {})
    for vol in backup.get("rebuilt", []):
        if vol not in data.get("volumes", {}) or vol in backup.get("volumes", []):
            problems.append(
                Problem(
                    shown,
                    "backup.rebuilt",
                    f"{vol!r} is not a declared volume left out of backup.volumes",
                    "list volumes the service rebuilds from what backup.volumes restores",
                )
            )
    for path in (data.get("members") or {}).get("data", []):
        if path.split("/")[0] not in data.get("volumes", {}) or ".." in path.split("/"):
            problems.append(
                Problem(
                    shown,
                    "members.data",
                    f"{path!r} is not in a declared volume",
                    "write <volume>/<path with {uid}> with a volume declared under volumes:",
                )
            )
    builds = [(p, with_variant(data, p).get("build")) for p in data.get("variants", {})]
    for profile, build in [("", data.get("build")), *builds]:
        if build and not (SERVICES_DIR / name / build["context"] / "Dockerfile").is_file():
            problems.append(
                Problem(
                    shown,
                    f"variants.{profile}.build.context" if profile else "build.context",
                    "no Dockerfile in the build folder",
                    f"add services/{name}/{build['context']}/Dockerfile",
                )
            )
    return problems


@cache
def load_catalog(root: Path = SERVICES_DIR) -> Catalog:
    """Every entry under `root`, validated; raises InvalidInput listing all problems.

    Read once per process: a fleet command loads many sites against one catalogue."""
    services: dict[str, Service] = {}
    problems: list[Problem] = []
    for entry_file in sorted(root.glob("*/service.yml")):
        name = entry_file.parent.name
        shown = f"services/{name}/service.yml"
        try:
            raw = yamlio.load(entry_file, shown)
        except yamlio.YamlProblem as err:
            problems.append(err.problem)
            continue
        data = yamlio.plain(raw)
        found = check_entry(name, data, shown, raw)
        if found:
            problems += found
            continue
        services[name] = Service(name=name, kind=data["kind"], data=data)
    for service in services.values():
        shown = f"services/{service.name}/service.yml"
        for secret, spec in service.secrets.items():
            owner, _, other = str(spec.get("same_as", "")).partition(".")
            if owner in services and other not in services[owner].secrets:
                problems.append(
                    Problem(
                        shown,
                        f"secrets.{secret}.same_as",
                        f"{owner} has no secret {other!r}",
                        f"name one of services/{owner}/service.yml's secrets",
                    )
                )
        for other in compose.partners(service.data):
            if other not in services or services[other].kind != "app":
                problems.append(
                    Problem(
                        shown,
                        "colocated_with",
                        f"{other!r} is not an app of the catalogue",
                        "name an app",
                    )
                )
        for dep in service.depends:
            if dep not in services or services[dep].kind != "dependency":
                problems.append(
                    Problem(
                        f"services/{service.name}/service.yml",
                        "depends",
                        f"{dep!r} is not a dependency entry of the catalogue",
                        f"add services/{dep}/service.yml with kind: dependency",
                    )
                )
    if problems:
        raise InvalidInput("the service catalogue is invalid", problems=problems)
    if not services:
        raise InvalidInput(
            f"no catalogue entries under {root}",
            fix="run from a full checkout of telecentre-ctl (services/ folder)",
        )
    return Catalog(services=services, root=root)
