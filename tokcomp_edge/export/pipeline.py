"""`export_bundle`: encoder + compressor → checked ONNX bundle, written atomically.

Order matters: everything that can be rejected cheaply (spec, encoder facts, destination) is checked
before any model is built; the bundle is assembled in a temp folder and renamed into place only after
the checker, shape inference, clean-up check and the ONNX Runtime parity check all passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..atomic import ensure_writable_parent, staged_dir
from ..compression.plan import CompressionPlan, plan_compression
from ..compression.spec import CompressionSpec, parse_spec
from ..console import StageTimes, console, stage
from ..core.bundle import MANIFEST, REFERENCE, dump_manifest, file_entry, save_reference
from ..errors import ExportFailed, InputError, OutputError, ParityError, UnsupportedModelType
from ..vlm.newline import write_vlm_files
from .config import OPSET_RANGE, ExportConfig, ExportResult, default_out, with_batch_default
from .block_taps import tapped
from .rebuild import portable_model_id, portable_weights
from .manifest import build_manifest, io_entries
from .onnx_export import (
    check_onnx,
    cleanup_proto,
    proto_nbytes,
    export_to_proto,
    output_names,
    save_proto,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..encoders.spec import EncoderSpec
    from ..vlm.plan import VlmPlan
from ..core.ort_session import ort_session
from .reference import (
    check_parity,
    compare_outputs,
    golden_inputs,
    parity_target,
    reference_arrays,
    reference_batches,
    torch_outputs,
)


@dataclass(frozen=True)
class Checked:
    """What the cheap checks established: the spec, the tower's facts, the token plans and the destination.

    Attributes:
        spec: the parsed compression spec.
        enc: the tower's EncoderSpec (for a VLM: its vision tower).
        plan: the compressor's plan on the tower's tokens.
        vlm: the VLM vision path's plan, or None for a bare tower.
        out: the bundle folder.
    """

    spec: CompressionSpec
    enc: EncoderSpec
    plan: CompressionPlan
    vlm: VlmPlan | None
    out: Path


def validate_config(cfg: ExportConfig) -> Checked:
    """Cheap checks before any model is built (JSON and arithmetic only)."""
    from ..encoders import resolve_spec
    from ..vlm import is_vlm
    from ..vlm.build import naming_vlm_families

    cfg = with_batch_default(cfg)  # callers may pass an unresolved config (export_bundle resolves it first)
    if not OPSET_RANGE[0] <= cfg.opset <= OPSET_RANGE[1]:
        raise InputError(f"--opset {cfg.opset} is outside the supported {OPSET_RANGE[0]}–{OPSET_RANGE[1]}",
                         "use the default 20 unless your TensorRT needs otherwise")
    if not 1 <= cfg.batch_min <= cfg.batch_max:
        raise InputError(f"batch range {cfg.batch_min}..{cfg.batch_max} is empty or below 1",
                         "use 1 ≤ --batch-min ≤ --batch-max")
    spec = parse_spec(cfg.compress)
    _check_variant_keys(cfg.variants)
    vplan = None
    if is_vlm(cfg.model):
        vplan = _plan_vlm(cfg, spec)
        enc, plan = vplan.vlm.tower, vplan.compression
    else:
        if not cfg.projector or cfg.video:
            flag = "--no-projector" if not cfg.projector else "--video"
            raise InputError(f"{flag} applies to VLMs; {cfg.model} is a bare vision tower",
                             f"drop {flag} (a tower has no projector)")
        if isinstance(cfg.image_size, tuple):
            h, w = cfg.image_size
            raise InputError(f"--image-size {h}x{w} is not square; {cfg.model} is a bare vision tower, exported "
                             "at a square size", f"give one side, e.g. --image-size {max(h, w)}")
        try:
            enc = resolve_spec(cfg.model, cfg.image_size, cfg.seed)
        except UnsupportedModelType as exc:
            raise naming_vlm_families(exc) from exc
        prefix = cfg.prefix or enc.default_prefix
        plan = plan_compression(spec, grid=enc.grid, prefix_tokens=enc.prefix_tokens, has_cls=enc.has_cls,
                                hidden_size=enc.hidden_size, prefix=prefix, layers=_layers_run(cfg, enc))
    slug = spec.slug + ("" if cfg.projector else "_noproj") + ("_video" if cfg.video else "")
    out = Path(cfg.out) if cfg.out else default_out(cfg.model, slug)
    if out.exists() and not cfg.force:
        raise OutputError(f"{out} already exists", "pass --force to replace it, or choose another --out")
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} exists and is not a folder", "choose another --out")
    ensure_writable_parent(out)
    return Checked(spec=spec, enc=enc, plan=plan, vlm=vplan, out=out)


def tower_layer(cfg: ExportConfig) -> int:
    return -1 if cfg.layer is None else cfg.layer


def _layers_run(cfg: ExportConfig, enc: EncoderSpec) -> int | None:
    """Blocks the tower will run (ToMe's arithmetic needs it); None when --layer is out of range, which
    building the encoder reports with its own message."""
    from ..encoders.tower import resolve_layer

    try:
        return resolve_layer(tower_layer(cfg), enc.num_layers)
    except ValueError:
        return None


def vlm_tile(cfg: ExportConfig) -> tuple[int, int] | None:
    """--image-size as the (H, W) resolve_vlm takes (an int is a square)."""
    size = cfg.image_size
    if size is None:
        return None
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _plan_vlm(cfg: ExportConfig, spec: CompressionSpec) -> VlmPlan:
    """A VLM's vision path is fixed by its config: options that would change what the projector sees fail."""
    from ..vlm import plan_vlm, resolve_vlm

    vlm = resolve_vlm(cfg.model, image_size=vlm_tile(cfg))
    # A chosen tile (LFM2-VL, Qwen-VL) was checked against the processor's limits by resolve_vlm.
    if not vlm.tile_chosen and cfg.image_size is not None and cfg.image_size != vlm.tower.image_size[0]:
        raise InputError(f"--image-size {cfg.image_size} cannot apply to {cfg.model}: its tile is "
                         f"{vlm.tower.image_size[0]} px, which its projector and transform are built for",
                         "leave --image-size unset; tile larger images into that size (--batch-max = tiles)")
    if cfg.layer is not None and cfg.layer != vlm.feature_layer:
        raise InputError(f"--layer {cfg.layer} cannot apply to {cfg.model}: the VLM reads "
                         f"vision_feature_layer {vlm.feature_layer} ({vlm.family.feature})",
                         "leave --layer unset; the VLM's own feature layer is exported")
    return plan_vlm(vlm, spec, cfg.prefix, projector=cfg.projector, video=cfg.video)


def _check_variant_keys(keys: tuple[str, ...]) -> None:
    """Unknown or not-yet-possible variants fail before the export, not after it."""
    from .variants import parse_variant_key

    for key in keys:
        precision, _ = parse_variant_key(key)
        if precision == "int8":
            raise InputError(f"--variants {key}: int8 needs calibration, which runs on an exported bundle",
                             "export first, then run `tokcomp calibrate BUNDLE --images DIR`")


def export_bundle(cfg: ExportConfig) -> ExportResult:
    """Export `cfg.model` with `cfg.compress` to a bundle folder. See ExportConfig for the fields.

    Returns:
        ExportResult with the bundle path, its manifest, the parity figures and stage timings.
    Raises:
        InputError (exit 2) for bad input, ExportFailed/ParityError (exit 1) when a check fails; in every
        failure case nothing is left at `out` (an older bundle there stays intact).
    """
    from ..extras import require_export

    require_export(cfg.model, cfg.variants)  # exit 3 naming [export], before any work
    from ..compression.module import CompressedEncoder
    from ..encoders import EncoderConfig, build_encoder

    times = StageTimes()
    cfg = with_batch_default(cfg)  # --batch-max unset: a tiled VLM's tiles per request, else 8
    checked = validate_config(cfg)
    enc_spec, plan, out, vplan = checked.enc, checked.plan, checked.out, checked.vlm
    extra = (vplan.extra_outputs if vplan is not None else ()) + plan.extra_outputs
    names = output_names(extra)
    q = cfg.quiet

    with stage(f"build {cfg.model}" + (" (vision tower + projector only)" if vplan else ""), times, q):
        if vplan is not None:
            from ..vlm import load_vlm
            from ..vlm.path import vision_path

            loaded = load_vlm(cfg.model, cfg.weights, cfg.seed, image_size=vplan.vlm.tower.image_size)
            model = vision_path(loaded.tower, vplan, loaded.projector).eval()
        else:
            loaded = build_encoder(EncoderConfig(model=cfg.model, image_size=cfg.image_size, weights=cfg.weights,
                                                 seed=cfg.seed, layer=tower_layer(cfg)))
            model = CompressedEncoder(loaded.tower, plan).eval()
        enc_spec = loaded.spec.tower if vplan is not None else loaded.spec

    dynamic = cfg.batch_min != cfg.batch_max
    inputs_io, outputs_io = io_entries(plan, enc_spec, "batch" if dynamic else cfg.batch_min, vplan)
    batches = reference_batches(cfg.batch_min, cfg.batch_max)
    golden = golden_inputs(enc_spec.image_size, enc_spec.mean, enc_spec.std, batches, cfg.seed)

    with staged_dir(out, replace=cfg.force) as tmp:
        onnx_path = tmp / "model.onnx"
        with stage(f"export ONNX (opset {cfg.opset}, batch {cfg.batch_min}–{cfg.batch_max})", times, q):
            # Every block's output rides along as a temporary graph output (export/block_taps.py).
            with tapped(model, plan.spec.method == "tome") as (traced, taps, probe):
                probe(golden[min(golden)])
                proto = export_to_proto(traced, enc_spec.image_size, batch_min=cfg.batch_min,
                                        batch_max=cfg.batch_max, opset=cfg.opset,
                                        extra_outputs=extra + tuple(taps.names()))
        with stage("PyTorch reference outputs", times, q):
            expected = {b: torch_outputs(model, x, names) for b, x in golden.items()}
        cleanup = "none"
        if cfg.cleanup:
            with stage("clean-up (onnxslim), checked not to change outputs", times, q):
                proto, cleanup = _checked_cleanup(proto, tmp, golden, cfg)
        blocks = _recorded_blocks(proto, taps, loaded.tower)
        written = save_proto(proto, onnx_path)
        del proto
        with stage("onnx.checker + shape inference + I/O", times, q):
            check_onnx(onnx_path, {t["name"]: t for t in inputs_io + outputs_io})
        with stage(f"parity: ONNX Runtime CPU vs PyTorch (batch {', '.join(map(str, batches))})", times, q):
            # `model`: a differing ToMe merge map is judged by replaying PyTorch's near-ties (export/tome_parity.py).
            parity = check_parity(onnx_path, golden, expected, cfg.tolerance, parity_target(plan, outputs_io),
                                  model=model)
        if not parity.passed:
            raise ParityError(_parity_message(parity), "no bundle was written; run with TOKCOMP_DEBUG=1 and "
                              "report the model and spec")
        # The golden reference is PyTorch's own decision, also when parity passed by a replay.
        save_reference(tmp / REFERENCE, reference_arrays(golden, expected))
        if not q:
            for note in _replay_notes(parity):
                console().print(f"  [dim]parity: {note}[/]")
        lint_warnings = _lint(onnx_path, times, q) if cfg.lint else []
        # Model tensors the device needs after the graph (OneVision's image_newline: vlm/newline.py).
        vlm_extra = write_vlm_files(tmp, vplan.vlm, cfg.model, cfg.weights, cfg.seed) if vplan else {}
        files = {n: file_entry(tmp / n) for n in [*written, REFERENCE, *(e["file"] for e in vlm_extra.values())]}
        manifest = build_manifest(
            name=out.name, spec=enc_spec,
            encoder_extra={"name": portable_model_id(enc_spec.name),
                           "layer": vplan.vlm.tower_layer if vplan else tower_layer(cfg),
                           "layers_run": loaded.tower.num_used,
                           "weights": portable_weights(loaded.weights.to_dict()),
                           "seed": cfg.seed},
            vlm=vplan,
            plan=plan, opset=cfg.opset, batch=(cfg.batch_min, cfg.batch_max), inputs=inputs_io,
            outputs=outputs_io, external_data=len(written) > 1, cleanup=cleanup,
            reference={"file": REFERENCE, "batch_sizes": batches, "seed": cfg.seed,
                       "inputs": "uniform 8-bit RGB pixels (numpy default_rng(seed).integers(0, 256)) / 255, "
                                 "normalised with mean/std"},
            parity=parity.to_dict(), files=files, blocks=blocks, blocks_note=taps.why_none)
        if vlm_extra:
            manifest["vlm"].update(vlm_extra)
        (tmp / MANIFEST).write_text(dump_manifest(manifest))
        if cfg.variants:
            from ..core.bundle import Bundle
            from .variants import VariantOptions, create_variants

            bundle = Bundle.load(tmp, verify=False)
            create_variants(bundle, list(cfg.variants), options=VariantOptions(quiet=q), times=times)
            manifest = bundle.manifest
    if not q:
        console().print(f"  [bold]bundle[/] {out}  [dim]({times.total():.1f} s total)[/]")
    return ExportResult(path=out, manifest=manifest, parity=parity, times=times, lint_warnings=lint_warnings)


def _checked_cleanup(proto, tmp: Path, golden, cfg: ExportConfig):
    """Run onnxslim and keep its result only if ONNX Runtime gives the same outputs before and after.

    A graph whose weights pass protobuf's 2 GiB limit (Qwen2.5-VL's 670M-parameter tower) is left as exported:
    onnxslim works on one in-memory protobuf, whose serialisation fails there; the bundle then keeps its
    weights as external data and the manifest says the clean-up was skipped."""
    from . import onnx_export

    if proto_nbytes(proto) > onnx_export.EXTERNAL_DATA_THRESHOLD:
        if not cfg.quiet:
            console().print("  [yellow]![/] the graph's weights pass 2 GiB; onnxslim cannot take it, so the graph "
                            "is kept as exported")
        return proto, "none (weights over 2 GiB: onnxslim works on one in-memory protobuf)"
    raw_path, slim_path = tmp / ".raw.onnx", tmp / ".slim.onnx"
    slim = cleanup_proto(proto)
    save_proto(proto, raw_path)
    save_proto(slim, slim_path)
    try:
        a, b = ort_session(raw_path), ort_session(slim_path)
        names = [o.name for o in a.get_outputs()]
        x = golden[min(golden)]
        before = dict(zip(names, a.run(names, {"pixel_values": x})))
        after = dict(zip(names, b.run(names, {"pixel_values": x})))
        same = all(v["ok"] for v in compare_outputs(before, after, cfg.tolerance).values())
    finally:
        for p in (raw_path, slim_path):
            p.unlink(missing_ok=True)
    if not same:
        console().print("  [yellow]![/] onnxslim changed the outputs; keeping the un-slimmed graph")
        return proto, "none (onnxslim changed outputs)"
    import onnxslim

    return slim, f"onnxslim {onnxslim.__version__}"


def _recorded_blocks(proto, taps, tower) -> list[dict]:
    """The manifest's `blocks` (the temporary block outputs removed from `proto`), checked against the
    blocks the tower runs (`layers_run`) where the tower's own loop runs them."""
    from ..encoders.user_tower import UserTower
    from .block_taps import strip_taps

    blocks = strip_taps(proto, taps)
    if taps.modules and not isinstance(tower, UserTower) and len(blocks) != tower.num_used:
        raise ExportFailed(f"recorded {len(blocks)} transformer blocks, but the tower runs {tower.num_used} "
                           "(layers_run)", "report this bug with the model and spec")
    return blocks


def _replay_notes(parity) -> list[str]:
    """The sentences saying which near-tie explained a ToMe merge map that differs from PyTorch's."""
    return [f"{b}: {n}" for b, res in parity.per_batch.items() for v in res.values()
            for n in v.get("replay", {}).get("notes", [])]


def _parity_message(parity) -> str:
    worst = []
    for b, res in parity.per_batch.items():
        for name, v in res.items():
            if not v["ok"]:
                # Integer outputs (indices, merge maps) have a max |Δ| but no bound: their sentence, which
                # for a ToMe merge map also says what the near-tie replays showed.
                detail = (f"max |Δ| {v['max_abs']:.3g} > bound {v['bound']:.3g}" if "bound" in v and "max_abs" in v
                          else v.get("error") or f"{v.get('mismatched')} indices differ")
                worst.append(f"{name} at {b}: {detail}")
    return "ONNX Runtime output differs from PyTorch: " + "; ".join(worst)


def _lint(onnx_path: Path, times: StageTimes, quiet: bool) -> list[str]:
    """TensorRT-compatibility lint as a warning at export (it is an error only before `build`)."""
    from ..core.lint import lint_model

    with stage("TensorRT lint", times, quiet):
        report = lint_model(onnx_path)
    lines = [f"{i.severity}: {i.node} ({i.op_type}): {i.message}" for i in report.issues]
    for line in lines:
        console().print(f"  [yellow]lint[/] {line}")
    return lines
