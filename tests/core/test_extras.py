"""Optional parts of tokcomp-edge: the check a command makes, and the one line it fails with."""

import pytest

from tokcomp_edge.errors import ExtraMissing, RuntimeMissing
from tokcomp_edge.extras import install_line, missing_modules, require_export, require_extra


def test_missing_modules_imports_nothing():
    import sys

    assert missing_modules(("numpy", "tokcomp_no_such_module")) == ["tokcomp_no_such_module"]
    assert "tokcomp_no_such_module" not in sys.modules


def test_a_missing_extra_is_exit_3_with_the_pip_line():
    with pytest.raises(ExtraMissing) as exc:
        require_extra("ort", "validating a bundle", ("tokcomp_no_such_module",))
    err = exc.value
    assert isinstance(err, RuntimeMissing) and err.exit_code == 3
    line = err.one_line()
    assert "\n" not in line and "tokcomp_no_such_module" in line
    assert install_line("ort") in line and "[ort-gpu]" in line  # the CUDA build is named too
    with pytest.raises(ExtraMissing) as exc:
        require_extra("export", "x", ("tokcomp_no_such_module",), instead="make it elsewhere")
    assert exc.value.one_line().endswith("pip install 'tokcomp-edge[export]', or make it elsewhere")


def test_present_modules_pass():
    require_extra("ort", "x", ("numpy",))
    require_export("tiny-clip")  # this (workstation) environment has the [export] extra


def test_export_asks_for_timm_and_modelopt_only_when_used(monkeypatch):
    import tokcomp_edge.extras as extras

    asked = []
    monkeypatch.setattr(extras, "require_extra", lambda extra, what, modules: asked.append(set(modules)))
    require_export("tiny-clip")
    require_export("timm:vit_small_patch16_224", ("fp16-nhwc",))
    assert "timm" not in asked[0] and "modelopt" not in asked[0]
    assert {"timm", "modelopt"} <= asked[1]
