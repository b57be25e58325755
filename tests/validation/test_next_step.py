"""Each failure's hint names what fixes its cause (issue 16 §4): a figure over its bound may suggest loosening
a tolerance; a CPU fallback, a broken target or a never-compared output may not."""

import numpy as np
import onnx
from onnx import numpy_helper

from tokcomp_edge.core.bundle import Bundle, file_entry
from tokcomp_edge.validation import ValidateConfig, validate
from tokcomp_edge.validation.next_step import HINTS

from .conftest import FAST
from .test_validate import _perturb_reference


def fast(target, **kw):
    return ValidateConfig(target=target, **{**dict(iterations=2, warmup=0, extra_inputs=2, quiet=True), **kw})


def test_tolerance_failure_suggests_a_tolerance(bundle_copy, cli):
    b = bundle_copy("pool")
    _perturb_reference(b, "tokens.b1", 1.05)
    code, _, exc = cli("validate", b, *FAST, "--torch", "off")
    assert code == 1 and "--max-rel-l2" in exc.hint and "debug" not in exc.hint


def test_device_fallback_hint_is_the_device_not_a_tolerance(bundles, tmp_path):
    res = validate(fast(bundles("pool"), device="cuda", torch="off", out_dir=tmp_path))
    if res.report["target"]["runtime"]["ran_on"] == "CUDAExecutionProvider":
        return  # a machine with a working CUDA EP: nothing falls back
    assert not res.passed and res.hint == HINTS["fallback"]
    assert "tolerance" not in res.hint and "--allow-fallback" in res.hint


def test_nan_in_the_target_points_to_debug(bundle_copy, tmp_path):
    """A target whose output is NaN fails its target-alone check; the hint is `tokcomp debug`, not a tolerance."""
    b = bundle_copy("pool")
    model = onnx.load(b / "model.onnx")
    for init in model.graph.initializer:  # one NaN in each weight tensor: every token turns NaN
        arr = numpy_helper.to_array(init)
        if arr.dtype == np.float32 and arr.size > 1:
            arr = arr.copy()
            arr.flat[0] = np.nan
            init.CopyFrom(numpy_helper.from_array(arr, init.name))
    onnx.save(model, b / "model.onnx")
    bundle = Bundle.load(b, verify=False)
    bundle.manifest["files"]["model.onnx"] = file_entry(b / "model.onnx")  # re-signed: only the values are wrong
    bundle.save_manifest()
    res = validate(fast(b, torch="off", out_dir=tmp_path))
    assert not res.passed and any("target alone" in f for f in res.failures), res.failures
    assert res.hint.startswith("the target's own outputs are broken") and f"tokcomp debug {b}" in res.hint
