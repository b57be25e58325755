"""py:<module>:<factory>: a user's module wrapped as a tower, and every contract violation."""

from __future__ import annotations

import textwrap

import pytest
import torch

from tokcomp_edge.encoders import EncoderConfig, build_encoder, resolve_spec
from tokcomp_edge.errors import InputError

MODULE = textwrap.dedent('''
    import torch
    from torch import nn

    class Enc(nn.Module):
        def __init__(self, cls=False):
            super().__init__()
            self.proj = nn.Conv2d(3, 32, 16, 16)
            self.cls = nn.Parameter(torch.randn(1, 1, 32)) if cls else None
            self.tokcomp_facts = dict(image_size=64, patch_size=16, prefix_tokens=1 if cls else 0,
                                      hidden_size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                                      has_cls=cls, num_layers=1, num_heads=1)

        def forward(self, x):
            t = self.proj(x).flatten(2).transpose(1, 2)
            if self.cls is not None:
                t = torch.cat([self.cls.expand(x.shape[0], -1, -1), t], dim=1)
            return t

        def cls_attention(self, x):
            t = self.forward(x)
            return ((t[:, :1] @ t.transpose(1, 2)).squeeze(1) / 32 ** 0.5).softmax(-1)

    def build():
        return Enc()

    def build_cls():
        return Enc(cls=True)

    def wrong_width():
        m = Enc()
        m.tokcomp_facts = {**m.tokcomp_facts, "hidden_size": 48}
        return m

    def no_facts():
        return nn.Linear(2, 2)

    def bad_facts():
        m = Enc()
        m.tokcomp_facts = {**m.tokcomp_facts, "mean": (0.5, 0.5)}
        return m

    def not_a_module():
        return 3

    def boom():
        raise RuntimeError("boom")

    DRAWS = []

    def records_rng():
        DRAWS.append(torch.rand(3))  # what the factory's initialisation sees
        return Enc()
''')


@pytest.fixture
def usermod(tmp_path, monkeypatch):
    """A fresh module name per test (importlib caches modules by name)."""
    name = f"user_enc_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    import sys

    sys.modules.pop(name, None)


def test_factory_builds_tower(usermod, pixels):
    enc = build_encoder(EncoderConfig(f"py:{usermod}:build"))
    spec = enc.spec
    assert (spec.family, spec.source, spec.image_size, spec.grid, spec.prefix_tokens) == (
        "user", "python", (64, 64), (4, 4), 0)
    assert spec.std == (0.25, 0.25, 0.25) and not spec.has_cls
    x = pixels(size=64)
    with torch.no_grad():
        y, attn = enc.tower(x)
        torch.testing.assert_close(y, enc.tower.user(x), rtol=0, atol=0)
    assert y.shape == (2, 16, 32) and attn is None
    with pytest.raises(InputError, match="offers no CLS attention"):
        enc.tower(x, with_cls_attention=True)


def test_seed_and_weights(usermod, pixels, tmp_path):
    a = build_encoder(EncoderConfig(f"py:{usermod}:build", seed=1))
    b = build_encoder(EncoderConfig(f"py:{usermod}:build", seed=1))
    c = build_encoder(EncoderConfig(f"py:{usermod}:build", seed=2))
    assert torch.equal(a.tower.user.proj.weight, b.tower.user.proj.weight)
    assert not torch.equal(a.tower.user.proj.weight, c.tower.user.proj.weight)
    torch.save(a.tower.user.state_dict(), tmp_path / "w.pt")
    d = build_encoder(EncoderConfig(f"py:{usermod}:build", seed=2, weights=tmp_path / "w.pt"))
    assert d.weights.kind == "file"
    assert torch.equal(d.tower.user.proj.weight, a.tower.user.proj.weight)


def test_cls_attention_when_offered(usermod, pixels):
    enc = build_encoder(EncoderConfig(f"py:{usermod}:build_cls"))
    assert enc.spec.has_cls and enc.spec.prefix_tokens == 1
    x = pixels(size=64)
    with torch.no_grad():
        y, attn = enc.tower(x, with_cls_attention=True)
    assert y.shape == (2, 17, 32)
    torch.testing.assert_close(attn, enc.tower.user.cls_attention(x))


def test_layer_and_size_overrides_refused(usermod):
    with pytest.raises(InputError, match="--layer -2 cannot apply"):
        build_encoder(EncoderConfig(f"py:{usermod}:build", layer=-2))
    with pytest.raises(InputError, match="--image-size 224 differs from the 64x64"):
        build_encoder(EncoderConfig(f"py:{usermod}:build", image_size=224))


@pytest.mark.parametrize("factory, pattern", [
    ("wrong_width", r"returned \(1, 16, 32\), but its tokcomp_facts promise \(1, 16, 48\)"),
    ("no_facts", "without a tokcomp_facts dict"),
    ("bad_facts", r"tokcomp_facts\['mean'\].*expected 3 floats"),
    ("not_a_module", "returned int, expected a torch.nn.Module"),
    ("boom", "factory raised RuntimeError: boom"),
    ("missing_fn", "has no callable 'missing_fn'"),
])
def test_contract_violations(usermod, factory, pattern):
    with pytest.raises(InputError, match=pattern):
        build_encoder(EncoderConfig(f"py:{usermod}:{factory}"))


def test_bad_references():
    with pytest.raises(InputError, match="not of the form py:<module>:<factory>"):
        resolve_spec("py:just_a_module")
    with pytest.raises(InputError, match="cannot import module 'no_such_module_xyz'"):
        resolve_spec("py:no_such_module_xyz:build")


def test_module_in_current_directory(tmp_path, monkeypatch):
    """Console scripts do not put the cwd on sys.path; the loader does, for the import only."""
    import sys

    (tmp_path / "cwd_enc_mod.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    try:
        assert resolve_spec("py:cwd_enc_mod:build").grid == (4, 4)
        assert str(tmp_path) not in sys.path
    finally:
        sys.modules.pop("cwd_enc_mod", None)


def test_resolve_spec_runs_the_factory_seeded_like_build(usermod):
    """Regression: resolve_spec (which export calls first) ran a py: factory on whatever RNG state the
    process had, so a factory checking its own random init (the debug tests' planted tower) passed or
    failed depending on what ran before; it also advanced the caller's RNG. It now runs seeded, as
    build_encoder does, and leaves the caller's RNG as it was."""
    import importlib

    ref = f"py:{usermod}:records_rng"
    torch.manual_seed(123)
    resolve_spec(ref)
    after = torch.rand(1)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(1), after)  # the caller's RNG untouched
    torch.manual_seed(456)  # another state before the call: the factory sees the same numbers
    resolve_spec(ref)
    build_encoder(EncoderConfig(ref))
    resolve_spec(ref, seed=1)
    draws = importlib.import_module(usermod).DRAWS
    assert torch.equal(draws[0], draws[1]) and torch.equal(draws[0], draws[2])
    assert not torch.equal(draws[0], draws[3])
