import pytest

from tokcomp_edge.export import ExportConfig, export_bundle


@pytest.fixture(scope="session")
def export_root(tmp_path_factory):
    return tmp_path_factory.mktemp("bundles")


@pytest.fixture(scope="session")
def make_bundle(export_root):
    """Export (once per session) a tiny bundle for (model, spec, prefix)."""
    cache = {}

    def make(model, spec, prefix=None, **kw):
        key = (model, spec, prefix, tuple(sorted(kw.items())))
        if key not in cache:
            out = export_root / f"{model}_{spec.replace(':', '-')}_{prefix}_{len(cache)}"
            cache[key] = export_bundle(ExportConfig(model=model, compress=spec, out=out, prefix=prefix,
                                                    batch_max=4, quiet=True, **kw))
        return cache[key]

    return make
