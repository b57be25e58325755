"""VisionZip: spec and arithmetic, the function against an independent implementation, ties in PyTorch and
ONNX Runtime, and the exported graph's ops."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tokcomp_edge.compression.plan import plan_compression
from tokcomp_edge.compression.spec import parse_spec
from tokcomp_edge.compression.visionzip import target_positions, visionzip_tokens
from tokcomp_edge.errors import SpecError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from visionzip_reference import visionzip_reference  # noqa: E402

# TensorRT's parser has no native kernel (or only a non-deterministic plugin) for these.
FORBIDDEN = {"NonZero", "ScatterND", "Compress"}


def plan(text, grid=(14, 14), prefix_tokens=1, has_cls=True, prefix="drop"):
    return plan_compression(parse_spec(text), grid=grid, prefix_tokens=prefix_tokens, has_cls=has_cls,
                            hidden_size=64, prefix=prefix)


# --- spec ------------------------------------------------------------------------------------------


def test_parse_and_arithmetic():
    s = parse_spec("visionzip:53:10")
    assert (s.method, s.params, s.text, s.slug) == ("visionzip", {"dominant": 53, "contextual": 10},
                                                    "visionzip:53:10", "visionzip53-10")
    p = plan("visionzip:53:10", grid=(24, 24), prefix="keep")  # LLaVA-1.5: CLS + 53 + 10 = 64
    assert (p.tokens_in, p.tokens_out, p.patch_tokens_out, p.indexed_out, p.merged_out) == (577, 64, 63, 53, 10)
    assert p.grid_out is None and "523 remaining tokens, step 52" in p.formula
    d = p.to_dict()
    assert (d["indexed_out"], d["merged_out"]) == (53, 10)
    no_cls = plan("visionzip:40:10", prefix_tokens=0, has_cls=False)  # SigLIP: attention received
    assert no_cls.tokens_out == 50 and no_cls.prefix_out == 0
    assert plan("prune:8").indexed_out == 8 and plan("prune:8").merged_out == 0 and plan("pool:2").indexed_out == 0


@pytest.mark.parametrize("text,kw,needle", [
    ("visionzip:10", {}, "two parameters D:C"),
    ("visionzip:10:2:3", {}, "two parameters D:C"),
    ("visionzip:0:4", {}, "≥ 1"),
    ("visionzip:8:x", {}, "integer"),
    ("visionzip:190:6", {}, "D=190 + C=6 = 196 keeps every one of the 196 (14x14)"),
    ("visionzip:8:2", {"grid": (64, 64)}, "4096 is not below TensorRT's TopK limit of 3840"),
])
def test_errors_name_the_numbers(text, kw, needle):
    with pytest.raises(SpecError, match=needle.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")) as e:
        plan(text, **kw)
    assert e.value.exit_code == 2


def test_methods_table_lists_visionzip():
    from tokcomp_edge.compression.spec import METHODS

    assert METHODS["visionzip"]["tokens"] == "D + C" and "indices" in METHODS["visionzip"]["what"]


# --- the function against the independent implementation ------------------------------------------


def random_case(b, n, ch, d, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, n, ch, generator=g), torch.rand(b, n, generator=g), torch.randn(b, n, d, generator=g))


@pytest.mark.parametrize("n,dom,ctx", [
    (196, 53, 10),  # even N, step 14 (143 // 10)
    (195, 40, 7),  # odd N, step 22 leaves a tail that is never a target
    (49, 20, 14),  # step 2 (29 // 14)
    (25, 3, 21),  # step 1: all but one remaining token is a target (most targets stay alone)
    (16, 1, 1),  # one target takes everything
])
def test_equals_independent_implementation(n, dom, ctx):
    x, imp, keys = random_case(3, n, 24, 8, seed=n)
    got, idx, mmap = visionzip_tokens(x, imp, keys, dom, ctx, offset=2)
    want, want_idx, want_map = visionzip_reference(x.numpy(), imp.numpy(), keys.numpy(), dom, ctx, offset=2)
    assert got.shape == (3, dom + ctx, 24) and idx.dtype == torch.int64 and mmap.shape == (3, n)
    np.testing.assert_array_equal(idx.numpy(), want_idx)
    np.testing.assert_array_equal(mmap.numpy(), want_map)
    assert mmap.min() >= 2 and mmap.max() == 2 + dom + ctx - 1
    # every contextual row holds at least its own target
    for b in range(3):
        for c in range(ctx):
            members = np.flatnonzero(mmap[b].numpy() == 2 + dom + c)
            assert members.size >= 1
    assert np.all(np.diff(idx.numpy(), axis=1) > 0), "dominant tokens in grid order"
    np.testing.assert_allclose(got.numpy(), want, atol=1e-5, rtol=1e-5)


def test_target_positions_follow_visionzip():
    # 523 remaining, C = 10: step 52, targets 0, 52, …, 468; the tokens after 468 are merged, not targets.
    targets, merged = target_positions(523, 10)
    assert targets == list(range(0, 520, 52)) and len(merged) == 513 and merged[-1] == 522
    assert target_positions(5, 5) == ([0, 1, 2, 3, 4], [])


def tied_case():
    """Exact ties in both decisions: importance 1.0 on six cells, keys equal on two targets."""
    n, ch = 16, 4
    x = torch.arange(n * ch, dtype=torch.float32).reshape(1, n, ch)
    imp = torch.zeros(1, n)
    imp[0, [3, 5, 7, 9, 11, 13]] = 1.0  # D = 4 of six equal scores: the lower indices 3, 5, 7, 9 win
    keys = torch.zeros(1, n, 2)
    keys[0, :, 0] = 1.0  # every key points the same way: every similarity ties
    return x, imp, keys


def test_tie_rule_lower_index_and_first_target():
    x, imp, keys = tied_case()
    got, idx, mmap = visionzip_tokens(x, imp, keys, 4, 3)
    assert idx.tolist() == [[3, 5, 7, 9]]
    want, want_idx, want_map = visionzip_reference(x.numpy(), imp.numpy(), keys.numpy(), 4, 3)
    np.testing.assert_array_equal(idx.numpy(), want_idx)
    np.testing.assert_array_equal(mmap.numpy(), want_map)
    np.testing.assert_allclose(got.numpy(), want)
    # remaining 12 tokens, step 4: targets at positions 0, 4, 8; all nine others tie and join target 0.
    rest = [i for i in range(16) if i not in (3, 5, 7, 9)]
    members = [rest[p] for p in range(12) if p not in (0, 4, 8)]
    np.testing.assert_allclose(got[0, 4].numpy(), (x[0, rest[0]] + x[0, members].mean(0)).numpy())
    np.testing.assert_allclose(got[0, 5].numpy(), x[0, rest[4]].numpy())
    assert mmap[0].tolist().count(4) == 10 and mmap[0].tolist().count(5) == 1


class _Zip(torch.nn.Module):
    def __init__(self, d, c):
        super().__init__()
        self.d, self.c = d, c

    def forward(self, x, imp, keys):
        return visionzip_tokens(x, imp, keys, self.d, self.c, offset=1)


def _export(module, args, tmp_path):
    import onnx

    path = tmp_path / "zip.onnx"
    torch.onnx.export(module, args, str(path), dynamo=True, input_names=["x", "imp", "keys"],
                      output_names=["tokens", "indices", "merge_map"], opset_version=20, optimize=True, verify=False,
                      report=False)
    return path, onnx.load(str(path))


def test_onnx_runtime_agrees_on_ties_and_uses_allowed_ops(tmp_path):
    from tokcomp_edge.core.ort_session import ort_session

    x, imp, keys = tied_case()
    path, model = _export(_Zip(4, 3).eval(), (x, imp, keys), tmp_path)
    ops = {n.op_type for n in model.graph.node}
    assert not ops & FORBIDDEN, ops
    assert "TopK" in ops and "ArgMax" in ops
    for n in model.graph.node:  # the merge map's scatter writes each cell once: no reduction
        if n.op_type == "ScatterElements":
            assert all(a.s in (b"", b"none") for a in n.attribute if a.name == "reduction")
    names = ["tokens", "indices", "merge_map"]
    sess = ort_session(path)
    got = sess.run(names, {"x": x.numpy(), "imp": imp.numpy(), "keys": keys.numpy()})
    want = visionzip_tokens(x, imp, keys, 4, 3, offset=1)
    np.testing.assert_array_equal(got[1], want[1].numpy())
    np.testing.assert_array_equal(got[2], want[2].numpy())
    np.testing.assert_allclose(got[0], want[0].numpy(), atol=1e-6)
    # and on random data (the graph is static in N, D, C only)
    x2, imp2, keys2 = random_case(1, 16, 4, 2, seed=3)
    got = sess.run(names, {"x": x2.numpy(), "imp": imp2.numpy(), "keys": keys2.numpy()})
    want = visionzip_reference(x2.numpy(), imp2.numpy(), keys2.numpy(), 4, 3, offset=1)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[2], want[2])
    np.testing.assert_allclose(got[0], want[0], atol=1e-5)

