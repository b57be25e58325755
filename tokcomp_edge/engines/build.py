"""`tokcomp build`: bundle + profile → engine + engine.json (or, with dry_run, just the plan).

Order matters, so that a machine without TensorRT or a GPU exits 3 having written nothing (not even
a variant into the bundle): bad input (exit 2) → lint (exit 1) → TensorRT and GPU (exit 3) → existing
outputs → variant created on demand → build → files written atomically, engine.json last (its presence
marks a complete build).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import write_bytes_atomic, write_text_atomic
from ..console import StageTimes, stage
from ..errors import InputError, OutputError
from .plan import DEFAULT_ENGINES_DIR, BuildPlan, make_plan
from .profile import BuildProfile, load_profile
from .trt_import import BuildTarget, probe_target


@dataclass(frozen=True)
class BuildConfig:
    """Everything `tokcomp build` needs.

    Attributes:
        bundle: bundle folder (from `tokcomp export`).
        profile: preset name (`tokcomp profiles`) or path to a TOML profile.
        engines_dir: root folder of the engines (`engines/<bundle name>/…` is written under it).
        dry_run: plan only: print the plan and the equivalent trtexec command; needs no TensorRT.
        force: replace an existing engine with the same name.
        quiet: no progress lines on stderr.
    """

    bundle: Path
    profile: str | Path = "fp16"
    engines_dir: Path = DEFAULT_ENGINES_DIR
    dry_run: bool = False
    force: bool = False
    quiet: bool = False


@dataclass
class BuildResult:
    """What `build_engine` did.

    Attributes:
        plan: the executed (or, for a dry run, the proposed) plan.
        trtexec: equivalent trtexec command lines keyed by TensorRT major (10 and/or 11).
        dry_run: True when nothing was built.
        record: the engine.json document (None for a dry run).
        times: wall time per stage.
    """

    plan: BuildPlan
    trtexec: dict[int, str]
    dry_run: bool
    record: dict[str, Any] | None = None
    times: StageTimes = field(default_factory=StageTimes)

    @property
    def engine_path(self) -> Path | None:
        return None if self.dry_run else self.plan.engine_path


def plan_build(cfg: BuildConfig, target: BuildTarget | None = None) -> tuple[Any, BuildProfile, BuildPlan]:
    """Load bundle and profile and make the plan (no TensorRT needed; names may hold placeholders).

    Returns:
        (bundle, profile, plan).
    """
    from ..core.bundle import Bundle

    bundle = Bundle.load(cfg.bundle)
    profile = load_profile(cfg.profile)
    plan = make_plan(bundle, profile, target if target is not None else probe_target(), Path(cfg.engines_dir))
    return bundle, profile, plan


def _lint(path: Path) -> None:
    from ..core.lint import lint_model

    lint_model(path).raise_for_errors()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_engine(cfg: BuildConfig) -> BuildResult:
    """Build (or with `cfg.dry_run`, plan) an engine for a bundle.

    Args:
        cfg: BuildConfig.

    Returns:
        BuildResult (plan, trtexec equivalents, engine.json record).

    Raises:
        BundleError / ProfileError / OutputError / InputError (exit 2): bad bundle, profile, existing output,
            or INT8 without a calibrated variant.
        LintError (exit 1): the graph would not build (checked before TensorRT is needed).
        RuntimeMissing (exit 3): no TensorRT or no GPU — nothing has been written.
        CheckFailed (exit 1): TensorRT refused to build.
    """
    from .trtexec import trtexec_commands

    times = StageTimes()
    bundle, profile, plan = plan_build(cfg)
    if cfg.dry_run:
        return BuildResult(plan=plan, trtexec=trtexec_commands(plan), dry_run=True, times=times)

    if profile.precision == "int8" and "int8" not in bundle.variants():
        # Knowable without TensorRT, so it is reported before the runtime check (exit 2, not 3).
        raise InputError(f"profile {profile.name!r} builds INT8, but bundle {bundle.path} has no calibrated int8 "
                         "variant", f"calibrate first on representative images (`tokcomp calibrate {bundle.path} "
                         "--images DIR`), which adds the Q/DQ model to the bundle; then build again")
    with stage("lint (TensorRT ONNX parser rules)", times, quiet=cfg.quiet):
        _lint(bundle.onnx_path("fp32"))

    from .trt_import import BuildTarget, require_target, trt_version

    trt, gpu = require_target()  # RuntimeMissing (exit 3) here: nothing written yet
    version = trt_version(trt)
    target = BuildTarget(gpu=gpu, trt_version=version)
    plan = make_plan(bundle, profile, target, Path(cfg.engines_dir))
    existing = [p for p in (plan.engine_path, plan.sidecar_path) if p.exists()]
    if existing and not cfg.force:
        raise OutputError(f"{existing[0]} already exists", "pass --force to rebuild it")

    if not plan.variant_ready:
        from ..export.variants import VariantOptions, ensure_variant

        # ensure_variant reports its own stages (a spinner may not be nested in another one).
        ensure_variant(bundle, plan.variant, options=VariantOptions(quiet=cfg.quiet), times=times)
        plan = make_plan(bundle, profile, target, Path(cfg.engines_dir))
    if plan.variant != "fp32":
        with stage(f"lint {plan.onnx_path.name}", times, quiet=cfg.quiet):
            _lint(plan.onnx_path)

    from .engine_info import (
        engine_record,
        layer_stats,
        measured_placement,
        parse_inspector,
    )
    from .trt_build import build_serialized

    with stage(f"TensorRT {version} build on {gpu.name} ({plan.profile.name})", times, quiet=cfg.quiet):
        built = build_serialized(plan, trt)

    timing = {"path": str(plan.timing_cache_path) if plan.timing_cache_path else None,
              "loaded": built.timing_cache_loaded, "saved": False}
    if built.timing_cache is not None and plan.timing_cache_path is not None:
        # Update the cache unless an existing file belongs to another GPU/TensorRT (then leave it alone).
        if built.timing_cache_loaded or not plan.timing_cache_path.exists():
            write_bytes_atomic(plan.timing_cache_path, built.timing_cache)
            timing["saved"] = True
        else:
            timing["note"] = "existing cache was made elsewhere; left unchanged"

    inspector = parse_inspector(built.inspector_json)
    record = engine_record(plan=plan, trt_version=version, gpu=gpu.to_dict(),
                           engine_bytes=len(built.plan_bytes), engine_sha256=_sha256(built.plan_bytes),
                           onnx_sha256=bundle.manifest["files"].get(plan.onnx_path.name, {}).get("sha256", ""),
                           io=built.io, layers=layer_stats(inspector), placement=built.placement,
                           build_seconds=built.seconds, timing_cache=timing, warnings=built.warnings,
                           measured=measured_placement(inspector, built.placement_report, plan.profile.uses_dla))
    write_text_atomic(plan.layers_path, json.dumps(inspector, indent=2) + "\n")
    write_bytes_atomic(plan.engine_path, built.plan_bytes)
    write_text_atomic(plan.sidecar_path, json.dumps(record, indent=2) + "\n")
    return BuildResult(plan=plan, trtexec=trtexec_commands(plan), dry_run=False, record=record, times=times)
