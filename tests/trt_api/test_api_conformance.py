"""Every TensorRT name our code uses exists — with the right kind — in TensorRT 10.3 AND 11.x.

No machine we develop on has TensorRT, so this is how a TRT-11-only or TRT-10-only call (or a
property called like a method) is caught before it reaches a Jetson.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from trt_api_scan import PACKAGE, Use, check_uses, scan_files, scan_source, trt_source_files

ADAPTER = PACKAGE / "engines" / "trt_build.py"

# The calls the adapter makes on builder/config/network/parser/engine objects, listed by hand as well:
# a floor the AST scan must reach, and names the scan cannot see (methods on call results, e.g.
# `config.get_timing_cache().serialize()`).
EXPLICIT: list[tuple[str, str, str]] = [
    ("member", "Builder.create_network", "call"),
    ("member", "Builder.create_builder_config", "call"),
    ("member", "Builder.create_optimization_profile", "call"),
    ("member", "Builder.build_serialized_network", "call"),
    ("member", "Builder.num_DLA_cores", "attr"),
    ("member", "IBuilderConfig.add_optimization_profile", "call"),
    ("member", "IBuilderConfig.set_memory_pool_limit", "call"),
    ("member", "IBuilderConfig.set_flag", "call"),
    ("member", "IBuilderConfig.create_timing_cache", "call"),
    ("member", "IBuilderConfig.set_timing_cache", "call"),
    ("member", "IBuilderConfig.get_timing_cache", "call"),
    ("member", "IBuilderConfig.can_run_on_DLA", "call"),
    ("member", "IBuilderConfig.builder_optimization_level", "attr"),
    ("member", "IBuilderConfig.profiling_verbosity", "attr"),
    ("member", "IBuilderConfig.hardware_compatibility_level", "attr"),
    ("member", "IBuilderConfig.default_device_type", "attr"),
    ("member", "IBuilderConfig.DLA_core", "attr"),
    ("member", "INetworkDefinition.get_input", "call"),
    ("member", "INetworkDefinition.get_layer", "call"),
    ("member", "INetworkDefinition.num_inputs", "attr"),
    ("member", "INetworkDefinition.num_layers", "attr"),
    ("member", "OnnxParser.parse_from_file", "call"),
    ("member", "OnnxParser.get_error", "call"),
    ("member", "OnnxParser.num_errors", "attr"),
    ("member", "OnnxParser.set_flag", "call"),
    ("member", "ParserError.desc", "call"),
    ("member", "ParserError.node", "call"),
    ("member", "ParserError.node_name", "call"),
    ("member", "ParserError.node_operator", "call"),
    ("member", "ParserError.code", "call"),
    ("member", "ITensor.name", "attr"),
    ("member", "ITensor.dtype", "attr"),
    ("member", "ITensor.allowed_formats", "attr"),
    ("member", "IOptimizationProfile.set_shape", "call"),
    ("member", "ITimingCache.serialize", "call"),
    ("member", "Runtime.deserialize_cuda_engine", "call"),
    ("member", "Runtime.engine_host_code_allowed", "attr"),
    ("member", "ICudaEngine.create_engine_inspector", "call"),
    ("member", "ICudaEngine.create_execution_context", "call"),
    ("member", "ICudaEngine.num_io_tensors", "attr"),
    ("member", "ICudaEngine.get_tensor_name", "call"),
    ("member", "ICudaEngine.get_tensor_mode", "call"),
    ("member", "ICudaEngine.get_tensor_dtype", "call"),
    ("member", "ICudaEngine.get_tensor_shape", "call"),
    ("member", "ICudaEngine.get_tensor_format", "call"),
    ("member", "ICudaEngine.get_tensor_format_desc", "call"),
    ("member", "EngineInspector.get_engine_information", "call"),
    ("member", "EngineInspector.execution_context", "attr"),
    ("member", "IExecutionContext.set_input_shape", "call"),
    ("path", "NetworkDefinitionCreationFlag.STRONGLY_TYPED", ""),
    ("path", "BuilderFlag.GPU_FALLBACK", ""),
    ("path", "BuilderFlag.VERSION_COMPATIBLE", ""),
    ("path", "MemoryPoolType.WORKSPACE", ""),
    ("path", "ProfilingVerbosity.DETAILED", ""),
    ("path", "HardwareCompatibilityLevel.AMPERE_PLUS", ""),
    ("path", "DeviceType.DLA", ""),
    ("path", "TensorFormat.HWC", ""),
    ("path", "TensorFormat.HWC8", ""),
    ("path", "TensorFormat.HWC16", ""),
    ("path", "LayerInformationFormat.JSON", ""),
    ("path", "TensorIOMode.INPUT", ""),
    ("path", "ILogger.Severity.ERROR", ""),
    ("path", "ILogger.Severity.WARNING", ""),
    ("path", "ILogger.Severity.INFO", ""),
    ("path", "OnnxParserFlag", ""),
    ("path", "Builder", ""),
    ("path", "OnnxParser", ""),
    ("path", "Runtime", ""),
]


def _explicit_uses() -> list[Use]:
    return [Use(kind, name, how, "explicit list") for kind, name, how in EXPLICIT]


def _format(problems: list[list[str]]) -> str:
    return "\n".join(f"  {where}: {problem}" for name, how, where, problem in problems)


def test_scan_covers_the_adapter_and_the_runner():
    files = trt_source_files()
    assert ADAPTER in files
    runner = PACKAGE / "validation" / "runners" / "tensorrt.py"
    if runner.exists():
        assert runner in files
    found = {(u.kind, u.name, u.how) for u in scan_files([ADAPTER])}
    # Everything in the explicit list that is written as `<role>.<member>` or `trt.<path>` must be seen
    # by the scan (proves the scan works on the real adapter); only ITimingCache.serialize is invisible.
    invisible = {("member", "ITimingCache.serialize", "call")}
    missing = [e for e in EXPLICIT if e not in found and e not in invisible]
    assert not missing, f"adapter no longer makes these calls, or the scan misses them: {missing}"


@pytest.mark.parametrize("label", ["10.3", "11.4"])
def test_every_used_name_exists(trt_bindings, tmp_path, label):
    bindings = next(b for b in trt_bindings if b.label == label)
    uses = sorted(set(scan_files(trt_source_files())) | set(_explicit_uses()))
    assert len(uses) > 60
    problems = check_uses(bindings, uses, tmp_path)
    assert not problems, f"TensorRT {bindings.version} lacks names our code uses:\n{_format(problems)}"


def test_the_check_catches_version_specific_names(trt_bindings, tmp_path):
    """Names that exist in only one major — and a property called like a method — are reported."""
    src = """
def bad(trt, config, parser, builder):
    config.set_flag(trt.BuilderFlag.FP16)                           # removed in 11
    config.int8_calibrator = None                                    # removed in 11
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))  # gone in 11
    parser.set_flag(trt.OnnxParserFlag.ADJUST_FOR_DLA)               # new in 11
    n = parser.num_errors()                                          # a property, not a method
    parser.get_error                                                 # a method read as an attribute
"""
    uses = scan_source(src, "bad.py")
    by_version = {b.label: {p[0] for p in check_uses(b, uses, tmp_path)} for b in trt_bindings}
    assert by_version["11.4"] >= {"BuilderFlag.FP16", "IBuilderConfig.int8_calibrator",
                                  "NetworkDefinitionCreationFlag.EXPLICIT_BATCH", "OnnxParser.num_errors",
                                  "OnnxParser.get_error"}
    assert "OnnxParserFlag.ADJUST_FOR_DLA" not in by_version["11.4"]
    assert by_version["10.3"] >= {"OnnxParserFlag.ADJUST_FOR_DLA", "OnnxParser.num_errors", "OnnxParser.get_error"}
    assert "BuilderFlag.FP16" not in by_version["10.3"]
    assert "BuilderFlag.GPU_FALLBACK" not in by_version["10.3"] | by_version["11.4"]


@pytest.mark.parametrize("label", ["10.3", "11.4"])
def test_dla_parser_flags_match_the_bindings(trt_bindings, label):
    """The adapter sets `getattr(trt.OnnxParserFlag, name)` for the names engines/dla.py lists for a version
    (the AST scan cannot see them): each listed name must exist in that version's bindings, and a DLA flag
    the bindings have must be listed (ADJUST_FOR_DLA: absent in 10.3, present in 11.4)."""
    from tokcomp_edge.engines.dla import dla_parser_flags

    bindings = next(b for b in trt_bindings if b.label == label)
    proc = bindings.run("import tensorrt_bindings as trt; print(' '.join(trt.OnnxParserFlag.__members__))")
    assert proc.returncode == 0, proc.stderr
    members = set(proc.stdout.split())
    listed = set(dla_parser_flags(bindings.version))
    assert listed <= members, f"TensorRT {bindings.version} lacks {sorted(listed - members)}"
    assert ("ADJUST_FOR_DLA" in members) == ("ADJUST_FOR_DLA" in listed)


def test_scan_sees_roles_calls_and_self_attributes():
    src = """
def f(trt, config, self):
    config.builder_optimization_level = 3
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    self._engine.get_tensor_name(0)
    self.engine_path.name
    plan.profile.name
"""
    uses = {(u.kind, u.name, u.how) for u in scan_source(src)}
    assert uses == {("member", "IBuilderConfig.builder_optimization_level", "attr"),
                    ("member", "IBuilderConfig.set_flag", "call"),
                    ("path", "BuilderFlag.GPU_FALLBACK", ""),
                    ("member", "ICudaEngine.get_tensor_name", "call")}


def _imports_tensorrt(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] in ("tensorrt", "tensorrt_bindings")
                                                for a in node.names):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("tensorrt",
                                                                                           "tensorrt_bindings"):
            lines.append(node.lineno)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args and isinstance(node.args[0], ast.Constant)
              and str(node.args[0].value).startswith("tensorrt")):
            lines.append(node.lineno)
    return lines


def test_tensorrt_is_imported_only_through_trt_import_and_bound_as_trt():
    offenders, misbound = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if path.name != "trt_import.py":
            offenders += [f"{path.relative_to(PACKAGE)}:{line}" for line in _imports_tensorrt(tree)]
        for node in ast.walk(tree):
            if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                    and isinstance(node.value.func, ast.Name)
                    and node.value.func.id in ("import_tensorrt", "load_tensorrt")):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
                if names != ["trt"]:
                    misbound.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not offenders, f"tensorrt imported outside engines/trt_import.py: {offenders}"
    assert not misbound, f"import_tensorrt() result not bound as `trt`: {misbound}"
    # trt_import itself imports by name through importlib, never a bare `import tensorrt` at module level.
    tree = ast.parse((PACKAGE / "engines" / "trt_import.py").read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert not _imports_tensorrt(ast.Module(body=top, type_ignores=[]))


def test_adapter_never_uses_weak_typing_or_explicit_batch():
    """The one-code-path rule, stated directly: no precision flags, no EXPLICIT_BATCH, STRONGLY_TYPED used."""
    names = {u.name for u in scan_source(ADAPTER.read_text(), str(ADAPTER))}
    forbidden = {"BuilderFlag.FP16", "BuilderFlag.BF16", "BuilderFlag.INT8", "BuilderFlag.FP8",
                 "BuilderFlag.OBEY_PRECISION_CONSTRAINTS", "BuilderFlag.PREFER_PRECISION_CONSTRAINTS",
                 "NetworkDefinitionCreationFlag.EXPLICIT_BATCH", "IBuilderConfig.int8_calibrator",
                 "Builder.platform_has_fast_fp16"}
    assert not names & forbidden
    assert "NetworkDefinitionCreationFlag.STRONGLY_TYPED" in names


def test_cached_bindings_are_the_pinned_versions(trt_bindings):
    assert [b.version for b in trt_bindings] == ["10.3.0", "11.4.0.106"]
    for b in trt_bindings:
        assert Path(b.root, "tensorrt_bindings", f"libnvinfer.so.{b.major}").is_file()
