"""The stored debug result is committed as one step: an interruption between its two files leaves the
previous result or none, never a page and a JSON of different runs (debug/store.py)."""

from __future__ import annotations

import json

import pytest

from tokcomp_edge.core.bundle import debug_record_paths
from tokcomp_edge.debug import DebugConfig, debug
from tokcomp_edge.debug import store


class Interrupted(BaseException):
    pass


def test_interrupted_write_leaves_no_half_result(fresh, monkeypatch):
    folder = fresh("healthy")
    result = debug(DebugConfig(target=folder, variant="fp16", write=False, quiet=True))
    jpath, hpath = store.write_result(folder, result)
    first = store.read_result(folder, "fp16")
    assert first is not None and first["blocks"] == json.loads(jpath.read_text())["blocks"]

    # A second run whose process dies after the page and before the JSON.
    result.seconds, result.inputs = 123.0, "second run's inputs"
    real = store.write_text_atomic
    calls = []

    def dies_after_one_file(path, text):  # whichever file goes second is never written
        calls.append(path)
        if len(calls) == 2:
            raise Interrupted
        real(path, text)

    monkeypatch.setattr(store, "write_text_atomic", dies_after_one_file)
    with pytest.raises(Interrupted):
        store.write_result(folder, result)
    # What the reader sees is none or one whole result: its page is the one rendered from that JSON.
    got = store.read_result(folder, "fp16")
    if got is not None:
        from tokcomp_edge.validation.report_html import render_debug_html

        assert render_debug_html({k: v for k, v in got.items() if k != "html_sha256"}) == hpath.read_text()
    assert got is None  # the first run's result was uncommitted before its page was replaced

    monkeypatch.setattr(store, "write_text_atomic", real)
    store.write_result(folder, result)
    assert store.read_result(folder, "fp16")["seconds"] == 123.0
    # A page changed after the commit is not the one the JSON names.
    hpath.write_text(hpath.read_text() + "<!-- edited -->")
    assert store.read_result(folder, "fp16") is None
    assert debug_record_paths(folder, "fp16") == (jpath, hpath)
