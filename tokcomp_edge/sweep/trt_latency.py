"""`--backend tensorrt`: a TensorRT engine per candidate, made and timed by the project's own parts.

Per candidate, in order (each step is the one `tokcomp` itself uses, nothing re-written here):
1. export: the candidate's vision path with the normal pipeline (`export_bundle`: the ONNX graph, parity on
   ONNX Runtime CPU, the manifest), at a static batch of 1 — the latency is measured at batch 1, as the
   ONNX Runtime backend measures it;
2. build: `tokcomp build`'s `build_engine` on that bundle with the sweep's build profile — strongly typed,
   the precision from the profile's ONNX variant (an fp16 profile makes the AutoCast fp16 variant first),
   the optimisation profile from the manifest (batch 1/1/1, the tile size);
3. time: the device runtime's `TrtBackend` on the engine (matched to its bundle by engine.json), all
   candidates interleaved in cost.py.

Everything is written under one scratch folder beside the sweep's output folder and removed when the timing
ends, successful or not: a candidate's engine is a measuring instrument, not an artifact (the pick's own
engine, with `--export`, is built from the exported bundle in the sweep's folder). Without TensorRT or a GPU
`require_tensorrt` raises RuntimeMissing (exit 3), which the sweep calls before loading any model.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError

DEFAULT_PROFILE = "fp16"  # as `tokcomp build`


def require_tensorrt() -> dict[str, str]:
    """TensorRT's bindings and a CUDA GPU, or RuntimeMissing (exit 3) in one line — no model is touched.

    Returns:
        {"tensorrt": version, "gpu": device name}.
    """
    from ..engines.trt_import import import_tensorrt, require_gpu, trt_version

    trt = import_tensorrt()
    gpu = require_gpu()
    return {"tensorrt": trt_version(trt), "gpu": gpu.name}


def check_profile(profile: str | Path | None):
    """The build profile the engines are built with (a preset or a TOML file, as `tokcomp build --profile`).

    Raises:
        ProfileError (exit 2): an unknown preset, a bad file.
        InputError (exit 2): an int8 profile (it needs a calibrated variant, which a sweep candidate has not).
    """
    from ..engines.profile import load_profile

    p = load_profile(profile if profile is not None else DEFAULT_PROFILE)
    if p.precision == "int8":
        raise InputError(f"--profile {p.name!r} builds INT8, which needs a calibrated Q/DQ variant of each candidate",
                         "time the candidates with --profile fp16 (or fp32); calibrate the exported pick afterwards")
    return p


@dataclass(frozen=True)
class EngineJob:
    """One candidate's engine: where its bundle and engine go, and with which build profile.

    Attributes:
        spec: the candidate's compression spec.
        bundle: the bundle folder (exported at batch 1).
        engines_dir: the engines root for `build_engine`.
        profile: preset name or TOML path.
    """

    spec: str
    bundle: Path
    engines_dir: Path
    profile: str | Path

    def export_config(self, model: str):
        from ..export import ExportConfig

        # Static batch 1: the figure is batch-1 latency; the build's lint runs in build_engine (an error stops it).
        return ExportConfig(model=model, compress=self.spec, out=self.bundle, batch_min=1, batch_max=1, lint=False,
                            quiet=True)

    def build_config(self):
        from ..engines.build import BuildConfig

        return BuildConfig(bundle=self.bundle, profile=self.profile, engines_dir=self.engines_dir, quiet=True)


def plan_jobs(specs: list[str], profile: str | Path, scratch: Path) -> list[EngineJob]:
    """One EngineJob per candidate: its bundle in its own folder of `scratch` (the folder name is the bundle's
    name, which names its engine folder), one engines root for all, so that every build after the first reads
    and extends the same timing cache (profile `timing_cache = "auto"`: the towers' layers repeat)."""
    from ..compression import parse_spec

    return [EngineJob(spec=spec, bundle=scratch / f"{i:02d}_{parse_spec(spec).slug}", engines_dir=scratch / "engines",
                      profile=profile) for i, spec in enumerate(specs)]


def prepare(job: EngineJob, model: str):
    """Export the candidate and return the BuildPlan `build_engine` will execute (needs no TensorRT)."""
    from ..engines.build import plan_build
    from ..export import export_bundle

    export_bundle(job.export_config(model))
    return plan_build(job.build_config())[2]


def plan_facts(plan) -> dict[str, Any]:
    """What sweep.json records of a candidate's build: profile, precision, the ONNX variant and its shapes."""
    inp = plan.inputs[0]
    return {"profile": plan.profile.name, "precision": plan.profile.precision, "variant": plan.variant,
            "onnx": plan.onnx_path.name, "input": inp.name,
            "shapes": {"min": list(inp.shape_min), "opt": list(inp.shape_opt), "max": list(inp.shape_max)}}


@dataclass
class TrtEngines:
    """The TensorRT latency set-up of one sweep: the model, the profile, where the scratch folder goes.

    Attributes:
        model: the sweep's `hf:` folder (what each candidate is exported from).
        profile: build profile (preset or TOML).
        beside: the sweep's output folder; the scratch folder is made in its parent.
        records: per spec, what was built (variant, engine bytes, build seconds, export seconds), after `open`.
        label: what ran, after `open` (TensorRT version, GPU, profile).
        timing_caches: the builds' timing cache files (name → bytes), kept from the scratch folder after `open`
            so that the pick's own build (--export) starts from them (`seed_timing_caches`).
    """

    model: str
    profile: str | Path
    beside: Path
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    label: str = ""
    timing_caches: dict[str, bytes] = field(default_factory=dict)

    def seed_timing_caches(self, engines_dir: Path) -> list[Path]:
        """Write the kept timing caches into `engines_dir/timing/` (where profile `timing_cache = "auto"` reads
        them); a cache made on another GPU/TensorRT would be refused by the build and left alone."""
        from ..atomic import write_bytes_atomic

        written = []
        for name, data in self.timing_caches.items():
            write_bytes_atomic(Path(engines_dir) / "timing" / name, data)
            written.append(Path(engines_dir) / "timing" / name)
        return written

    @contextlib.contextmanager
    def open(self, specs: list[str], starting: Callable[[str], None] | None = None,
             done: Callable[[str], None] | None = None) -> Iterator[dict[str, Any]]:
        """Export, build and open every candidate's engine; yield spec → TrtBackend; close and remove all after.

        Args:
            specs: the candidates, in timing order.
            starting: called with a spec before its export + build (builds take minutes: the progress line).
            done: called with a spec once its engine is open.
        """
        from ..core.bundle import Bundle
        from ..engines.build import build_engine
        from ..runtime.backends import TrtBackend

        beside = Path(self.beside)
        beside.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{beside.name}.engines-", dir=beside.parent))
        backends: dict[str, Any] = {}
        try:
            for job in plan_jobs(specs, self.profile, scratch):
                if starting:
                    starting(job.spec)
                t0 = time.perf_counter()
                planned = prepare(job, self.model)
                t1 = time.perf_counter()
                built = build_engine(job.build_config())
                backend = TrtBackend(Bundle.load(job.bundle), built.engine_path)
                backends[job.spec] = backend
                self.records[job.spec] = {**plan_facts(planned), "variant": built.plan.variant,
                                          "engine_bytes": (built.record or {}).get("engine", {}).get("bytes"),
                                          "export_s": t1 - t0, "build_s": time.perf_counter() - t1}
                self.label = backend.label
                if done:
                    done(job.spec)
            yield backends
        finally:
            for backend in backends.values():
                with contextlib.suppress(Exception):  # closing must not hide the error that got us here
                    backend.close()
            with contextlib.suppress(OSError):
                # (not named `cache`: tests/trt_api reads that name as a TensorRT ITimingCache)
                for cache_file in sorted((scratch / "engines" / "timing").glob("*.cache")):
                    self.timing_caches[cache_file.name] = cache_file.read_bytes()
            shutil.rmtree(scratch, ignore_errors=True)
