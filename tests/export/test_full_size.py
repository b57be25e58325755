"""Full-size towers export and pass parity (slow: tens of seconds to minutes each on 2 cores)."""

import pytest

from tokcomp_edge.core.bundle import Bundle
from tokcomp_edge.export import ExportConfig, export_bundle


@pytest.mark.slow
@pytest.mark.parametrize("model,spec,tokens_out,dim_out,layer", [
    ("siglip-b16-224", "pool:2", 49, 768, -1),
    ("clip-l14-336", "unshuffle:2", 144, 4096, -2),  # LLaVA-1.5: penultimate layer, 24x24 grid
])
def test_full_size_export(tmp_path, model, spec, tokens_out, dim_out, layer):
    res = export_bundle(ExportConfig(model=model, compress=spec, out=tmp_path / "b", layer=layer, batch_max=4,
                                     quiet=True))
    assert res.parity.passed
    m = Bundle.load(res.path).manifest
    assert (m["tokens_out"], m["dim_out"]) == (tokens_out, dim_out)
    if layer == -2:
        assert m["encoder"]["layers_run"] == m["encoder"]["num_layers"] - 1
