"""Corrupted golden references, re-signed: `validate` never says PASSED, exits 1 (a check failed) or 2 (the
reference does not hold what the manifest declares), with one line, and a refusal writes no report.

The reference's sha256 is recomputed into the manifest (and the manifest re-signed), so the checksum
check cannot catch the corruption: the reference check (core/reference_check.py) or the comparison must.
"""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from fuzz_helpers import check_outcome, copy_bundle, resign_file, run_main, snapshot
from tokcomp_edge.core.bundle import MANIFEST, REFERENCE, Bundle, save_reference
from tokcomp_edge.errors import BundleError

VALIDATE = ["--torch", "off", "--iterations", "0", "--extra-inputs", "0", "--quiet"]

# Corruptions of one array; each makes the reference disagree with the manifest or with the graph.
ARRAY_OPS = ["drop", "nan", "inf", "-inf", "shift", "one-cell", "off-grid", "duplicate", "batch-short",
             "batch-empty", "last-axis-short", "extra-axis", "float64", "float16", "int32", "to-float32", "scalar"]
FILE_OPS = ["garbage", "empty-zip", "truncated", "pickled-object", "no-arrays"]


def corrupt_array(ref: dict, key: str, op: str, cell: int) -> bool:
    """Apply `op` to ref[key] in place; False when it does not apply to this array (then nothing changed)."""
    a = ref[key]
    floating = a.dtype.kind == "f"
    flat_i = cell % a.size
    if op == "drop":
        del ref[key]
    elif op in ("nan", "inf", "-inf"):
        if not floating:
            return False
        a = a.copy()
        a.flat[flat_i] = float(op)
        ref[key] = a
    elif op == "shift":  # the whole array moved: the golden inputs or outputs are another image's
        if not floating:
            return False
        ref[key] = a + np.float32(5)
    elif op == "one-cell":  # one value far off
        if not floating:
            return False  # an index moved to another valid cell is a kept-set swap, judged by the tolerance
        a = a.copy()
        a.flat[flat_i] = a.flat[flat_i] + 1e3
        ref[key] = a
    elif op == "off-grid":  # an index or merge-map row that does not exist
        if floating:
            return False
        a = a.copy()
        a.flat[flat_i] = 10 ** 6
        ref[key] = a
    elif op == "duplicate":  # an index kept twice
        if floating or not key.startswith("indices") or a.shape[-1] < 2:
            return False
        a = a.copy()
        row = np.unravel_index(flat_i, a.shape)[0]
        a[row, 1] = a[row, 0]
        ref[key] = a
    elif op == "batch-short":
        if a.shape[0] < 2:
            return False
        ref[key] = a[:-1]
    elif op == "batch-empty":
        ref[key] = a[:0]
    elif op == "last-axis-short":
        ref[key] = a[..., :-1]
    elif op == "extra-axis":
        ref[key] = a[None]
    elif op in ("float64", "float16", "int32"):
        if a.dtype == np.dtype(op):
            return False
        ref[key] = a.astype(op)
    elif op == "to-float32":
        if floating:
            return False
        ref[key] = a.astype(np.float32)
    elif op == "scalar":
        ref[key] = np.float32(1.0)
    return True


def corrupt_file(path: Path, op: str, original: bytes) -> None:
    path.unlink()
    if op == "garbage":
        path.write_bytes(b"\x00not an npz" * 64)
    elif op == "empty-zip":
        buf = io.BytesIO()
        zipfile.ZipFile(buf, "w").close()
        path.write_bytes(buf.getvalue())
    elif op == "truncated":
        path.write_bytes(original[: len(original) // 2])
    elif op == "pickled-object":
        buf = io.BytesIO()
        np.savez(buf, **{"tokens.b1": np.array([{"a": 1}], dtype=object)})
        path.write_bytes(buf.getvalue())
    elif op == "no-arrays":
        save_reference(path, {})


@st.composite
def corruptions(draw, bundles):
    kind = draw(st.sampled_from(sorted(bundles)))
    if draw(st.integers(0, 5)) == 0:
        return kind, None, draw(st.sampled_from(FILE_OPS)), 0
    with np.load(bundles[kind] / REFERENCE) as npz:
        keys = sorted(npz.files)
    return kind, draw(st.sampled_from(keys)), draw(st.sampled_from(ARRAY_OPS)), draw(st.integers(0, 10 ** 6))


@given(data=st.data())
def test_corrupted_reference_never_passes(fuzz_bundles, fuzz_cases, capsys, data):
    kind, key, op, cell = data.draw(corruptions(fuzz_bundles))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bundle = copy_bundle(fuzz_bundles[kind], tmp / "bundle")
        path = bundle / REFERENCE
        original = path.read_bytes()
        if key is None:
            corrupt_file(path, op, original)
        else:
            with np.load(path) as npz:
                ref = {k: npz[k] for k in npz.files}
            if not corrupt_array(ref, key, op, cell):
                return
            path.unlink()
            save_reference(path, ref)
        resign_file(bundle, REFERENCE)
        fuzz_cases.count()
        what = f"validate {kind} with reference {key} {op} (cell {cell})"
        note(what)
        before = snapshot(bundle)
        code, out, err = run_main(capsys, "validate", bundle, *VALIDATE, "--out", tmp / "reports")
        check_outcome(code, out, err, what)
        assert code in (1, 2), f"{what}: exit {code}\n{out}"
        assert "PASSED" not in out, f"{what}: a corrupted reference passed\n{out}"
        assert snapshot(bundle) == before, f"{what}: the bundle changed"
        if code == 2:
            assert not (tmp / "reports").exists(), f"{what}: refused, yet wrote a report"


@pytest.mark.parametrize("key,op", [("tokens.b2", "drop"), ("tokens.b2", "nan"), ("tokens.b2", "batch-short"),
                                    ("tokens.b2", "float64"), ("tokens.b2", "last-axis-short"),
                                    ("merge_map.b1", "off-grid"), ("sizes.b2", "one-cell")])
def test_reference_check_names_the_key(fuzz_bundles, tmp_path, key, op):
    """The reference check alone (no ONNX Runtime): every structural corruption is one BundleError naming
    the array — what `Bundle.reference()` gives every consumer (validate, debug, variants, calibration)."""
    bundle = copy_bundle(fuzz_bundles["tome"], tmp_path / "bundle")
    with np.load(bundle / REFERENCE) as npz:
        ref = {k: npz[k] for k in npz.files}
    assert corrupt_array(ref, key, op, 7)
    (bundle / REFERENCE).unlink()
    save_reference(bundle / REFERENCE, ref)
    resign_file(bundle, REFERENCE)
    b = Bundle.load(bundle)  # the checksums match: only the content is wrong
    with pytest.raises(BundleError, match=key.replace(".", r"\.")):
        b.reference()


def test_reference_missing_a_declared_batch_is_refused(fuzz_bundles, tmp_path, capsys):
    """The issue's case: a reference that lost one batch the manifest declares no longer validates."""
    bundle = copy_bundle(fuzz_bundles["prune"], tmp_path / "bundle")
    with np.load(bundle / REFERENCE) as npz:
        ref = {k: npz[k] for k in npz.files if not k.endswith(".b2")}
    (bundle / REFERENCE).unlink()
    save_reference(bundle / REFERENCE, ref)
    resign_file(bundle, REFERENCE)
    assert json.loads((bundle / MANIFEST).read_text())["reference"]["batch_sizes"] == [1, 2]
    code, out, err = run_main(capsys, "validate", bundle, *VALIDATE, "--out", tmp_path / "reports")
    assert code == 2 and ".b2" in err and "PASSED" not in out, err
    assert not (tmp_path / "reports").exists()
