"""What each TensorRT version allows on the Orin DLA, and where a build's DLA layers really landed.

Pure (no TensorRT): the plan asks `check_dla_build` before anything is built, the adapter asks
`dla_parser_flags` which ONNX parser flags to set, and engine_info turns the builder's placement report
into the measured placement. Sources, checked by hand (keep them when editing):

- Strongly typed DLA is new in TensorRT 11.4.1 ("Strongly typed networks for DLA", 11.4.1 release notes;
  docs.nvidia.com/deeplearning/tensorrt/11.4.1/inference-library/dla-strongly-typed-networks.html), and
  only on Jetson AGX Orin with JetPack 7.2.2+. TensorRT 11.0–11.3 had no DLA, 11.4.0 only on Windows on ARM
  (…/11.4.1/inference-library/work-with-dla.html).
- TensorRT 10.x builds DLA engines weakly typed: its DLA guide runs "networks in FP16 and INT8 mode"
  (`trtexec --useDLACore=0 --fp16`), and its own trtexec sets BuilderFlag.kFP16 (unless INT8) and
  kPREFER_PRECISION_CONSTRAINTS on every DLA build (NVIDIA/TensorRT v10.3.0,
  samples/common/sampleEngines.cpp, the `sys.DLACore` block; still so in v10.16, dropped in v11.0), while
  a STRONGLY_TYPED network forbids precision settings (10.3's NetworkDefinitionCreationFlag docs). This
  toolkit builds strongly typed only, so a DLA build on 10.x is refused.
- `OnnxParserFlag.ADJUST_FOR_DLA` exists from TensorRT 10.16 (NVIDIA/TensorRT CHANGELOG "10.16 GA",
  python/src/parsers/pyOnnx.cpp) and in 11.x; the 10.3 bindings have only NATIVE_INSTANCENORM.
- The builder reports the placement it chose at INFO level: "--------------- Layers running on DLA:" then
  one "[DlaLayer] {ForeignNode[…]}" per DLA subgraph, then "Layers running on GPU:" with
  "[GpuLayer] TYPE: name" lines (NVIDIA/TensorRT v10.16 samples/sampleCudla/README.md; the
  NVIDIA-AI-IOT/jetson_dla_tutorial README shows the TensorRT 8.4 spelling "---------- Layers Running on
  DLA ----------"). The DLA subgraphs are the engine inspector's "{ForeignNode[…]}" layers of that name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import ProfileError

# (major, minor, patch) from which a feature exists.
STRONGLY_TYPED_DLA_FROM = (11, 4, 1)
ADJUST_FOR_DLA_FROM = (10, 16, 0)
DLA_ALTERNATIVE = ("use the orin-fp16 preset (the Orin GPU) on JetPack 6, or build DLA engines with TensorRT "
                   "11.4.1+ on JetPack 7.2.2+")


def version_tuple(version: str) -> tuple[int, int, int]:
    """`"10.3.0.30"` → (10, 3, 0); missing or non-numeric parts count as 0."""
    parts = []
    for piece in version.split(".")[:3]:
        m = re.match(r"\d+", piece)
        parts.append(int(m.group()) if m else 0)
    return tuple(parts + [0] * (3 - len(parts)))  # type: ignore[return-value]


def check_dla_build(profile_name: str, trt_version: str) -> None:
    """Refuse a DLA build this TensorRT version cannot do strongly typed (one-line ProfileError).

    Raises:
        ProfileError: TensorRT 10.x (DLA only weakly typed) or 11.0–11.4.0 (no DLA on Jetson).
    """
    v = version_tuple(trt_version)
    short = ".".join(map(str, v))
    if v[0] < 11:
        raise ProfileError(f"profile {profile_name!r} builds for the DLA, but TensorRT {short} builds DLA engines "
                           "only weakly typed (BuilderFlag FP16/INT8) and tokcomp builds strongly typed networks",
                           DLA_ALTERNATIVE)
    if v < STRONGLY_TYPED_DLA_FROM:
        raise ProfileError(f"profile {profile_name!r} builds for the DLA, but TensorRT {short} has no DLA on Jetson "
                           "(11.0–11.4.0)", DLA_ALTERNATIVE)


def dla_parser_flags(trt_version: str) -> tuple[str, ...]:
    """`trt.OnnxParserFlag` member names to set for a DLA build with this TensorRT version."""
    return ("ADJUST_FOR_DLA",) if version_tuple(trt_version) >= ADJUST_FOR_DLA_FROM else ()


def autocast_has_dla_target() -> bool | None:
    """Whether ModelOpt AutoCast's `convert_to_mixed_precision` takes a DLA target option (None: no ModelOpt).

    TensorRT 11.4.1's DLA guide converts with `python -m modelopt.onnx.autocast --target_dla`; no released
    nvidia-modelopt (0.47.0, the newest) has it in AutoCast — its `target_dla` is an INT8 option of
    `modelopt.onnx.quantization.quantize` (Q/DQ placement for DLA).
    """
    import inspect

    try:
        from modelopt.onnx.autocast import convert_to_mixed_precision
    except ImportError:
        return None
    return "target_dla" in inspect.signature(convert_to_mixed_precision).parameters


# -- the builder's placement report ------------------------------------------------------------------

_SECTION = re.compile(r"Layers\s+running\s+on\s+(DLA|GPU)", re.IGNORECASE)
_DLA_LINE = re.compile(r"^\s*\[DlaLayer\]\s*(.*?),?\s*$")
_GPU_LINE = re.compile(r"^\s*\[GpuLayer\]\s*([A-Z_0-9]+):\s*(.*?),?\s*$")


@dataclass
class PlacementReport:
    """The builder's own list of engine layers per device (after fusion).

    Attributes:
        dla: names of the DLA subgraphs ("{ForeignNode[…]}"), one per DLA loadable.
        gpu: (TensorRT layer type, name) of the layers that run on the GPU.
        seen: whether the report's "Layers running on DLA" heading was logged at all.
    """

    dla: list[str] = field(default_factory=list)
    gpu: list[tuple[str, str]] = field(default_factory=list)
    seen: bool = False


def is_placement_message(msg: str) -> bool:
    """A builder log message that belongs to the placement report (the logger keeps only these at INFO)."""
    return bool(_SECTION.search(msg)) or "[DlaLayer]" in msg or "[GpuLayer]" in msg


def parse_placement_report(messages: list[str]) -> PlacementReport:
    """Read the report out of builder log messages (one message per line, any TensorRT prefix stripped)."""
    report = PlacementReport()
    for raw in messages:
        for line in raw.splitlines():
            msg = line.strip()
            for tag in ("[DlaLayer]", "[GpuLayer]"):  # drop a "[date] [I] [TRT] " prefix (trtexec's log)
                if (at := msg.find(tag)) > 0:
                    msg = msg[at:]
            if _SECTION.search(msg):
                report.seen = True
                continue
            if m := _DLA_LINE.match(msg):
                report.dla.append(m.group(1))
            elif m := _GPU_LINE.match(msg):
                report.gpu.append((m.group(1), m.group(2)))
    return report
