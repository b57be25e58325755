"""`run_sweep`: candidates × (image, prompt) pairs on the VLM's own LLM → measured table → fronts → pick → files.

Order: everything cheap (constraint, prompts, images folder, candidates, destination) is checked before the
VLM is loaded; the outputs are assembled in a temporary folder and renamed into place at the end, so an
interrupted sweep (Ctrl-C) leaves nothing half-written.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..atomic import ensure_writable_parent, staged_dir
from ..console import console, stage
from ..errors import InputError, OutputError
from .candidates import candidate_grid, parse_candidates
from .choose import Constraint, NoFeasibleCandidate, choose, pareto_front
from .cost import LATENCY_BACKENDS, economics, mean_image_tokens, measure_latency
from .fidelity import Pair, log_probs, per_prompt, score, summarise
from .inputs import check_images, read_pairs, read_prompts
from .result import SweepConfig, SweepResult

EXAMPLES = 4  # pairs whose answers the report shows side by side


def default_out(model: str) -> Path:
    from ..export.config import DEFAULT_EXPORT_ROOT, model_slug

    return DEFAULT_EXPORT_ROOT / f"{model_slug(model)}_sweep"


def _check(cfg: SweepConfig):
    constraint = Constraint(tokens=cfg.tokens, max_ms=cfg.max_ms, min_agreement=cfg.min_agreement)
    if not isinstance(cfg.answer_tokens, int) or cfg.answer_tokens < 1:
        raise InputError(f"--answer-tokens {cfg.answer_tokens} is not a length", "give an integer ≥ 1, e.g. 24")
    if cfg.max_pairs is not None and cfg.max_pairs < 1:
        raise InputError(f"--max-pairs {cfg.max_pairs} leaves no pair", "give an integer ≥ 1, or leave it unset")
    if cfg.latency not in LATENCY_BACKENDS:
        raise InputError(f"--backend {cfg.latency!r} is not a latency backend",
                         f"use one of {', '.join(LATENCY_BACKENDS)}")
    from .llm import LLM_DTYPES

    if cfg.llm_dtype not in LLM_DTYPES:
        raise InputError(f"--llm-dtype {cfg.llm_dtype!r} is not one of {', '.join(LLM_DTYPES)}",
                         "use float32 (default) or bfloat16")
    if cfg.latency_runs < 1:
        raise InputError(f"--latency-runs {cfg.latency_runs} times nothing", "give an integer ≥ 1")
    if constraint.kind == "max_ms" and cfg.latency == "none":
        raise InputError("--max-ms needs the vision-path latency, and --backend none measures none",
                         "use --backend onnxruntime (default), tensorrt or pytorch")
    if cfg.export and constraint.kind is None:
        raise InputError("--export exports the pick, and no constraint picks one",
                         "add --tokens N, --max-ms X or --min-agreement A")
    if cfg.pairs is not None and cfg.prompts is not None:
        raise InputError("--pairs and --prompts were both given", "give the questions one way: --prompts (every "
                         "image × every prompt) or --pairs (IMAGE<tab>PROMPT lines)")
    check_images(Path(cfg.images))
    listed = read_pairs(Path(cfg.pairs), Path(cfg.images)) if cfg.pairs is not None else None
    prompts = list(dict.fromkeys(q for _, q in listed)) if listed else read_prompts(cfg.prompts)
    out = Path(cfg.out) if cfg.out else default_out(cfg.model)
    if out.exists() and not cfg.force:
        raise OutputError(f"{out} already exists", "pass --force to replace it, or choose another --out")
    ensure_writable_parent(out, probe_only=True)
    return constraint, prompts, listed, out


def _check_backend(cfg: SweepConfig, out: Path):
    """--profile, --variants and --backend tensorrt, before any model is loaded: bad values exit 2, then a missing
    TensorRT or GPU exits 3 (as `tokcomp build` orders them). Returns the TrtEngines set-up, or None."""
    if cfg.profile is not None and cfg.latency != "tensorrt":
        raise InputError(f"--profile {cfg.profile} says how TensorRT engines are built, and --backend {cfg.latency} "
                         "builds none", "add --backend tensorrt, or drop --profile")
    if cfg.variants and not cfg.export:
        raise InputError(f"--variants {','.join(cfg.variants)} are made in the exported bundle, and --export was not "
                         "given", "add --export (with a constraint that picks), or drop --variants")
    from ..export.variants import parse_variant_key

    fp16 = False
    for key in cfg.variants:
        precision, _ = parse_variant_key(key)  # InputError naming the keys for a typo
        if precision == "int8":
            raise InputError(f"--variants {key}: int8 needs calibration, which runs on an exported bundle",
                             "export first, then run `tokcomp calibrate BUNDLE --images DIR`")
        fp16 = fp16 or precision == "fp16"
    engines = None
    if cfg.latency == "tensorrt":
        from .trt_latency import TrtEngines, check_profile, require_tensorrt

        profile = check_profile(cfg.profile)
        fp16 = fp16 or profile.precision == "fp16"
        require_tensorrt()  # RuntimeMissing (exit 3) in one line; nothing loaded, exported or written yet
        engines = TrtEngines(model=cfg.model, profile=cfg.profile or profile.name, beside=out)
    if fp16:
        from ..extras import require_extra

        require_extra("export", "an fp16 variant (ModelOpt AutoCast)", ("modelopt",))
    return engines


def _pairs(cfg: SweepConfig, prompts: list[str], listed, policy):
    """The images decoded and the pairs: --pairs as listed, else images × prompts (image-major); --max-pairs
    keeps the first N (only their images are decoded). Returns (ImageBatch, pairs, warnings)."""
    from ..calibration.images import load_images

    if listed is not None:
        keep = listed[:cfg.max_pairs] if cfg.max_pairs is not None else listed
        batch = load_images(list(dict.fromkeys(f for f, _ in keep)), policy)
        where = {Path(p): i for i, p in enumerate(batch.paths)}
        pairs = [Pair(0, where[f], str(f), prompts.index(q), q) for f, q in keep if f in where]
        warnings = batch.warnings()
        if len(keep) < len(listed):
            warnings.append(f"used the first {len(keep)} of the {len(listed)} listed pairs (--max-pairs)")
        if len(pairs) < len(keep):
            warnings.append(f"{len(keep) - len(pairs)} listed pair(s) dropped: their image could not be read")
    else:
        # Only the images the pairs will use are decoded (--max-pairs bounds them, image-major).
        need = -(-cfg.max_pairs // len(prompts)) if cfg.max_pairs is not None else None
        batch = load_images(Path(cfg.images), policy, limit=need)
        pairs = [Pair(0, i, str(p), j, q) for i, p in enumerate(batch.paths) for j, q in enumerate(prompts)]
        # load_images' own note on unread files names --max-images; here --max-pairs left them out, said below.
        warnings = [w for w in batch.warnings() if "--max-images" not in w]
        if batch.unread or (cfg.max_pairs is not None and len(pairs) > cfg.max_pairs):
            total = (len(batch) + batch.unread) * len(prompts)
            warnings.append(f"used the first {cfg.max_pairs} (image, prompt) pairs of about {total} (--max-pairs), "
                            f"image-major order; {batch.unread} image file(s) not read")
            pairs = pairs[:cfg.max_pairs]
    if not pairs:
        raise InputError(f"no (image, prompt) pair is left to measure in {cfg.images}", "give readable images")
    return batch, [Pair(k, p.image_index, p.image, p.prompt_index, p.prompt) for k, p in enumerate(pairs)], warnings


def run_sweep(cfg: SweepConfig) -> SweepResult:
    """Measure every candidate against the uncompressed path and pick one. See SweepConfig for the fields.

    Returns:
        SweepResult (falsy when a constraint was given and no candidate met it: `infeasible` says why, and
        the CLI exits 1 naming the closest); sweep.json and sweep.html are in `result.out`.
    Raises:
        InputError (exit 2) for bad input (before any model is loaded where it can be seen early).
    """
    from ..extras import require_extra

    exports = cfg.latency == "tensorrt" or cfg.export  # the normal export pipeline runs (onnxslim included)
    modules = ("torch", "transformers", "safetensors") + (("onnxscript", "onnxruntime")
                                                           if cfg.latency == "onnxruntime" or exports else ()) + (
        ("onnxslim",) if exports else ())
    require_extra("export", "tokcomp sweep", modules)  # exit 3 naming [export], before any work
    import torch

    from ..image_policy import policy_for_spec
    from ..vlm import load_vlm, resolve_vlm
    from ..vlm.path import vision_path
    from .images import CandidateImages, onevision_newline, processor_params
    from .llm import check_family, load_language_model

    t_start = time.perf_counter()
    constraint, prompts, listed, out = _check(cfg)
    if not (isinstance(cfg.model, str) and cfg.model.startswith("hf:")):
        raise InputError(f"{cfg.model!r} is not an hf: folder; the sweep runs the VLM's own LLM from its checkpoint",
                         "give hf:<folder> holding config.json, the weights (LLM included) and the tokenizer")
    check_family(cfg.model)
    vlm = resolve_vlm(cfg.model)
    cands = parse_candidates(cfg.candidates, vlm) if cfg.candidates is not None else candidate_grid(vlm)
    runnable = [c for c in cands if c.refused is None]
    engines = _check_backend(cfg, out)  # exit 2 for bad values, then 3 without TensorRT/GPU: before any model loads
    with stage(f"load {cfg.model} (LLM included) and its vision path", quiet=cfg.quiet):
        lm = load_language_model(cfg.model, cfg.llm_dtype)
        loaded = load_vlm(cfg.model)
    paths = {c.spec: vision_path(loaded.tower, c.plan, loaded.projector).eval() for c in runnable}
    batch, pairs, warnings = _pairs(cfg, prompts, listed, policy_for_spec(loaded.spec.tower, vlm.family.model_type))
    pixels = torch.from_numpy(batch.pixel_values)
    params = processor_params(vlm)  # the runtime's tiling, from the record an export would write
    newline = onevision_newline(vlm, cfg.model)
    encoders = {c.spec: CandidateImages(paths[c.spec], c.plan, c.spec, params, newline) for c in runnable}

    t_fid = time.perf_counter()
    refs, scores, text_tokens = _fidelity(cfg, lm, encoders, runnable, params, pairs)
    fid_s = time.perf_counter() - t_fid

    t_lat = time.perf_counter()
    with _progress(len(runnable), cfg.quiet or cfg.latency == "none") as bar:
        what = {"onnxruntime": "ONNX export per candidate",
                "tensorrt": "TensorRT engine per candidate (export + build)"}.get(cfg.latency, "latency set-up")
        task = bar.add_task(what, total=len(runnable))
        lat = measure_latency(paths, {c.spec: c.plan for c in runnable}, pixels[:1], cfg.latency, cfg.latency_runs,
                              progress=lambda spec: bar.advance(task), engines=engines,
                              starting=lambda spec: bar.update(task, description=f"{what}: {spec}"))
    lat_s = time.perf_counter() - t_lat
    native = next(c.tokens for c in runnable if c.spec == "none")
    mean_text = round(sum(text_tokens) / len(text_tokens))
    tiles = [s.tiles for s in scores["none"]]
    native_image = mean_image_tokens(scores["none"])
    rows = []
    for c in runnable:
        s = summarise(scores[c.spec], seed=cfg.seed)
        med = lat["per_candidate"].get(c.spec, {}).get("median_ms")
        rows.append({"spec": c.spec, "tokens": c.tokens, "arithmetic": c.plan.arithmetic, **s,
                     "top1_lo": s["top1_ci"][0], "latency_ms": med,
                     "economics": economics(vlm, native_image, mean_image_tokens(scores[c.spec]), tiles,
                                             mean_text),
                     "per_prompt": per_prompt(scores[c.spec], pairs),
                     "per_pair": [x.to_dict() for x in scores[c.spec]]})
    fronts = {"tokens": pareto_front(rows, "tokens"),
              "latency_ms": pareto_front(rows, "latency_ms") if cfg.latency != "none" else []}
    pick = infeasible = closest = None
    try:
        chosen = choose(rows, constraint)
        pick = chosen["spec"] if chosen else None
    except NoFeasibleCandidate as exc:
        infeasible, closest = exc.one_line(), exc.closest
    shown = pick or closest
    examples = _examples(lm, encoders[shown], params, pairs, refs, cfg.answer_tokens, shown) if shown else []
    result = SweepResult(
        config=cfg.to_dict(),
        model={"id": cfg.model, "family": vlm.family.model_type, "native_tokens_per_tile": native,
               "tiles_per_image": round(sum(tiles) / len(tiles), 3), "tiles_per_pair": tiles,
               "image_tokens_per_image": native_image, "llm": vlm.llm.to_dict(), "template": lm.template,
               "image_token": lm.image_token, "image_marker": lm.image_marker, "image_token_id": lm.image_token_id,
               "llm_dtype": cfg.llm_dtype,
               "weights": loaded.weights.to_dict(), "text_tokens_mean": mean_text,
               "preprocess": batch_policy(loaded, vlm)},
        candidates=rows, refused=[c.to_dict() for c in cands if c.refused is not None],
        pairs=[{**p.to_dict(), "reference": r["tokens"], "reference_text": lm.text(r["tokens"])}
               for p, r in zip(pairs, refs, strict=True)],
        fronts=fronts, constraint=constraint.to_dict(), pick=pick, infeasible=infeasible, examples=examples,
        latency={k: v for k, v in lat.items() if k != "per_candidate"},
        timing={"fidelity_s": fid_s, "latency_s": lat_s,
                "per_candidate_pair_s": fid_s / max(1, len(runnable) * len(pairs)),
                "candidates": len(runnable), "pairs": len(pairs)},
        warnings=warnings)
    _write(cfg, result, out, pick, t_start, engines)
    return result


def batch_policy(loaded, vlm) -> str:
    from ..image_policy import policy_for_spec

    return policy_for_spec(loaded.spec.tower, vlm.family.model_type).source


def _progress(total: int, quiet: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console(), disable=quiet, transient=False)


def _fidelity(cfg, lm, encoders, runnable, params, pairs):
    """Image-major: each image tiled once as the runtime tiles it and encoded per candidate (features, layout,
    DeepStack), then per prompt the reference answer and every candidate teacher-forced on it (one
    reference's log-probs in memory at a time)."""
    from .images import tile

    refs, scores, text_tokens = [], {c.spec: [] for c in runnable}, []
    with _progress(len(pairs) * len(runnable), cfg.quiet) as bar:
        task = bar.add_task("candidates × pairs", total=len(pairs) * len(runnable))
        inputs: dict[str, Any] = {}
        current = tiled = None
        for pair in pairs:
            if pair.image_index != current:
                tiled = tile(pair.image, params)
                inputs = {c.spec: encoders[c.spec].encode(tiled) for c in runnable}
                current = pair.image_index
            # The reference: the uncompressed path's features in the uncompressed layout, greedy.
            ref = inputs["none"]
            ref_ids = lm.prompt_ids(pair.prompt, ref.layout)
            tokens, logits = lm.steps(lm.inputs(ref_ids, ref), cfg.answer_tokens)
            ref_logp = log_probs(logits)
            refs.append({"tokens": tokens})
            text_tokens.append(len(ref_ids) - ref.tokens)
            for c in runnable:
                x = inputs[c.spec]
                ids = lm.prompt_ids(pair.prompt, x.layout)  # the candidate's own placeholder count and layout
                inp = lm.inputs(ids, x)
                _, cand_logits = lm.steps(inp, cfg.answer_tokens, forced=tokens)
                s = score(tokens, ref_logp, cand_logits)
                s.image_tokens, s.tiles = x.tokens, tiled.tiles
                if cfg.answers:
                    s.answer = lm.steps(inp, cfg.answer_tokens)[0]
                scores[c.spec].append(s)
                bar.advance(task)
    return refs, scores, text_tokens


def _examples(lm, encoder, params, pairs, refs, k, spec) -> list[dict[str, Any]]:
    """Reference vs `spec`'s own greedy answer on the first pairs of distinct prompts (the report's examples)."""
    from .images import tile

    seen, out = set(), []
    for pair, ref in zip(pairs, refs, strict=True):
        if pair.prompt_index in seen and len(pairs) > EXAMPLES:
            continue
        seen.add(pair.prompt_index)
        x = encoder.encode(tile(pair.image, params))
        own, _ = lm.steps(lm.inputs(lm.prompt_ids(pair.prompt, x.layout), x), k)
        out.append({"pair": pair.index, "image": Path(pair.image).name, "prompt": pair.prompt, "spec": spec,
                    "reference": lm.text(ref["tokens"]), "candidate": lm.text(own), "same": own == ref["tokens"]})
        if len(out) >= EXAMPLES:
            break
    return out


def _validate(cfg: SweepConfig, tmp: Path, engine: Path | None) -> dict[str, Any]:
    """`tokcomp validate` of the exported pick on the sweep's images: its engine when one was built (--backend
    tensorrt), else the bundle on ONNX Runtime CPU, both against PyTorch. The report goes to bundle/reports and
    links back to sweep.html / sweep.json by paths relative to that folder; sweep.html links the report by a
    path relative to the sweep folder."""
    import os

    from ..validation import ValidateConfig, validate

    t0 = time.perf_counter()
    bundle = tmp / "bundle"
    reports = bundle / "reports"
    links = (("the sweep that picked this compression", os.path.relpath(tmp / "sweep.html", reports)),
             ("sweep.json", os.path.relpath(tmp / "sweep.json", reports)))
    res = validate(ValidateConfig(target=engine if engine is not None else bundle,
                                  bundle=bundle if engine is not None else None, images=Path(cfg.images),
                                  max_images=4, iterations=cfg.latency_runs, out_dir=reports, links=links,
                                  quiet=cfg.quiet))
    paths = {k: str(Path(v).relative_to(tmp)) for k, v in res.report_paths.items()}
    return {"passed": res.passed, "failures": res.failures, "reports": paths, "target": res.report["target"]["label"],
            "seconds": time.perf_counter() - t0}


def _write(cfg: SweepConfig, result: SweepResult, out: Path, pick: str | None, t_start: float,
           engines=None) -> None:
    """sweep.json + sweep.html, and with --export the pick's bundle (its --variants made), its engine (--backend
    tensorrt) and its validation, all in one staged folder: a failed export, build or validation leaves nothing."""
    import json

    from .report import render_html

    with staged_dir(out, replace=cfg.force) as tmp:
        if cfg.export and pick is not None:
            from ..export import ExportConfig, export_bundle

            t0 = time.perf_counter()
            export_bundle(ExportConfig(model=cfg.model, compress=pick, out=tmp / "bundle",
                                       variants=tuple(cfg.variants), quiet=cfg.quiet))
            result.bundle = str(out / "bundle")
            result.timing["export_s"] = time.perf_counter() - t0
            engine = None
            if cfg.latency == "tensorrt":
                from ..engines.build import BuildConfig, build_engine

                from .trt_latency import DEFAULT_PROFILE

                t0 = time.perf_counter()
                if engines is not None:  # the candidates' timing caches: the pick's build starts from them
                    engines.seed_timing_caches(tmp / "engines")
                engine = build_engine(BuildConfig(bundle=tmp / "bundle", profile=cfg.profile or DEFAULT_PROFILE,
                                                  engines_dir=tmp / "engines", quiet=cfg.quiet)).engine_path
                result.engine = str(out / engine.relative_to(tmp))
                result.timing["build_s"] = time.perf_counter() - t0
            result.validation = _validate(cfg, tmp, engine)
        result.out = str(out)
        result.timing["total_s"] = time.perf_counter() - t_start
        d = result.to_dict()
        (tmp / "sweep.json").write_text(json.dumps(d, indent=1, allow_nan=False) + "\n")
        (tmp / "sweep.html").write_text(render_html(d))
