"""Read YAML written by people: line numbers, duplicate keys, empty and binary files.

Every failure becomes a Problem naming the file (and line), never a traceback.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from telecentre_ctl.errors import Problem

MAX_BYTES = 1024 * 1024  # a site or catalogue file is a few KiB; anything near 1 MiB is a mistake


class YamlProblem(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


def _text(path: Path, shown: str) -> str:
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise YamlProblem(
            Problem(
                shown,
                "",
                f"file is {size // 1024} KiB, far larger than a site file can be",
                "point at the right file; site and catalogue files are small YAML files",
            )
        )
    raw = path.read_bytes()
    if b"\x00" in raw:
        raise YamlProblem(
            Problem(shown, "", "file is binary, not YAML text", "replace it with a YAML text file")
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise YamlProblem(
            Problem(shown, "", f"not UTF-8 text (byte {err.start})", "save the file as UTF-8")
        ) from err
    if not text.strip() or all(
        not line.strip() or line.lstrip().startswith("#") for line in text.splitlines()
    ):
        raise YamlProblem(
            Problem(shown, "", "file is empty", "fill it in, or run telecentre-ctl init")
        )
    return text


def load(path: Path, shown: str | None = None) -> Any:
    """Parse one YAML file. Mappings keep their line numbers (see line_of)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    shown = shown or str(path)
    text = _text(path, shown)
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        return yaml.load(text)
    except MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark is not None else None
        what = (err.problem or "syntax error").strip()
        duplicate = re.search(r'duplicate key "([^"]*)"', what)
        if duplicate:
            # The parser's text quotes both values; a value may be a secret, so keep the key only.
            what = f'duplicate key "{duplicate.group(1)}"'
            fix = "keep one of the two entries"
        else:
            fix = "correct the YAML syntax at that line (indentation, quotes, colons)"
        raise YamlProblem(Problem(shown, "", what, fix, line)) from err
    except YAMLError as err:
        raise YamlProblem(Problem(shown, "", f"not valid YAML: {err}", "correct the YAML")) from err


def line_of(data: Any, path: tuple[str | int, ...]) -> int | None:
    """1-based line of the key at `path` in data loaded by `load`, if known."""
    node = data
    line: int | None = None
    for part in path:
        lc = getattr(node, "lc", None)
        try:
            if lc is not None:
                line = lc.item(part)[0] + 1 if isinstance(part, int) else lc.key(part)[0] + 1
            node = node[part]
        except (KeyError, IndexError, TypeError):
            break
    return line


def plain(data: Any) -> Any:
    """ruamel's commented containers turned into dicts, lists and plain scalars."""
    if isinstance(data, dict):
        return {str(k): plain(v) for k, v in data.items()}
    if isinstance(data, list):
        return [plain(v) for v in data]
    if isinstance(data, bool) or data is None:
        return data
    if isinstance(data, int):
        return int(data)
    if isinstance(data, float):
        return float(data)
    if isinstance(data, str):
        return str(data)
    return str(data)
