"""Compression spec strings, from the grammar's own pieces and from random text: the export's up-front
checks (parse_spec, plan_compression, the VLM plan) accept a spec or refuse it with a TokcompError, and the
CLI refuses it with one line (exit 2) before any model is built, writing nothing.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, note
from hypothesis import strategies as st

from fuzz_helpers import check_outcome, run_main
from tokcomp_edge.compression.spec import METHODS, POOL_MODES, PRUNE_SCORES, UNSHUFFLE_ORDERS
from tokcomp_edge.errors import TokcompError

PIECES = [*METHODS, *POOL_MODES, *PRUNE_SCORES, *UNSHUFFLE_ORDERS, "pad", "8x8", "3x", "x4", "2,2", "4,0,4", "0",
          "-1", "", " ", "1e3", "²", "٣", "99999999999999999999", "2.5", "K", "NONE", "Pool"]
MODELS = ["tiny-clip", "tiny-siglip", "tiny-dinov2", "tiny-llava", "tiny-internvl"]

grammar = st.lists(st.one_of(st.sampled_from(PIECES), st.integers(-2, 400).map(str)), min_size=1, max_size=4)
specs = st.one_of(grammar.map(":".join), st.text(max_size=16),
                  st.tuples(st.sampled_from(list(METHODS)), st.text(max_size=8)).map(":".join))


@given(spec=specs, model=st.sampled_from(MODELS), prefix=st.sampled_from([None, "keep", "drop"]))
def test_spec_strings(fuzz_cases, capsys, spec, model, prefix):
    from tokcomp_edge.export import ExportConfig
    from tokcomp_edge.export.pipeline import validate_config

    fuzz_cases.count()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bundle"
        try:
            validate_config(ExportConfig(model=model, compress=spec, prefix=prefix, out=out, quiet=True))
        except TokcompError as exc:
            assert exc.exit_code == 2, exc
        else:
            return  # accepted: exporting it is the export tests' job (seconds per model)
        argv = ["export", model, "--compress", spec, "--out", out, *(["--prefix", prefix] if prefix else [])]
        what = " ".join(map(repr, argv))
        note(what)
        code, stdout, err = run_main(capsys, *argv)
        check_outcome(code, stdout, err, what)
        assert code == 2, f"{what}: exit {code}\n{err}"
        assert not out.exists(), f"{what}: refused, yet {out} exists"
