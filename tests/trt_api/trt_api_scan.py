"""Collect every TensorRT name our code uses, by AST, and check it against a bindings module.

Two kinds of use are collected from the source files that import TensorRT (through
`import_tensorrt`) — the engine adapter and the validation runner:

- module paths rooted at the name `trt`: `trt.BuilderFlag.GPU_FALLBACK`, `trt.Builder`, …
- members of TensorRT objects held in variables named after what they hold (the adapter's
  convention): `config.set_flag(…)` is IBuilderConfig.set_flag used as a call, `tensor.allowed_formats = …`
  is ITensor.allowed_formats used as an attribute. `self.engine` / `self._engine` count too.

The check runs inside a subprocess that imported the bindings: a path must resolve attribute by
attribute; a member must exist on the class, and be a method when called / not a method when read
or assigned (calling a property, or reading a method, fails at run time just the same).
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "tokcomp_edge"

# Variable name → TensorRT Python class of the object it holds.
ROLES = {
    "builder": "Builder",
    "config": "IBuilderConfig",
    "network": "INetworkDefinition",
    "parser": "OnnxParser",
    "profile": "IOptimizationProfile",
    "cache": "ITimingCache",
    "runtime": "Runtime",
    "engine": "ICudaEngine",
    "inspector": "EngineInspector",
    "context": "IExecutionContext",
    "ctx": "IExecutionContext",
    "tensor": "ITensor",
    "layer": "ILayer",
    "error": "ParserError",
    "serialized": "IHostMemory",
}


@dataclass(frozen=True, order=True)
class Use:
    """One use of the TensorRT API in our source.

    Attributes:
        kind: "path" (trt.A.B…) or "member" (role object's attribute).
        name: dotted path below `trt` ("BuilderFlag.FP16"), or "Class.member".
        how: "call" or "attr" for members; "" for paths.
        where: "file:line" of the first use.
    """

    kind: str
    name: str
    how: str
    where: str


def trt_source_files() -> list[Path]:
    """Our modules that use TensorRT: those calling import_tensorrt (or a wrapper of it)."""
    files = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if path.name == "trt_import.py":
            continue
        if "import_tensorrt" in text or "load_tensorrt" in text or path.name == "trt_build.py":
            files.append(path)
    return files


def _chain(node: ast.AST) -> list[str] | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return parts[::-1]
    return None


def _role_of(value: ast.AST) -> str | None:
    if isinstance(value, ast.Name) and value.id in ROLES:
        return value.id
    if (isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name) and value.value.id == "self"
            and value.attr.lstrip("_") in ROLES):
        return value.attr.lstrip("_")
    return None


def scan_source(text: str, filename: str = "<src>") -> list[Use]:
    """All uses in one module's source (duplicates removed, first location kept)."""
    tree = ast.parse(text, filename=filename)
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    # An Attribute that is itself the value of another Attribute is only a prefix of a longer chain.
    prefixes = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    uses: dict[tuple[str, str, str], Use] = {}
    short = Path(filename).name
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        where = f"{short}:{node.lineno}"
        chain = _chain(node)
        if chain and chain[0] == "trt" and id(node) not in prefixes:
            key = ("path", ".".join(chain[1:]), "")
            uses.setdefault(key, Use("path", key[1], "", where))
        role = _role_of(node.value)
        if role is not None:
            how = "call" if id(node) in called else "attr"
            key = ("member", f"{ROLES[role]}.{node.attr}", how)
            uses.setdefault(key, Use("member", key[1], how, where))
    return sorted(uses.values())


def scan_files(paths: list[Path]) -> list[Use]:
    seen: dict[tuple[str, str, str], Use] = {}
    for path in paths:
        for use in scan_source(path.read_text(encoding="utf-8"), str(path)):
            seen.setdefault((use.kind, use.name, use.how), use)
    return sorted(seen.values())


# Runs inside the subprocess that has the bindings on sys.path. Reads the uses as JSON from argv[1],
# prints one JSON list of problems: [name, how, where, problem].
CHECKER = r"""
import inspect, json, sys
import tensorrt_bindings as trt

uses = json.loads(open(sys.argv[1]).read())
problems = []
for kind, name, how, where in uses:
    if kind == "path":
        obj = trt
        for part in name.split("."):
            if not hasattr(obj, part):
                problems.append([name, how, where, f"trt.{name} does not exist"])
                break
            obj = getattr(obj, part)
        continue
    cls_name, member = name.split(".", 1)
    cls = getattr(trt, cls_name, None)
    if cls is None:
        problems.append([name, how, where, f"class trt.{cls_name} does not exist"])
        continue
    try:
        static = inspect.getattr_static(cls, member)
    except AttributeError:
        problems.append([name, how, where, f"trt.{cls_name} has no member {member}"])
        continue
    is_property = isinstance(static, property)
    is_method = callable(static) and not is_property and not isinstance(static, type)
    if how == "call" and is_property:
        problems.append([name, how, where, f"trt.{cls_name}.{member} is a property, not a method"])
    if how == "attr" and is_method:
        problems.append([name, how, where, f"trt.{cls_name}.{member} is a method: call it"])
print(json.dumps(problems))
"""


def check_uses(bindings, uses: list[Use], tmp_dir: Path) -> list[list[str]]:
    """Problems of `uses` against one bindings version (empty when every name fits)."""
    data = tmp_dir / f"uses-{bindings.label}.json"
    data.write_text(json.dumps([[u.kind, u.name, u.how, u.where] for u in uses]))
    proc = bindings.run(CHECKER, str(data))
    if proc.returncode != 0:
        raise RuntimeError(f"checker failed for TensorRT {bindings.version}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)
