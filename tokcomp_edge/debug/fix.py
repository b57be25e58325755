"""`tokcomp debug --fix`: regenerate the fp16 variant with the breaking nodes kept in fp32 ("fp32 islands").

Which nodes: what AutoCast's own `data_max` rule would have kept in fp32 had it calibrated on the debug
inputs (any node with an input or output beyond data_max there — AutoCast only saw the largest golden
batch), plus the breaking nodes of the first breaking block, plus (with `fix_norms`) every
LayerNormalization and Softmax of the breaking blocks. They go to AutoCast as `nodes_to_exclude`
(Fp16Options.fp32_nodes); the result is debugged again (more rounds add what still breaks), then passes
the variant check and is registered atomically (Bundle.add_variant), its islands in the variant entry.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from ..console import StageTimes, stage
from ..core.bundle import Bundle
from ..errors import ParityError
from .analyse import Analysis, analyse
from .config import DebugConfig

NORM_OPS = ("LayerNormalization", "Softmax")


def choose_islands(a: Analysis, data_max: float, fix_norms: bool) -> dict[str, str]:
    """Node → why it should run in fp32, from one analysis."""
    why: dict[str, str] = {}
    for node, amax in a.node_io_absmax.items():
        if node in a.fp16_nodes and amax > data_max:
            why[node] = f"|x| {amax:.3g} > data_max {data_max:g} on the debug inputs"
    for b in a.blocks:
        for n in b.nodes:
            if n.breaks and n.dtype == "float16":
                why.setdefault(n.name, f"breaks in {b.name}")
    if a.culprit and a.culprit.get("node"):
        why.setdefault(a.culprit["node"], f"first breaking node of {a.culprit['name']}")
    if fix_norms:
        by_name = {b.name: b for b in a.graph_blocks}
        for fig in a.blocks:
            if fig.breaks:
                for n in by_name[fig.name].nodes:
                    if _op(a, n) in NORM_OPS:
                        why.setdefault(n, f"{_op(a, n)} of breaking block {fig.name} (--fix-norms)")
    return why


def _op(a: Analysis, node: str) -> str | None:
    return a.node_ops.get(node)


def fix_fp16(bundle: Bundle, cfg: DebugConfig, first: Analysis, fp32_model, inputs: list[np.ndarray],
             inputs_label: str, times: StageTimes | None = None) -> tuple[dict[str, Any], Analysis]:
    """Regenerate, re-debug, check and register the fp16 variant; returns (what was done, final analysis).

    Raises:
        ParityError: still breaking after cfg.max_rounds, or the fixed variant fails the variant check
            (nothing registered in either case).
    """
    from ..export.fp16 import Fp16Options, convert_fp16
    from ..export.variants import (
        VariantOptions,
        register_fp16,
        save_variant_model,
        staged_variant_file,
        wrappers_of,
    )

    entry = bundle.variants().get("fp16") or {}
    recorded = {k: (tuple(v) if isinstance(v, list) else v) for k, v in (entry.get("options") or {}).items()
                if k in Fp16Options.__dataclass_fields__}
    base = Fp16Options(**recorded)
    why: dict[str, str] = dict.fromkeys(base.fp32_nodes, "kept from the previous fix")
    src = bundle.onnx_path("fp32")
    calib = bundle.reference()[f"pixel_values.b{max(bundle.reference_batches())}"]
    tol = cfg.block_tolerance()
    analysis = first
    for rnd in range(1, cfg.max_rounds + 1):
        new = {n: r for n, r in choose_islands(analysis, base.data_max, cfg.fix_norms).items() if n not in why}
        if not new:
            break
        why.update(new)
        options = replace(base, fp32_nodes=tuple(sorted(why)))
        with stage(f"fix round {rnd}: AutoCast with {len(why)} nodes kept in fp32", times, cfg.quiet):
            model, facts = convert_fp16(src, calib, options)
        with staged_variant_file(bundle, "fp16") as tmp:
            save_variant_model(model, tmp, "fp16")
            del model
            import onnx

            with stage(f"fix round {rnd}: per-block check of the regenerated variant", times, cfg.quiet):
                analysis = analyse(fp32_model, onnx.load(str(tmp)), inputs, tol, bundle.manifest)
            if analysis.culprit is not None:
                continue
            islands = {"nodes": sorted(why), "why": dict(sorted(why.items())),
                       "blocks": [b.name for b in first.blocks if b.breaks], "rounds": rnd,
                       "inputs": inputs_label, "made_by": "tokcomp debug --fix"
                       + (" --fix-norms" if cfg.fix_norms else "")}
            # register_fp16 re-derives the wrappers of the old fp16 (fp16-nhwc) in the same manifest write.
            refreshed = wrappers_of(bundle, "fp16")
            path = register_fp16(bundle, tmp, VariantOptions(fp16=options, quiet=cfg.quiet), facts, times,
                                 extra={"fp32_islands": islands})
        return {"registered": path.name, "islands": islands, "refreshed": refreshed,
                "check": bundle.variants()["fp16"]["check"]}, analysis
    culprit = analysis.culprit or {}
    raise ParityError(f"the fp16 variant still breaks at {culprit.get('name')} (node {culprit.get('node')}) after "
                      f"keeping {len(why)} nodes in fp32", "nothing was registered; try --fix-norms, or keep the "
                      "block's op types in fp32 (Fp16Options.fp32_op_types)")
