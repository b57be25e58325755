"""preprocessor_config.json of an hf: folder, mutated: what export reads of it up front (mean/std, through
validate_config → resolve_spec) and the framing policy it records in the manifest (policy_for_spec, the
call build_manifest makes) accept it or refuse it with one TokcompError (exit 2) — never a TypeError.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import Phase, given, note, settings
from hypothesis import strategies as st

from tokcomp_edge.errors import TokcompError

CONFIG = {"model_type": "clip_vision_model", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
          "intermediate_size": 128, "patch_size": 16, "image_size": 224}
GOOD = {"size": [{"shortest_edge": 224}, {"height": 224, "width": 224}, 224, [224, 224]],
        "crop_size": [{"height": 224, "width": 224}, 224], "do_center_crop": [True, False],
        "resample": [0, 2, 3], "rescale_factor": [1 / 255], "do_rescale": [True, False],
        "image_mean": [[0.5, 0.5, 0.5]], "image_std": [[0.5, 0.5, 0.5]], "do_resize": [True],
        "image_processor_type": ["CLIPImageProcessor"], "do_convert_rgb": [True]}
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 10 ** 6), st.floats(allow_nan=True),
                    st.text(max_size=6))
junk = st.one_of(scalars, st.lists(scalars, max_size=4),
                 st.dictionaries(st.sampled_from(["shortest_edge", "height", "width", "longest_edge", "x"]),
                                 scalars, max_size=3))


@st.composite
def processor_configs(draw):
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from(["[]", "3", "{", "null", '"x"', "\xff"]))
    keys = draw(st.lists(st.sampled_from([*GOOD, "bogus"]), unique=True, max_size=8))
    doc = {k: draw(st.one_of(st.sampled_from(GOOD.get(k, [0])), junk)) for k in keys}
    return json.dumps(doc)


@settings(phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(text=processor_configs())
def test_preprocessor_configs(fuzz_cases, text):
    from tokcomp_edge.export import ExportConfig
    from tokcomp_edge.export.pipeline import validate_config
    from tokcomp_edge.image_policy import policy_for_spec

    fuzz_cases.count()
    note(text)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ckpt"
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(CONFIG))
        (folder / "preprocessor_config.json").write_text(text)
        try:
            checked = validate_config(ExportConfig(model=f"hf:{folder}", compress="pool:2", out=Path(tmp) / "b"))
            policy_for_spec(checked.enc).to_dict()
        except TokcompError as exc:
            assert exc.exit_code == 2, exc
