"""ToMe export at realistic grids (issue 15, part 2): 24×24 (SigLIP at 384), 27×27 (so400m-like, 432 px
with patch 16) and 28×28 (448), for every tower family that allows ToMe, several seeds.

Regression: without a prefix token (SigLIP) the unmerged tokens came out in match-score rank order;
neighbouring scores 2–3e-7 apart ranked differently in ONNX Runtime and PyTorch, the next block's A/B
alternation then differed and hundreds of patches landed in other rows — `tokcomp export tiny-siglip
--image-size 448 --compress tome:10` failed parity for seeds 0, 1 and 2. At these grids |A| = 288–392
matches per block, so near-ties in the ranking are certain; at the 14×14 of the other tests they were not.

Each case: the export's own parity check passes; independently of it, the bundle's graph on ONNX Runtime
gives exactly PyTorch's merge map and sizes and tokens within the parity tolerance (integers compared
exactly, every bound written so that NaN fails); and PyTorch equals the independent ToMe reference.
SigLIP (the family the bug hit) runs every grid × seed; the families with a prefix token (protected, so
their order never depended on ranks) run one grid and seed each fast, and the other two grids (slow).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tokcomp_edge.core.bundle import Bundle
from tokcomp_edge.core.ort_session import ort_session
from tokcomp_edge.core.tolerance import PARITY
from tokcomp_edge.encoders import EncoderConfig, build_encoder
from tokcomp_edge.export import ExportConfig, export_bundle

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "compression"))
from tome_reference import reference_for  # noqa: E402

GRIDS = {"24x24": 384, "27x27": 432, "28x28": 448}
SEEDS = (0, 1, 2)
PREFIXED = ("tiny-clip", "tiny-dinov2", "tiny-vit", "timm:test_vit", "timm:test_vit2")
SPEC = "tome:10"  # the spec: 10 merges in every block the tower runs

SIGLIP = [pytest.param("tiny-siglip", g, s, id=f"tiny-siglip-{g}-seed{s}") for g in GRIDS for s in SEEDS]
# One (grid, seed) per prefixed family, rotating so that every grid and seed is covered.
FAST_PREFIXED = [pytest.param(m, list(GRIDS)[i % 3], SEEDS[(i + 1) % 3], id=f"{m}-{list(GRIDS)[i % 3]}-seed{SEEDS[(i + 1) % 3]}")
                 for i, m in enumerate(PREFIXED)]
# The other two grids of each prefixed family, one seed each (rotating): every family meets every grid.
# Not the full grid × seed product: that was 40 exports (~7 minutes of make test on 2 cores) for families
# whose output order never depended on the ranks (their prefix is protected).
SLOW_PREFIXED = [pytest.param(m, g, SEEDS[(i + k) % 3], id=f"{m}-{g}-seed{SEEDS[(i + k) % 3]}", marks=pytest.mark.slow)
                 for i, m in enumerate(PREFIXED) for k, g in enumerate(GRIDS) if g != list(GRIDS)[i % 3]]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _exact(name: str, got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape and got.size > 0, (name, got.shape, want.shape)
    diff = int(np.count_nonzero(got != want))
    assert diff == 0, f"{name}: {diff} of {got.size} entries differ"


@pytest.mark.filterwarnings("ignore:# The axis name")
@pytest.mark.parametrize("model,grid,seed", SIGLIP + FAST_PREFIXED + SLOW_PREFIXED)
def test_tome_export_parity_at_realistic_grids(tmp_path, model, grid, seed):
    size = GRIDS[grid]
    res = export_bundle(ExportConfig(model=model, compress=SPEC, image_size=size, seed=seed, prefix="keep",
                                     out=tmp_path / "b", batch_max=4, lint=False, quiet=True))
    assert res.parity.passed
    bundle = Bundle.load(res.path)
    comp = bundle.manifest["compression"]
    sched = tuple(comp["schedule"])
    enc = build_encoder(EncoderConfig(model=model, image_size=size, seed=seed))
    side = size // enc.spec.patch_size
    assert enc.spec.grid == (side, side) and f"{side}x{side}" == grid
    n, p = side * side, enc.spec.prefix_tokens
    assert comp["tokens_out"] == p + n - sum(sched) and all(r == 10 for r in sched)

    sess = ort_session(res.path / "model.onnx")
    names = [o.name for o in sess.get_outputs()]
    assert names == ["tokens", "sizes", "merge_map"]
    ref = bundle.reference()
    compared = 0
    for batch in bundle.reference_batches():
        x = ref[f"pixel_values.b{batch}"]
        got = dict(zip(names, sess.run(names, {"pixel_values": x})))
        # the target alone: finite tokens, a merge map in range, sizes that count its patches exactly
        assert np.isfinite(got["tokens"]).all()
        mm = got["merge_map"]
        assert mm.shape == (batch, n) and mm.min() >= 0 and mm.max() < comp["tokens_out"]
        counts = np.stack([np.bincount(m, minlength=comp["tokens_out"]) for m in mm]).astype(np.float64)
        counts[:, :p] += 1  # each protected row covers itself
        _exact("sizes vs the merge map's counts", got["sizes"].astype(np.float64), counts)
        # against PyTorch: integers exactly, tokens within the parity bound
        _exact("merge_map", mm, ref[f"merge_map.b{batch}"])
        _exact("sizes", got["sizes"], ref[f"sizes.b{batch}"])
        want = ref[f"tokens.b{batch}"]
        bound = PARITY.bound(float(np.abs(want).max()))
        err = float(np.abs(got["tokens"] - want).max())
        assert err <= bound, (batch, err, bound)  # NaN fails
        # PyTorch against the independent ToMe (same output order: tome_reference.py says why)
        r_tok, r_sizes, r_map = (t.numpy() for t in reference_for(enc, torch.from_numpy(x), sched))
        _exact("merge_map vs reference", ref[f"merge_map.b{batch}"], r_map)
        np.testing.assert_array_equal(ref[f"sizes.b{batch}"], r_sizes)
        r_bound = PARITY.bound(float(np.abs(r_tok).max()))
        r_err = float(np.abs(want - r_tok).max())
        assert r_err <= r_bound, (batch, r_err, r_bound)
        compared += mm.size
    assert compared > 0
