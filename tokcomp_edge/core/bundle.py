"""The bundle: the folder that carries an exported encoder between stages and machines.

Layout (see README, "The bundle"):
    model.onnx            fp32 graph, input `pixel_values` [B,3,H,W] float32, output `tokens` (+ `indices`)
    model.<variant>.onnx  optional precision / input variants (fp16, nhwc, …), registered in the manifest
    manifest.json         versioned schema: encoder, compression, ONNX I/O, versions, sha256 of every file
    reference.npz         golden inputs and PyTorch outputs, keys `<tensor>.b<B>`

The manifest is the contract; this module reads, verifies and amends it. Writing a new bundle is
`export.pipeline`'s job (it stages the folder and renames it into place).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_bytes_atomic, write_text_atomic
from ..errors import BundleError

SCHEMA = "tokcomp-edge/bundle"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
REFERENCE = "reference.npz"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_entry(path: Path) -> dict[str, Any]:
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


DEBUG_DIR = "debug"  # `tokcomp debug` results: outside the checksummed contents, like reports/


def debug_record_paths(bundle_path: Path, variant: str) -> tuple[Path, Path]:
    """Where `tokcomp debug` keeps its result for a variant: (`debug/<variant>.json`, `.html`).

    One place for the naming, shared by the writer (debug/store.py) and the reader (validate's report).
    """
    folder = Path(bundle_path) / DEBUG_DIR
    return folder / f"{variant}.json", folder / f"{variant}.html"


def reference_key(tensor: str, batch: int) -> str:
    """Key of one array in reference.npz: `<tensor>.b<B>` (e.g. `pixel_values.b1`, `tokens.b4`)."""
    return f"{tensor}.b{batch}"


def read_tagged_json(path: Path, schema: str, hint: str) -> dict[str, Any]:
    """Parse a JSON document that names its `schema` (manifest.json, engine.json).

    Raises:
        BundleError (exit 2) when it is not JSON or carries another schema; `hint` says what to do.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path} is not valid JSON ({exc})", hint) from exc
    if not isinstance(data, dict) or data.get("schema") != schema:
        found = data.get("schema") if isinstance(data, dict) else None
        raise BundleError(f"{path} has schema {found!r}, expected {schema!r}", hint)
    return data


CONTENT_KEY = "content_sha256"


def manifest_content_sha256(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest's content without its own `content_sha256` (canonical JSON, sorted keys).

    The manifest cannot list its own file digest in `files`; this field covers it instead, so an edited
    manifest (a changed tolerance, output name, variant entry or file digest) is refused like a changed file.
    """
    body = {k: v for k, v in manifest.items() if k != CONTENT_KEY}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def dump_manifest(manifest: dict[str, Any]) -> str:
    """The manifest's text, with `content_sha256` (re)computed over everything else in it."""
    manifest[CONTENT_KEY] = manifest_content_sha256(manifest)
    return json.dumps(manifest, indent=2, sort_keys=False) + "\n"


@dataclass
class Bundle:
    """A bundle folder and its parsed manifest."""

    path: Path
    manifest: dict[str, Any]

    # -- loading -------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, verify: bool = True) -> "Bundle":
        """Read `path/manifest.json` and check it against the schema (core/manifest_schema.py), once.

        Order: the manifest's own content digest (with `verify`) → the schema (always: every consumer indexes
        the manifest directly) → every file's sha256 (with `verify`). So an edited manifest is named as
        edited, a re-signed one with a dropped key or a wrong type is one BundleError naming the key, and a
        changed file is refused — never a KeyError / TypeError in a consumer.

        Raises:
            BundleError (exit 2): not a bundle, another schema version, edited, malformed, or a changed file.
        """
        from .manifest_schema import check_manifest

        path = Path(path)
        if path.is_file() and path.name == MANIFEST:
            path = path.parent
        mpath = path / MANIFEST
        if not path.is_dir():
            raise BundleError(f"bundle folder {path} does not exist",
                              "run `tokcomp export MODEL --out DIR` first, or check the path")
        if not mpath.is_file():
            raise BundleError(f"{path} has no {MANIFEST}, so it is not a tokcomp bundle",
                              "point at a folder written by `tokcomp export`")
        manifest = read_tagged_json(mpath, SCHEMA, "re-export the bundle, or point at a folder written by "
                                                   "`tokcomp export`")
        version = manifest.get("schema_version")
        if version != SCHEMA_VERSION:
            raise BundleError(f"{mpath} has schema_version {version!r}, this tokcomp reads {SCHEMA_VERSION}",
                              "re-export the bundle with this version of tokcomp")
        bundle = cls(path=path, manifest=manifest)
        if verify:
            bundle.verify_content()
        check_manifest(manifest)
        if verify:
            bundle.verify_files()
        return bundle

    def verify(self) -> None:
        """Check the manifest's own content digest, then every file's checksum (see `verify_files`)."""
        self.verify_content()
        self.verify_files()

    def verify_content(self) -> None:
        """Check the manifest's own content digest (`content_sha256`): an edited manifest is refused."""
        recorded = self.manifest.get(CONTENT_KEY)
        if recorded is None:
            raise BundleError(f"{self.path / MANIFEST} carries no {CONTENT_KEY} (written before manifests covered "
                              "their own content)", "re-export the bundle with this version of tokcomp")
        if recorded != manifest_content_sha256(self.manifest):
            raise BundleError(f"{self.path / MANIFEST} was edited after it was written (its {CONTENT_KEY} does "
                              "not match its content)", "re-export the bundle; a manifest is not edited by hand")

    def verify_files(self) -> None:
        """Check that every variant's file (and the reference) is covered by a checksum, and that every file
        the manifest lists exists with the recorded sha256 (the manifest has passed the schema)."""
        files = self.manifest["files"]
        for key, v in self.variants().items():
            if v["file"] not in files:
                raise BundleError(f"variant {key}'s file {v['file']} is not covered by the manifest's checksums",
                                  "re-export the bundle (or re-create the variant with `tokcomp export --variants`)")
        ref = self.manifest["reference"]["file"]
        if ref not in files:
            raise BundleError(f"the golden reference {ref} is not covered by the manifest's checksums",
                              "re-export the bundle")
        for name, entry in files.items():
            fpath = self.path / name
            if not fpath.is_file():
                raise BundleError(f"bundle file {name} is missing from {self.path}",
                                  "re-export the bundle (files must not be removed)")
            digest = sha256_file(fpath)
            if digest != entry["sha256"]:
                raise BundleError(
                    f"bundle file {name} changed since export (sha256 {digest[:12]}…, manifest says "
                    f"{entry['sha256'][:12]}…)",
                    "re-export the bundle; a changed file cannot be validated against its reference")

    # -- accessors -----------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def compression(self) -> dict[str, Any]:
        return self.manifest["compression"]

    @property
    def encoder(self) -> dict[str, Any]:
        return self.manifest["encoder"]

    @property
    def onnx(self) -> dict[str, Any]:
        return self.manifest["onnx"]

    @property
    def batch_range(self) -> tuple[int, int]:
        b = self.onnx["batch"]
        return int(b["min"]), int(b["max"])

    @property
    def input_names(self) -> list[str]:
        return [t["name"] for t in self.onnx["inputs"]]

    @property
    def output_names(self) -> list[str]:
        return [t["name"] for t in self.onnx["outputs"]]

    def variants(self) -> dict[str, dict[str, Any]]:
        """All ONNX variants, `fp32` (model.onnx) included, keyed by variant name."""
        return self.manifest.get("variants", {})

    def variant(self, key: str) -> dict[str, Any]:
        v = self.variants()
        if key not in v:
            how = (f"int8 needs a calibrated Q/DQ graph: run `tokcomp calibrate {self.path} --images DIR` on "
                   "representative images (it adds the int8 variant)" if key.startswith("int8")
                   else f"add it with `tokcomp variant {self.path} {key}`")
            raise BundleError(f"bundle {self.path} has no {key!r} variant (it has: {', '.join(v)})", how)
        return v[key]

    def onnx_path(self, variant: str = "fp32") -> Path:
        return self.path / self.variant(variant)["file"]

    def reference(self) -> dict[str, np.ndarray]:
        """The golden reference's arrays, checked against what the manifest says it holds (every declared
        batch of every fp32 input and output, with its shape and dtype, finite): BundleError otherwise, so a
        re-signed reference that lost a batch or holds NaN is never validated against."""
        from .reference_check import check_reference, load_npz

        ref = load_npz(self.path / self.manifest["reference"]["file"])
        check_reference(ref, self.manifest)
        return ref

    def reference_batches(self) -> list[int]:
        return list(self.manifest["reference"]["batch_sizes"])

    def manifest_sha256(self) -> str:
        return hashlib.sha256((self.path / MANIFEST).read_bytes()).hexdigest()

    # -- amending ------------------------------------------------------------------------------------
    def add_variant(self, key: str, src: Path, meta: dict[str, Any]) -> Path:
        """Move a finished ONNX file into the bundle as variant `key` and record it (see add_variants)."""
        return self.add_variants([(key, src, meta)])[key]

    def add_variants(self, items: list[tuple[str, Path, dict[str, Any]]]) -> dict[str, Path]:
        """Move finished ONNX files into the bundle as variants and record them in ONE manifest write.

        Each `src` must already be complete and checked; create it inside the bundle folder under a temp
        name (same filesystem). The steps keep the bundle verifiable at every point of an interrupt: each
        new file is renamed in under a name no recorded file uses (`model.<key>.onnx`, or
        `model.<key>.<sha8>.onnx` when a previous `<key>` variant holds that name), then the manifest is
        rewritten atomically to point at all of them, and only then are the previous files removed. So a
        variant and the ones derived from it (fp16 and the fp16-nhwc wrapping it) change together or not
        at all. A `meta["base"]` naming a variant of the same call gets that variant's final file name.
        """
        placed: dict[str, tuple[str, dict[str, Any]]] = {}
        for key, src, _ in items:
            entry_new = file_entry(Path(src))
            filename = f"model.{key}.onnx"
            taken = {f for f, _ in placed.values()}
            if (self.path / filename).exists() or filename in self.manifest.get("files", {}) or filename in taken:
                filename = f"model.{key}.{entry_new['sha256'][:8]}.onnx"
            Path(src).replace(self.path / filename)
            placed[key] = (filename, entry_new)
        stale = []
        for key, _, meta in items:
            filename, entry_new = placed[key]
            old = self.variants().get(key, {}).get("file")
            entry = dict(meta)
            base = entry.get("base")
            if isinstance(base, dict) and base.get("variant") in placed:
                entry["base"] = {**base, "file": placed[base["variant"]][0]}
            entry["file"] = filename
            self.manifest.setdefault("variants", {})[key] = entry
            self.manifest["files"][filename] = entry_new
            if old and old != filename:
                self.manifest["files"].pop(old, None)
                stale.append(old)
        self.save_manifest()
        for old in stale:
            (self.path / old).unlink(missing_ok=True)
        return {key: self.path / placed[key][0] for key, _, _ in items}

    def save_manifest(self) -> None:
        write_text_atomic(self.path / MANIFEST, dump_manifest(self.manifest))


def save_reference(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write reference.npz deterministically (sorted keys, no compression timestamps)."""
    import io

    buf = io.BytesIO()
    np.savez(buf, **{k: arrays[k] for k in sorted(arrays)})
    write_bytes_atomic(path, buf.getvalue())
