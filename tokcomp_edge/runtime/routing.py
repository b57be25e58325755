"""Routing among bundles of one model by image size: the dynamic ratio, with static engines.

A deployment holds several bundles (e.g. `pool:2` for small product photos, `pool:4` for large document
scans); each engine stays static and the choice is per image:

    router = VisionRuntime.route([("max_side<=512", rt_small), ("*", rt_large)])
    out = router.encode(images)        # out.layout[i].bundle names the bundle that encoded image i

A rule is `*` (every image) or `<measure><op><number>` with measure one of width, height, max_side,
min_side, pixels (width·height) or aspect (width / height) and op one of <=, <, >=, >, ==; several joined
with `&` must all hold. Rules are tried in order; the first that holds picks the runtime, and an image no
rule takes is refused (end the list with `*` to catch all).
"""

from __future__ import annotations

import operator
import re
import time
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from ..errors import InputError
from .runtime import EncodeResult, Timings, VisionRuntime, load_image

_OPS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt, "==": operator.eq}
_MEASURES = {
    "width": lambda w, h: w, "height": lambda w, h: h, "max_side": lambda w, h: max(w, h),
    "min_side": lambda w, h: min(w, h), "pixels": lambda w, h: w * h, "aspect": lambda w, h: w / h,
}
_TERM = re.compile(r"^\s*([a-z_]+)\s*(<=|>=|==|<|>)\s*([0-9]+(?:\.[0-9]+)?)\s*$")


def parse_rule(rule: str):
    """A predicate (width, height) -> bool for one rule string.

    Raises:
        InputError: a rule that does not parse, naming the measures and operators.
    """
    if not isinstance(rule, str):
        raise InputError(f"routing rule {rule!r} is not a string", "e.g. \"max_side<=512\" or \"*\"")
    if rule.strip() == "*":
        return lambda w, h: True
    terms = []
    for part in rule.split("&"):
        m = _TERM.match(part)
        if not m or m.group(1) not in _MEASURES:
            raise InputError(f"routing rule {rule!r} does not parse",
                             f"use `*` or MEASURE OP NUMBER joined by &, MEASURE one of {', '.join(_MEASURES)}, "
                             f"OP one of {', '.join(_OPS)} (e.g. max_side<=512)")
        terms.append((_MEASURES[m.group(1)], _OPS[m.group(2)], float(m.group(3))))
    return lambda w, h: all(op(measure(w, h), value) for measure, op, value in terms)


def image_size(image: Any) -> tuple[int, int]:
    """(width, height) of a PIL image or an HWC array."""
    if isinstance(image, np.ndarray):
        return int(image.shape[1]) if image.ndim > 1 else 0, int(image.shape[0])
    return int(image.width), int(image.height)


class Router:
    """Runtimes chosen per image by rules on its size (module docstring). Same encode API as VisionRuntime."""

    def __init__(self, rules: list[tuple[str, VisionRuntime]]):
        if not rules:
            raise InputError("route was given no rules", "e.g. [(\"max_side<=512\", rt_a), (\"*\", rt_b)]")
        self.rules = []
        for item in rules:
            if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], VisionRuntime)):
                raise InputError(f"routing entry {item!r:.80} is not (rule, VisionRuntime)",
                                 "pass a list of (rule string, VisionRuntime.open(...)) pairs")
            self.rules.append((item[0], parse_rule(item[0]), item[1]))

    def pick(self, image: Any) -> VisionRuntime:
        """The runtime for one decoded image (PIL image or array)."""
        w, h = image_size(image)
        for _, test, rt in self.rules:
            if w > 0 and h > 0 and test(w, h):
                return rt
        raise InputError(f"no routing rule takes a {w}x{h} image (rules: {', '.join(r for r, _, _ in self.rules)})",
                         "end the rules with (\"*\", runtime) to catch every image")

    def encode(self, images: Iterable[Any] | Any, *, multi_image: bool = False) -> EncodeResult:
        """Encode a request: each image on the runtime its rule picks; results in the order given."""
        t0 = time.perf_counter()
        if isinstance(images, (str, np.ndarray)) or hasattr(images, "getbands") or hasattr(images, "is_file"):
            images = [images]
        decoded = [load_image(x) for x in images]
        if not decoded:
            raise InputError("encode was given no images", "pass at least one image")
        groups: dict[int, tuple[VisionRuntime, list[int]]] = {}
        for i, image in enumerate(decoded):
            rt = self.pick(image)
            groups.setdefault(id(rt), (rt, []))[1].append(i)
        embeddings: list[Any] = [None] * len(decoded)
        layouts: list[Any] = [None] * len(decoded)
        others: list[Any] = [{} for _ in decoded]
        parts = []
        for rt, idx in groups.values():
            out = rt.encode([decoded[i] for i in idx], multi_image=multi_image)
            parts.append(out.timings)
            for i, emb, lay, extra in zip(idx, out.embeddings, out.layout, out.outputs):
                embeddings[i], layouts[i], others[i] = emb, lay, extra
        return EncodeResult(embeddings, layouts, Timings.sum(parts, (time.perf_counter() - t0) * 1e3), others)

    def encode_stream(self, images: Iterable[Any], per_request: int = 1, *,
                      multi_image: bool = False) -> Iterator[EncodeResult]:
        """`encode` on consecutive groups of `per_request` images of an iterable."""
        if per_request < 1:
            raise InputError(f"per_request {per_request} is not a positive number", "e.g. per_request=1")
        chunk: list[Any] = []
        for image in images:
            chunk.append(image)
            if len(chunk) == per_request:
                yield self.encode(chunk, multi_image=multi_image)
                chunk = []
        if chunk:
            yield self.encode(chunk, multi_image=multi_image)

    def close(self) -> None:
        for _, _, rt in self.rules:
            rt.close()
