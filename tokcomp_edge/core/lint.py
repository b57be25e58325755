"""CPU-only TensorRT-compatibility lint: will TensorRT's ONNX parser take this graph?

No machine we develop on has TensorRT, and the parser is the first place a build fails, so the lint
checks the graph against the parser's published operator table (`lint_ops.py`) and the restrictions
its importers enforce, naming every offending node. Severity:

- error: TensorRT rejects it, builds it only through a plugin, or the engine could not keep the
  graph's contract (static token count, I/O dtypes). `tokcomp lint` exits 1; `build` refuses to start.
- warning: it builds, but something deserves a look (control flow, data-dependent shapes, ops or
  opsets newer than JetPack 6's TensorRT 10.3, float64 weights cast down to float32).

The lint reads the graph only (models with external data are loaded without it), so it takes
milliseconds even for large encoders.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BundleError, InputError, LintError
from . import lint_ops as ops
from .lint_checks import ERROR, OP_CHECKS, WARNING
from .lint_graph import (
    ConstResolver,
    NodeRef,
    missing_external_files,
    static_shapes,
    walk,
)


@dataclass(frozen=True)
class LintIssue:
    """One finding. `node` is the node's name (or `#<index> <op>`), `op_type` the ONNX op."""

    severity: str
    node: str
    op_type: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class LintReport:
    """All findings for one model; truthy when there is no error (warnings do not fail it)."""

    source: str
    opset: int | None
    opset_range: tuple[int, int]
    nodes: int
    issues: list[LintIssue] = field(default_factory=list)

    @property
    def errors(self) -> list[LintIssue]:
        return [i for i in self.issues if i.severity == ERROR]

    @property
    def warnings(self) -> list[LintIssue]:
        return [i for i in self.issues if i.severity == WARNING]

    def __bool__(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        verdict = "TensorRT's parser should take it" if self else "TensorRT would not build it"
        return (f"{self.source}: {self.nodes} nodes, opset {self.opset}: {len(self.errors)} error(s), "
                f"{len(self.warnings)} warning(s) — {verdict}")

    def format(self) -> list[str]:
        """One line per issue (errors first), then the summary line."""
        ordered = self.errors + self.warnings
        return [f"{i.severity}: {i.node} ({i.op_type}): {i.message}" for i in ordered] + [self.summary()]

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "opset": self.opset, "opset_range": list(self.opset_range),
                "nodes": self.nodes, "passed": bool(self), "errors": len(self.errors),
                "warnings": len(self.warnings), "issues": [i.to_dict() for i in self.issues]}

    def raise_for_errors(self) -> None:
        """Raise LintError (exit 1) naming the first offending node when there is any error."""
        if self:
            return
        first = self.errors[0]
        more = f" (and {len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
        raise LintError(f"{self.source} would not build with TensorRT: {first.node} ({first.op_type}): "
                        f"{first.message}{more}",
                        "run `tokcomp lint` on it for the full list; re-export without the offending ops")


# --- entry points ---------------------------------------------------------------------------------


def lint_model(model_or_path, *, opset_range: tuple[int, int] = ops.PARSER_OPSET_RANGE) -> LintReport:
    """Lint an ONNX model against what TensorRT's ONNX parser supports and restricts.

    Args:
        model_or_path: an `onnx.ModelProto`, or the path of an .onnx file (loaded without external data;
            the external files are only checked to exist).
        opset_range: inclusive range of default-domain opsets to accept (the parser's by default).
    Returns:
        LintReport; `bool(report)` is False when TensorRT would not build the graph.
    Raises:
        InputError: the path does not exist or is not an ONNX file.
    """
    import onnx

    base_dir: Path | None = None
    if isinstance(model_or_path, (str, Path)):
        path = Path(model_or_path)
        if not path.is_file():
            raise InputError(f"{path} is not a file", "pass an .onnx file or a bundle folder")
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # protobuf raises DecodeError and friends
            raise InputError(f"{path} is not a readable ONNX model ({type(exc).__name__})",
                             "pass an .onnx file written by `tokcomp export` or torch.onnx") from exc
        source, base_dir = str(path), path.parent
    else:
        model, source = model_or_path, model_or_path.graph.name or "<model>"
    lo, hi = opset_range
    if lo > hi:
        raise InputError(f"opset range {lo}–{hi} is empty", "pass a minimum ≤ maximum")

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    issues: list[LintIssue] = list(_model_issues(model, opset, opset_range, base_dir))
    shapes = static_shapes(model)
    functions = {(f.domain, f.name): f for f in model.functions}
    consts = ConstResolver(model.graph, shapes)
    count = 0
    for ref in walk(model.graph, consts, functions):
        count += 1
        issues.extend(_node_issues(ref, opset or 0, functions))
    return LintReport(source=source, opset=opset, opset_range=(lo, hi), nodes=count, issues=issues)


def lint_path(path: str | Path, *, variant: str = "fp32",
              opset_range: tuple[int, int] = ops.PARSER_OPSET_RANGE) -> LintReport:
    """Lint a bundle's variant (`model.onnx` for fp32, `model.fp16.onnx`, …) or a bare .onnx file.

    Raises:
        BundleError: a folder that is not a bundle, or a bundle without that variant.
        InputError: `variant` given for a bare .onnx file, or a missing path.
    """
    from .bundle import MANIFEST, Bundle

    path = Path(path)
    if path.is_dir() or path.name == MANIFEST:
        bundle = Bundle.load(path, verify=False)
        return lint_model(bundle.onnx_path(variant), opset_range=opset_range)
    if not path.exists():
        raise InputError(f"{path} does not exist", "pass a bundle folder or an .onnx file")
    if variant != "fp32":
        raise BundleError(f"--variant {variant} needs a bundle folder, but {path} is a single file",
                          "pass the bundle folder, or lint the variant's .onnx file directly")
    return lint_model(path, opset_range=opset_range)


# --- model-level checks ---------------------------------------------------------------------------


def _model_issues(model, opset: int | None, opset_range: tuple[int, int],
                  base_dir: Path | None) -> Iterator[LintIssue]:
    lo, hi = opset_range
    if opset is None:
        yield LintIssue(ERROR, "<model>", "opset", "the model imports no default-domain (ai.onnx) opset")
    elif not lo <= opset <= hi:
        yield LintIssue(ERROR, "<model>", "opset",
                        f"opset {opset} is outside the accepted {lo}–{hi} (TensorRT's ONNX parser documents "
                        f"{ops.PARSER_OPSET_RANGE[0]}–{ops.PARSER_OPSET_RANGE[1]}); re-export with an opset in "
                        f"range (tokcomp export --opset)")
    elif opset > ops.JETPACK6_MAX_OPSET:
        yield LintIssue(WARNING, "<model>", "opset",
                        f"opset {opset} is newer than {ops.JETPACK6_MAX_OPSET}, the last opset the TensorRT "
                        f"10.0–10.2 table covers; JetPack 6 ships TensorRT {ops.JETPACK6_TRT} — export with "
                        f"--opset {ops.JETPACK6_MAX_OPSET} for Jetson")
    g = model.graph
    for kind, values in (("input", g.input), ("output", g.output)):
        for vi in values:
            elem = vi.type.tensor_type.elem_type
            if not vi.type.HasField("tensor_type"):  # checked first: elem is 0 for non-tensors
                yield LintIssue(ERROR, vi.name, f"graph {kind}",
                                "is not a tensor (sequences/maps/optionals are not TensorRT I/O)")
            elif elem == ops.DOUBLE:
                yield LintIssue(ERROR, vi.name, f"graph {kind}",
                                "is float64; TensorRT has no float64 type, so the engine's binding would be "
                                "float32, not what the ONNX declares — export float32 I/O")
            elif elem not in ops.TRT_DTYPES:
                yield LintIssue(ERROR, vi.name, f"graph {kind}",
                                f"has dtype {ops.dtype_name(elem)}, which TensorRT does not support as I/O")
    for t in g.initializer:
        if t.data_type == ops.DOUBLE:
            yield LintIssue(WARNING, t.name, "initializer",
                            "float64 weights: the parser casts them down to float32 (clamping to ±FLT_MAX)")
        elif t.data_type not in ops.TRT_DTYPES:
            yield LintIssue(ERROR, t.name, "initializer",
                            f"dtype {ops.dtype_name(t.data_type)} is not a TensorRT type")
    for name, location in missing_external_files(model, base_dir):
        yield LintIssue(ERROR, name, "initializer",
                        f"external data file {location!r} is missing beside the model; the parser needs it")


# --- node-level checks ----------------------------------------------------------------------------


def _node_issues(ref: NodeRef, opset: int, functions: dict) -> Iterator[LintIssue]:
    node, name = ref.node, ref.name
    op = node.op_type

    def issue(severity: str, message: str) -> LintIssue:
        return LintIssue(severity, name, op, message)

    if node.domain not in ("", "ai.onnx"):
        if (node.domain, op) in functions:
            return  # the parser imports model-local functions; their bodies are linted by `walk`
        yield issue(ERROR, f"custom op in domain {node.domain!r}: TensorRT builds it only with a plugin "
                           f"named {op!r}; export with standard ONNX ops")
        return
    if op in ops.UNSUPPORTED_OPS:
        extra = " (its output shape depends on the data)" if op in ops.DATA_DEPENDENT_OPS else ""
        yield issue(ERROR, f"not supported by TensorRT's ONNX parser{extra} (onnx-tensorrt operator table)")
        return
    if op not in ops.SUPPORTED_OPS:
        yield issue(ERROR, "not in the onnx-tensorrt operator table, so the parser has no importer for it")
        return
    if op in ops.SUPPORTED_SINCE:
        yield issue(WARNING, f"supported only from TensorRT {ops.SUPPORTED_SINCE[op]}; JetPack 6's "
                             f"TensorRT {ops.JETPACK6_TRT} rejects it")
    if op in ops.DATA_DEPENDENT_OPS:
        yield issue(WARNING, "data-dependent output shape: parses, but shapes after it are known only at run "
                             "time (no DLA, no static token count)")
    if op in ops.CONTROL_FLOW_OPS:
        yield issue(WARNING, f"{op} becomes a TensorRT loop/conditional construct: it builds, but runs slower "
                             "than straight-line layers; prefer a graph without control flow")
    check = OP_CHECKS.get(op)
    if check is not None:
        for severity, message in check(node, ref.consts, opset):
            yield issue(severity, message)
