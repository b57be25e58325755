"""The select rule as transformers' own `get_image_features` applies it, for each family that admits more
than one tower type: `vision_feature_select_strategy: "default"` slices `[:, 1:]` whatever row 0 is (a CLS,
or SigLIP's first patch), and the config class's own default applies when config.json has no key.

Each case: a tiny random VLM saved with save_pretrained → `hf:` export → ONNX Runtime equals
`get_image_features`' pooler_output (not a re-derived expectation)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from vlm_helpers import SIGLIP, TEXT, run_main, save_vlm, tile_pixels

from tokcomp_edge.core.ort_session import ort_session
from tokcomp_edge.export import ExportConfig, export_bundle

VIS = {k: v for k, v in SIGLIP.items() if k != "model_type"}
CLIP = dict(model_type="clip_vision_model", **VIS)
SIG = dict(SIGLIP)


def _config(family: str, vision: dict, select: str | None):
    import transformers as T

    kw = {} if select is None else {"vision_feature_select_strategy": select}
    if family == "llava":
        return T.LlavaConfig(vision_config=vision, text_config=dict(model_type="llama", **TEXT), image_token_index=5,
                             vision_feature_layer=-2, **kw)
    if family == "llava_onevision":
        return T.LlavaOnevisionConfig(vision_config=vision, text_config=dict(model_type="qwen2", **TEXT),
                                      image_token_index=5, video_token_index=6, vision_feature_layer=-1, **kw)
    if family == "paligemma":
        return T.PaliGemmaConfig(vision_config=vision, text_config=dict(model_type="gemma", head_dim=16, **TEXT),
                                 projection_dim=48, image_token_index=5)
    raise KeyError(family)


CLASSES = {"llava": "LlavaForConditionalGeneration", "llava_onevision": "LlavaOnevisionForConditionalGeneration",
           "paligemma": "PaliGemmaForConditionalGeneration"}


def _model(family: str, vision: dict, select: str | None, seed: int = 0):
    import transformers as T

    torch.manual_seed(seed)
    model = getattr(T, CLASSES[family])(_config(family, vision, select)).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


def _save(model, folder, drop_select_key: bool):
    save_vlm(model, folder)
    if drop_select_key:  # a config.json written without the key: the config class's default applies
        cfg = json.loads((folder / "config.json").read_text())
        cfg.pop("vision_feature_select_strategy", None)
        (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def _reference(model, family: str, x: torch.Tensor) -> np.ndarray:
    """pooler_output of transformers' get_image_features for single tiles."""
    with torch.no_grad():
        if family == "llava_onevision":
            # Several images in one sample skip anyres (one crop each); each image's features end with the
            # learned image_newline, which stays on the host: compare what precedes it.
            out = model.get_image_features(x, image_sizes=torch.tensor([list(x.shape[-2:])] * len(x)),
                                           batch_num_images=torch.tensor([len(x)])).pooler_output
            newline = model.model.image_newline
            assert all(torch.equal(o[-1], newline) for o in out)
            return torch.stack([o[:-1] for o in out]).numpy()
        out = model.get_image_features(x).pooler_output
    return (torch.stack(list(out)) if isinstance(out, (list, tuple)) else out).numpy()


CASES = [
    # family, tower, select in config.json (None: key absent), tokens transformers gives
    ("llava", SIG, "default", 63),           # drops patch 0: SigLIP has no CLS
    ("llava", SIG, None, 63),                # LlavaConfig's default is "default"
    ("llava", SIG, "full", 64),
    ("llava", CLIP, None, 64),               # the CLS dropped
    ("llava_onevision", SIG, "default", 63),
    ("llava_onevision", SIG, None, 64),      # LlavaOnevisionConfig's default is "full"
    ("llava_onevision", CLIP, "default", 64),
    ("llava_onevision", CLIP, "full", 65),   # CLS kept
    ("paligemma", CLIP, None, 65),           # last_hidden_state, no select: CLS kept
]


@pytest.mark.parametrize("family,vision,select,tokens", CASES,
                         ids=[f"{f}-{v['model_type'].split('_')[0]}-{s}" for f, v, s, _ in CASES])
def test_export_equals_get_image_features(tmp_path, family, vision, select, tokens):
    model = _model(family, vision, select)
    folder = _save(model, tmp_path / "vlm", drop_select_key=select is None)
    res = export_bundle(ExportConfig(model=f"hf:{folder}", out=tmp_path / "b", batch_max=2, quiet=True, lint=False))
    assert res.manifest["tokens_out"] == tokens
    sess = ort_session(res.path / "model.onnx")
    x = tile_pixels(2, seed=3)
    want = _reference(model, family, x)
    (got,) = sess.run(["tokens"], {"pixel_values": x.numpy()})
    assert np.isfinite(got).all() and got.shape == want.shape == (2, tokens, 48)
    scale = float(np.abs(want).max())
    assert scale > 1e-3
    err = float(np.abs(got - want).max())
    assert err <= 1e-4 + 1e-4 * scale, err


@pytest.mark.parametrize("argv,needle", [
    (["--compress", "pool:2"], "drops patch 0 (the tower has no cls), as transformers does"),
    (["--compress", "prune:16"], "drops patch 0"),
    (["--prefix", "keep"], "--prefix keep cannot apply"),
])
def test_llava_siglip_default_refuses_what_needs_the_grid(capsys, tmp_path, argv, needle):
    folder = _save(_model("llava", SIG, "default"), tmp_path / "vlm", drop_select_key=False)
    code, _, err = run_main(capsys, "export", f"hf:{folder}", *argv, "--out", tmp_path / "b")
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and needle in lines[0].lower(), err
    assert not (tmp_path / "b").exists()


def test_families_with_one_tower_class_admit_no_other():
    """InternVL, Idefics3 and SmolVLM build their vision config from one fixed class, so a second tower type
    cannot occur; the others resolve it through AutoConfig (covered above)."""
    import transformers as T
    from transformers.configuration_utils import SubConfigSpec

    for cls in (T.InternVLConfig, T.Idefics3Config, T.SmolVLMConfig):
        spec = cls.sub_configs_defaults["vision_config"]
        assert not isinstance(spec, SubConfigSpec) or spec.config_class is not T.AutoConfig, cls
    for cls in (T.LlavaConfig, T.LlavaOnevisionConfig, T.PaliGemmaConfig, T.Gemma3Config):
        assert cls.sub_configs_defaults["vision_config"].config_class is T.AutoConfig, cls
