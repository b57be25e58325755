"""Mutated manifests, re-signed: every command exits 0/1/2/3 with one line, never a traceback, and leaves
the bundle (and any output folder) as it was when it refuses.

A mutation drops a key, or puts a value of another type or out of range at one place of the manifest
(the section first, then a place inside it, so small sections are hit as often as the large ones); the
content digest is then recomputed, so only the schema (core/manifest_schema.py) can catch it.
"""

from __future__ import annotations

import json
import tempfile
from functools import lru_cache
from pathlib import Path

from hypothesis import given, note
from hypothesis import strategies as st

from fuzz_helpers import (
    check_outcome,
    copy_bundle,
    json_paths,
    get_at,
    mutate,
    replacements,
    run_main,
    snapshot,
    write_manifest,
)
from tokcomp_edge.core.bundle import CONTENT_KEY, MANIFEST

COMMANDS = {
    "inspect": lambda b, tmp: ["inspect", b],
    "inspect-json": lambda b, tmp: ["inspect", b, "--json"],
    "lint": lambda b, tmp: ["lint", b],
    "build-dry-run": lambda b, tmp: ["build", b, "--dry-run", "--engines-dir", tmp / "engines"],
    "build-dry-run-nhwc": lambda b, tmp: ["build", b, "--dry-run", "--profile", "fp16-nhwc",
                                          "--engines-dir", tmp / "engines"],
    "validate": lambda b, tmp: ["validate", b, "--torch", "off", "--iterations", "0", "--extra-inputs", "0",
                                "--quiet", "--out", tmp / "reports"],
}


@lru_cache(maxsize=None)
def _sections(manifest_path: str) -> dict[str, list[tuple]]:
    base = json.loads(Path(manifest_path).read_text())
    out: dict[str, list[tuple]] = {}
    for p in json_paths(base):
        if p[0] != CONTENT_KEY:
            out.setdefault(p[0], []).append(p)
    return out


@st.composite
def mutated_manifests(draw, bundles):
    kind = draw(st.sampled_from(sorted(bundles)))
    mpath = bundles[kind] / MANIFEST
    base = json.loads(mpath.read_text())
    sections = _sections(str(mpath))
    section = draw(st.sampled_from(sorted(sections)))
    path = draw(st.sampled_from(sections[section]))
    op = draw(st.sampled_from(["drop", "set"]))
    new = draw(st.sampled_from(replacements(get_at(base, path)))) if op == "set" else None
    return kind, path, op, new, mutate(base, path, op, new)


@given(data=st.data())
def test_mutated_manifest(fuzz_bundles, fuzz_cases, capsys, data):
    kind, path, op, new, manifest = data.draw(mutated_manifests(fuzz_bundles))
    command = data.draw(st.sampled_from(sorted(COMMANDS)))
    fuzz_cases.count()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bundle = copy_bundle(fuzz_bundles[kind], tmp / "bundle")
        write_manifest(bundle, manifest)
        before = snapshot(bundle)
        what = f"{command} on {kind} with {'.'.join(map(str, path))} {op} {new!r}"
        note(what)
        code, out, err = run_main(capsys, *COMMANDS[command](bundle, tmp))
        check_outcome(code, out, err, what)
        assert snapshot(bundle) == before, f"{what}: the bundle changed"
        assert not (tmp / "engines").exists(), f"{what}: a dry run wrote engines/"
        if code == 2:
            assert not (tmp / "reports").exists(), f"{what}: refused, yet wrote a report"
