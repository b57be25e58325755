"""The fp16 variant of a no-CLS ToMe bundle at a realistic grid (tiny-siglip, 27×27 patches, tome:10):
fp16 sits within its noise (score_atol 5e-3) of 19 decisions of one golden image, more than one flipped
decision can be replayed for, and it takes the other side of one rank-boundary pair in block 1: 79 patches in
other rows, merge-map Jaccard 0.80 < 0.9 against the golden. Judged as it is, the check fails; judged on its
own decisions (PyTorch forced to them, export/variant_check.py TomeForcing), it passes with the note naming
the block, the kind and the gap, and its outputs equal the forced run's within the fp16 tolerance.
"""

from __future__ import annotations

import pytest

from tokcomp_edge.core.bundle import Bundle
from tokcomp_edge.core.comparison import OutputLayout
from tokcomp_edge.core.tolerance import DEFAULTS
from tokcomp_edge.export import ExportConfig, export_bundle
from tokcomp_edge.export.variant_check import TomeForcing, check_fp16

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def siglip27(tmp_path_factory):
    out = tmp_path_factory.mktemp("tome_fp16") / "b"
    return export_bundle(ExportConfig(model="tiny-siglip", compress="tome:10", image_size=432, out=out,
                                      batch_max=4, lint=False, quiet=True, variants=("fp16",))).path


def test_fp16_variant_registered_on_its_own_decisions(siglip27):
    bundle = Bundle.load(siglip27)
    check = bundle.variants()["fp16"]["check"]
    assert check["passed"], check
    notes = check["tome_forced"]
    assert any(n.startswith("fp16 emulation, batch 1: explained: image 0 (")
               and "differ from its own on the same tokens, all near-ties ≤ score_atol 0.005" in n for n in notes), notes
    # Judged as it is (no PyTorch module to force), the same file fails on the merge map.
    fp16 = bundle.path / bundle.variants()["fp16"]["file"]
    args = (fp16, bundle.onnx_path("fp32"), bundle.reference(), bundle.reference_batches(), DEFAULTS["fp16"],
            OutputLayout.from_manifest(bundle.manifest))
    strict = check_fp16(*args)
    assert not strict.passed and any("mean Jaccard of merge maps" in f for f in strict.failures)
    forced = check_fp16(*args, tome=TomeForcing.from_manifest(bundle.manifest))
    assert forced.passed and forced.metrics["outputs"]["merge_map"]["jaccard_min"] == 1.0


def test_validate_with_pytorch_judges_the_variant_alike(siglip27, tmp_path):
    """`validate --variant fp16 --torch require` passes it on the golden inputs by the same rule (one flipped
    decision cannot explain image 0, the forcing does); with the PyTorch reference off it fails as it is."""
    from tokcomp_edge.validation import ValidateConfig, validate

    def run(torch: str):
        return validate(ValidateConfig(target=siglip27, variant="fp16", extra_inputs=0, iterations=0, torch=torch,
                                       out_dir=tmp_path / torch, quiet=True))

    res = run("require")
    golden = [c for c in res.report["accuracy"]["checks"] if c["source"] == "golden"]
    assert golden and all(c["passed"] for c in golden), [c["failures"] for c in golden if not c["passed"]]
    notes = " ".join(res.report["notes"])
    assert "one flipped decision does not explain it" in notes and "explained: image 0" in notes, notes
    off = run("off")
    assert any(not c["passed"] and c["output"] == "merge_map" for c in off.report["accuracy"]["checks"])
