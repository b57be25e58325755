"""Export stage: encoder + compressor → checked ONNX bundle (manifest + golden reference)."""

from .config import ExportConfig, ExportResult, ParityResult, Tolerance  # noqa: F401


def export_bundle(cfg: ExportConfig) -> ExportResult:
    """See `tokcomp_edge.export.pipeline.export_bundle` (imported lazily: it pulls in torch)."""
    from .pipeline import export_bundle as _export

    return _export(cfg)
