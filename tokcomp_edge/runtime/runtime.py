"""VisionRuntime: images in, the embeddings and the prompt layout the VLM's LLM needs out. Torch-free.

Per request: every image is decoded and tiled as the VLM's transformers processor does (tiling.py, on a
small thread pool, a bounded number of images ahead), the tiles of all images run on the backend in calls of
up to its batch maximum while the next images are still being tiled, the outputs are split back per image,
the family's post-processing is applied (LLaVA-OneVision: pack_image_features with the bundle's
image_newline; every other family: the tiles' tokens in the processor's tile order), and each image gets its
ImageLayout (layout.py: tiles, tokens per tile as the bundle produces them — compressed when the bundle
compresses —, newline positions, the prompt text and token ids that stand for it).

Several images in one `encode` are each read alone, as a request of one image would be. That is the natural
reading for a runtime, and for every family but LLaVA-OneVision it is also what transformers does with
several images in one sample. OneVision's processor and model skip anyres when a sample holds more than one
image (one square-padded tile + one newline per image): `encode(images, multi_image=True)` gives that reading.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..core.bundle import Bundle
from ..errors import BundleError, InputError
from .backends import Backend, open_backend
from .layout import ImageLayout
from .postprocess import image_embedding
from .processor import ProcessorParams
from .tiling import TiledImage, tile_image


@dataclass(frozen=True)
class Timings:
    """Where the time of one request went (milliseconds).

    Attributes:
        preprocess_ms: decoding + tiling + normalising, summed over the images (on the worker threads, so it
            overlaps inference and can exceed total_ms - inference_ms).
        inference_ms: the backend's calls, summed.
        postprocess_ms: splitting per image, packing, layouts.
        total_ms: wall time of the request.
        images, tiles, calls: how many of each.
    """

    preprocess_ms: float
    inference_ms: float
    postprocess_ms: float
    total_ms: float
    images: int
    tiles: int
    calls: int

    @property
    def host_overhead_ms(self) -> float:
        """Wall time not spent inside the backend: what the runtime adds around inference."""
        return self.total_ms - self.inference_ms

    def to_dict(self) -> dict[str, Any]:
        return {"preprocess_ms": round(self.preprocess_ms, 3), "inference_ms": round(self.inference_ms, 3),
                "postprocess_ms": round(self.postprocess_ms, 3), "total_ms": round(self.total_ms, 3),
                "host_overhead_ms": round(self.host_overhead_ms, 3), "images": self.images, "tiles": self.tiles,
                "calls": self.calls}

    @staticmethod
    def sum(parts: list[Timings], total_ms: float | None = None) -> Timings:
        return Timings(sum(p.preprocess_ms for p in parts), sum(p.inference_ms for p in parts),
                       sum(p.postprocess_ms for p in parts),
                       total_ms if total_ms is not None else sum(p.total_ms for p in parts),
                       sum(p.images for p in parts), sum(p.tiles for p in parts), sum(p.calls for p in parts))


@dataclass
class EncodeResult:
    """One request's output, per image in the order given.

    Attributes:
        embeddings: [tokens_i, llm_hidden] float32 per image: what replaces that image's placeholders.
        layout: ImageLayout per image (`to_dict()` for JSON).
        timings: Timings of the request.
        outputs: per image, the bundle's other outputs for its tiles ([tiles, …] each, in tile order): Qwen3-VL's
            `deepstack_<i>` (added to the LLM's hidden states at the image positions), a pruner's `indices`.
            Empty dicts for bundles whose only output is `tokens`.
    """

    embeddings: list[np.ndarray]
    layout: list[ImageLayout]
    timings: Timings
    outputs: list[dict[str, np.ndarray]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.embeddings)


def load_image(image: Any):
    """A path (str / Path) decoded to an RGB PIL image; PIL images and arrays pass through for tile_image.

    Raises:
        InputError: a missing, empty or undecodable file (naming it).
    """
    if isinstance(image, (str, Path)):
        from ..calibration.images import load_rgb

        path = Path(image)
        if not path.is_file():
            raise InputError(f"image {path} does not exist", "pass an image file, a PIL image or an HWC uint8 array")
        return load_rgb(path)
    return image


@dataclass
class _Prepared:
    tiled: TiledImage
    ms: float


class VisionRuntime:
    """A bundle on a backend, with the bundle's own processor parameters. Open with `VisionRuntime.open`.

    Attributes:
        bundle: the verified Bundle.
        backend: the Backend (ONNX Runtime session or TensorRT engine).
        params: the bundle's ProcessorParams.
        name: the bundle's name (ImageLayout.bundle).
    """

    def __init__(self, bundle: Bundle, backend: Backend, *, workers: int = 2, prefetch: int | None = None):
        self.bundle, self.backend = bundle, backend
        self.manifest = bundle.manifest
        self.params = ProcessorParams.from_manifest(self.manifest)
        self.name = bundle.name
        self.workers = max(1, int(workers))
        self.prefetch = max(1, int(prefetch if prefetch is not None else 2 * self.workers))
        self._pool: ThreadPoolExecutor | None = None
        self._newline = self._load_newline() if self.params.rule == "anyres" else None
        vlm = self.manifest.get("vlm") or {}
        self.token_grid = tuple(vlm.get("grid_out") or self.manifest.get("grid_out") or ()) or None

    # -- opening ---------------------------------------------------------------------------------------
    @classmethod
    def open(cls, bundle: str | Path | Bundle, engine: str | Path | None = None, backend: str = "onnxruntime",
             variant: str | None = None, *, pad_static: bool = False,
             providers: tuple[str, ...] = ("CPUExecutionProvider",), threads: int | None = None,
             workers: int = 2) -> VisionRuntime:
        """Open a bundle (checksums verified) on a TensorRT engine (`engine`) or ONNX Runtime.

        Args:
            bundle: the bundle folder (or a loaded Bundle).
            engine: a .plan built from it by `tokcomp build` (its engine.json beside it); None: ONNX Runtime.
            backend: `onnxruntime` (default) or `tensorrt` (needs `engine`).
            variant: the bundle variant ONNX Runtime runs (fp32 when None: fp16, int8, nhwc, fp16-nhwc…); with an
                engine, the variant it was built from (None: whatever that is).
            pad_static: let a static-batch engine's last call be padded (backends.py).
            providers, threads: ONNX Runtime's execution providers and intra-op threads.
            workers: threads that decode and tile images ahead of inference.
        Raises:
            BundleError / InputError (exit 2), RuntimeMissing (exit 3): see backends.open_backend.
        """
        b = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle, verify=True)
        ProcessorParams.from_manifest(b.manifest)  # a bundle without a processor section fails before a session
        be = open_backend(b, engine, backend, variant, pad_static=pad_static, providers=providers, threads=threads)
        return cls(b, be, workers=workers)

    @staticmethod
    def route(rules: list[tuple[str, VisionRuntime]]):
        """A Router that picks a runtime per image by its size, e.g. [("max_side<=512", rt_a), ("*", rt_b)].

        See routing.py for the rule syntax; the layout's `bundle` names the runtime that encoded each image.
        """
        from .routing import Router

        return Router(rules)

    def _load_newline(self) -> np.ndarray:
        entry = (self.manifest.get("vlm") or {}).get("image_newline")
        if not isinstance(entry, dict) or entry.get("file") not in self.manifest["files"]:
            raise BundleError(f"bundle {self.name} records no checksummed image_newline file, which "
                              "LLaVA-OneVision's packing needs", "re-export the bundle with this tokcomp-edge")
        path = self.bundle.path / entry["file"]
        try:
            value = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise BundleError(f"{path} cannot be read ({exc})", "re-export the bundle") from exc
        return np.asarray(value, dtype=np.float32).reshape(-1)

    # -- encoding --------------------------------------------------------------------------------------
    def encode(self, images: Iterable[Any] | Any, *, multi_image: bool = False) -> EncodeResult:
        """Encode one request: paths, PIL images or HWC uint8 arrays, any sizes (a single one is fine too).

        Args:
            images: the request's images.
            multi_image: LLaVA-OneVision's reading of several images in one sample (module docstring).
        Returns:
            EncodeResult, one embedding and one layout per image, in order.
        Raises:
            InputError: an unreadable / non-image file, a zero-size image, a batch the engine cannot take.
        """
        if isinstance(images, (str, Path, np.ndarray)) or hasattr(images, "getbands"):
            images = [images]
        items = list(images)
        if not items:
            raise InputError("encode was given no images", "pass at least one image")
        return next(self._requests(iter(items), len(items), multi_image))

    def encode_stream(self, images: Iterable[Any], per_request: int = 1, *,
                      multi_image: bool = False) -> Iterator[EncodeResult]:
        """Encode images from an iterable (a camera, a video decoder), `per_request` images per result.

        Decoding and tiling run ahead on the worker threads while earlier requests are inferred.
        """
        if per_request < 1:
            raise InputError(f"per_request {per_request} is not a positive number", "e.g. per_request=1")
        yield from self._requests(iter(images), per_request, multi_image)

    def _prepare(self, image: Any, multi_image: bool) -> _Prepared:
        t0 = time.perf_counter()
        tiled = tile_image(load_image(image), self.params, multi_image=multi_image)
        return _Prepared(tiled, (time.perf_counter() - t0) * 1e3)

    def _prepared(self, images: Iterator[Any], multi_image: bool) -> Iterator[_Prepared]:
        """The images prepared in order, at most `prefetch` ahead of the consumer."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="tokcomp-tile")
        queue: deque = deque()
        try:
            for image in images:
                queue.append(self._pool.submit(self._prepare, image, multi_image))
                if len(queue) >= self.prefetch:
                    yield queue.popleft().result()
            while queue:
                yield queue.popleft().result()
        finally:
            for fut in queue:
                fut.cancel()

    def _requests(self, images: Iterator[Any], per_request: int, multi_image: bool) -> Iterator[EncodeResult]:
        source = self._prepared(images, multi_image)
        while True:
            t0 = time.perf_counter()
            req = _Request(self.backend)
            for prep in source:
                req.add(prep)
                if len(req.prepared) == per_request:
                    break
            if not req.prepared:
                return
            outs = req.finish()
            t_post = time.perf_counter()
            embeddings, layouts = [], []
            cuts = np.cumsum(req.counts)[:-1]
            split = {k: np.split(v, cuts) for k, v in outs.items()}
            for i, prep in enumerate(req.prepared):
                emb, lay = self._postprocess(prep.tiled, split["tokens"][i], multi_image)
                embeddings.append(emb)
                layouts.append(lay)
            others = [{k: v[i] for k, v in split.items() if k != "tokens"} for i in range(len(req.prepared))]
            now = time.perf_counter()
            timings = Timings(preprocess_ms=sum(p.ms for p in req.prepared), inference_ms=req.inference_ms,
                              postprocess_ms=(now - t_post) * 1e3, total_ms=(now - t0) * 1e3,
                              images=len(req.prepared), tiles=int(sum(req.counts)), calls=req.calls)
            yield EncodeResult(embeddings, layouts, timings, others)

    def _postprocess(self, tiled: TiledImage, tokens: np.ndarray, multi_image: bool) -> tuple[np.ndarray, ImageLayout]:
        """One image's tiles' tokens [n, T, D] → its embedding [tokens, D] and its layout."""
        if self.params.rule == "anyres" and self.token_grid is None:
            raise BundleError(f"bundle {self.name} records no token grid (grid_out), which LLaVA-OneVision's "
                              "packing needs", "export OneVision with a grid-keeping compression (pool, "
                              "unshuffle) or none")
        emb, lay = image_embedding(tiled, tokens, self.params, self.manifest, self.token_grid, self._newline,
                                   "the backend")
        return emb, (lay if lay.bundle else replace(lay, bundle=self.name))

    # -- lifetime ----------------------------------------------------------------------------------------
    def close(self) -> None:
        """Release the backend and the worker threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self.backend.close()

    def __enter__(self) -> VisionRuntime:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class _Request:
    """Tiles of one request collected in order; full backend calls run as soon as they fill up."""

    backend: Backend
    prepared: list[_Prepared] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    _pending: list[np.ndarray] = field(default_factory=list)
    _done: list[dict[str, np.ndarray]] = field(default_factory=list)
    inference_ms: float = 0.0
    calls: int = 0

    def _input(self, tiled: TiledImage) -> np.ndarray:
        return tiled.uint8 if self.backend.io.layout == "nhwc-uint8" else tiled.pixels

    def add(self, prep: _Prepared) -> None:
        self.prepared.append(prep)
        self.counts.append(prep.tiled.tiles)
        self._pending.append(self._input(prep.tiled))
        waiting = sum(int(x.shape[0]) for x in self._pending)
        step = self.backend.io.batch_max
        if waiting >= step:  # run the full calls now, while the workers tile the next images
            tiles = np.concatenate(self._pending)
            full = (waiting // step) * step
            self._run(tiles[:full])
            self._pending = [tiles[full:]] if full < waiting else []

    def _run(self, tiles: np.ndarray) -> None:
        out = self.backend.run(tiles)
        self.inference_ms += self.backend.inference_ms
        self.calls += self.backend.calls
        self._done.append(out)

    def finish(self) -> dict[str, np.ndarray]:
        """Every output of the request's tiles, concatenated in tile order."""
        if self._pending:
            self._run(np.concatenate(self._pending))
            self._pending = []
        if len(self._done) == 1:
            return self._done[0]
        return {k: np.concatenate([d[k] for d in self._done]) for k in self._done[0]}
