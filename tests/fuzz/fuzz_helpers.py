"""Shared pieces of the fuzz tests: the in-process CLI, bundle copies, re-signing, JSON-tree mutations.

Re-signing matters: a mutated manifest or reference whose digests no longer match is refused by the
checksum check alone; re-signed, only the schema and the reference check stand between it and a consumer.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tokcomp_edge.core.bundle import MANIFEST, dump_manifest, file_entry

EXIT_CODES = {0, 1, 2, 3}


def run_main(capsys, *argv) -> tuple[int, str, str]:
    """Run the tokcomp CLI in-process: (exit code, stdout, stderr). An exception other than SystemExit
    escaping `main` is a traceback a user would see: it propagates and fails the test with its case."""
    from tokcomp_edge.cli.app import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as ex:
        main([str(a) for a in argv])
        raise SystemExit(0)
    cap = capsys.readouterr()
    code = ex.value.code
    return (0 if code is None else code), cap.out, cap.err


def check_outcome(code: int, out: str, err: str, what: str) -> None:
    """Exit 0/1/2/3; no traceback; a refusal (2, 3) is exactly one `error:` line on stderr."""
    assert code in EXIT_CODES, f"{what}: exit {code!r}\n{err}"
    assert "Traceback" not in out + err, f"{what}: traceback\n{err}"
    if code in (2, 3):
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), f"{what}: exit {code}, stderr not one line:\n{err}"


def copy_bundle(src: Path, dst: Path) -> Path:
    """A private copy of a session bundle: files hard-linked (cheap), manifest copied (it is rewritten).
    Every writer in tokcomp replaces files by rename (atomic.py), so a link is never written through."""
    def link(s, d):
        if Path(s).name == MANIFEST:
            return shutil.copy2(s, d)
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)
        return d

    shutil.copytree(src, dst, copy_function=link)
    return dst


def write_manifest(bundle: Path, manifest: Any) -> None:
    """Write `manifest` re-signed (content_sha256 recomputed), so only its semantics are wrong."""
    if isinstance(manifest, dict):
        text = dump_manifest(manifest)
    else:  # not an object: nothing to sign
        text = json.dumps(manifest)
    (bundle / MANIFEST).unlink()
    (bundle / MANIFEST).write_text(text)


def resign_file(bundle: Path, name: str) -> None:
    """Record the current sha256/size of bundle file `name` in the manifest, re-signed."""
    m = json.loads((bundle / MANIFEST).read_text())
    m["files"][name] = file_entry(bundle / name)
    write_manifest(bundle, m)


def snapshot(folder: Path) -> dict[str, str] | None:
    """{relative path: sha256} of everything under `folder` (None when it does not exist)."""
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --- JSON-tree mutations -------------------------------------------------------------------------

def json_paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path into a JSON tree (dict keys and list indices), the root excluded."""
    paths = []
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return paths
    for k, v in items:
        paths.append(prefix + (k,))
        paths.extend(json_paths(v, prefix + (k,)))
    return paths


def get_at(node: Any, path: tuple) -> Any:
    for k in path:
        node = node[k]
    return node


def replacements(value: Any) -> list[Any]:
    """Values of another type, and out-of-range values of the same type, for a leaf or a branch."""
    swapped = [None, True, False, 0, -1, 1, 2 ** 63, -(2 ** 31), 0.5, -1e300, math.nan, math.inf, "", "x",
               "../../x", [], [1], {}, {"a": 1}]
    if isinstance(value, bool):
        return [not value, *swapped]
    if isinstance(value, int):
        return [value + 1, value - 1, -value, value * 1000, 0, *swapped]
    if isinstance(value, float):
        return [-value, value * 1e6, 0.0, *swapped]
    if isinstance(value, str):
        return [value + "x", value.upper(), value[:-1], *swapped]
    if isinstance(value, list):
        return [value[:-1], value + value[-1:], list(reversed(value)), *swapped]
    return swapped


def mutate(doc: Any, path: tuple, op: str, new: Any = None) -> Any:
    """A deep copy of `doc` with the node at `path` dropped (`drop`) or replaced by `new` (`set`)."""
    doc = copy.deepcopy(doc)
    parent = get_at(doc, path[:-1])
    key = path[-1]
    if op == "drop":
        del parent[key]
    else:
        parent[key] = new
    return doc
