"""Qwen-VL's tile and token arithmetic, checked before anything is built: --image-size H or HxW within the
processor's limits, grid reductions before the merger, refusals of the methods that break its 2×2 groups."""

from __future__ import annotations

import pytest

from tokcomp_edge.compression.spec import parse_spec
from tokcomp_edge.errors import InputError, SpecError
from tokcomp_edge.export.config import parse_image_size
from tokcomp_edge.vlm import plan_vlm, resolve_vlm
from vlm_helpers import run_main


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("text,want", [("448", 448), ("448x336", (448, 336)), ("448X448", 448), (" 64 x 32 ", (64, 32)),
                                       (None, None)])
def test_image_size_forms(text, want):
    assert parse_image_size(text) == want


@pytest.mark.parametrize("text", ["0", "448x", "x336", "a", "448x0", "-28", "1.5"])
def test_bad_image_size_is_input_error(text):
    with pytest.raises(InputError):
        parse_image_size(text)


@pytest.mark.parametrize("model,size,tokens,dim,thw", [
    ("qwen2.5-vl-3b", None, 256, 2048, [1, 32, 32]),           # 448: 32×32 patches → 2×2 merger → 256
    ("qwen2.5-vl-3b", (448, 336), 192, 2048, [1, 32, 24]),
    ("qwen3-vl-2b", None, 256, 2048, [1, 32, 32]),             # patch 16 at 512
    ("qwen2-vl-2b", None, 256, 1536, [1, 32, 32]),
])
def test_token_arithmetic_per_tile(model, size, tokens, dim, thw):
    plan = plan_vlm(resolve_vlm(model, size), parse_spec("none"), None)
    assert (plan.tokens_out, plan.dim_out) == (tokens, dim)
    assert plan.to_dict()["qwen"]["image_grid_thw"] == thw
    assert plan.to_dict()["qwen"]["llm_tokens"] == tokens


def test_pool_acts_on_the_patch_grid_before_the_merger():
    """Issue 17: pool:2 on a 32×32 patch grid → the LLM is given [1, 16, 16] for 8×8 = 64 tokens."""
    plan = plan_vlm(resolve_vlm("qwen3-vl-2b"), parse_spec("pool:2"), None)
    q = plan.to_dict()["qwen"]
    assert q["image_grid_thw"] == [1, 16, 16] and plan.tokens_out == 64 == q["llm_tokens"]
    assert plan.arithmetic == "1024 → pool:2 → 256 → patch merger 2×2 → 64 → layernorm+mlp → 64 × 2048"
    assert plan.extra_outputs == ("deepstack_0", "deepstack_1", "deepstack_2")
    assert q["deepstack_visual_indexes"] == [5, 11, 17]
    p448 = plan_vlm(resolve_vlm("qwen2.5-vl-3b", (448, 336)), parse_spec("pool:2"), None)
    assert p448.tokens_out == 48 and p448.to_dict()["qwen"]["image_grid_thw"] == [1, 16, 12]


def test_no_deepstack_outputs_for_qwen3_5_or_without_the_merger():
    assert plan_vlm(resolve_vlm("tiny-qwen3.5", (128, 128)), parse_spec("none"), None).extra_outputs == ()
    assert plan_vlm(resolve_vlm("tiny-qwen3-vl", (128, 128)), parse_spec("none"), None, projector=False).extra_outputs == ()


@pytest.mark.parametrize("model,size,needle,nearest", [
    ("qwen2.5-vl-3b", (450, 448), "not a multiple of 28", "448"),
    ("qwen2.5-vl-3b", (28, 28), "1 tokens, outside the processor's 4..1280", "56"),
    ("qwen3-vl-2b", (500, 512), "not a multiple of 32", "512"),
])
def test_tile_outside_the_processor_limits(model, size, needle, nearest):
    with pytest.raises(InputError) as e:
        resolve_vlm(model, size)
    assert needle in e.value.message
    assert e.value.hint.startswith("nearest valid sizes:") and nearest in e.value.hint


@pytest.mark.parametrize("spec,needle", [
    ("prune:8", "keeps scattered tokens"),
    ("visionzip:6:2", "keeps scattered and merged tokens"),
    ("tome:2", "merges tokens inside the blocks"),
    ("unshuffle:2", "the merger already concatenates"),
])
def test_methods_that_break_the_merger_are_refused(spec, needle):
    with pytest.raises(SpecError) as e:
        plan_vlm(resolve_vlm("tiny-qwen2.5-vl", (112, 112)), parse_spec(spec), None)
    assert needle in e.value.message and "pool:F or bilinear:HxW" in e.value.hint


@pytest.mark.parametrize("argv,needle", [
    (["tiny-qwen2.5-vl", "--image-size", "112", "--compress", "prune:8"], "keeps scattered tokens"),
    (["tiny-qwen2.5-vl", "--image-size", "112", "--compress", "tome:2"], "merges tokens inside the blocks"),
    (["tiny-qwen2.5-vl", "--image-size", "112", "--compress", "pool:3"], "patch merger 2×2 (factor 2) does not divide"),
    (["tiny-qwen2.5-vl", "--image-size", "100"], "not a multiple of 28"),
    (["tiny-qwen3-vl", "--image-size", "128x100"], "not a multiple of 32"),
    (["tiny-clip", "--image-size", "64x32"], "is not square"),
    (["tiny-clip", "--image-size", "64y"], "is not a size"),
])
def test_refusals_exit_2_with_one_line_and_leave_nothing(capsys, tmp_path, argv, needle):
    code, _, err = run_main(capsys, "export", *argv, "--out", tmp_path / "b")
    assert code == 2
    assert needle in _one_line(err)
    assert not (tmp_path / "b").exists()
