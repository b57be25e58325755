"""A VLM checkpoint folder on disk: its config, its preprocessing, and lazy access to its weights.

A VLM over a few GB ships sharded (`model.safetensors.index.json` + shards). The vision path is a small
part of it, so only the tensors of the vision tower and the projector are read: safetensors files through
`safe_open` (one tensor at a time from a memory map), torch `.bin` shards through
`torch.load(mmap=True, weights_only=True)`, and shards that hold none of those tensors (the index says
which) are never opened. The LLM's weights are never materialised.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.hf_files import read_json
from ..errors import WeightsError

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_BIN = "pytorch_model.bin"
TORCH_INDEX = "pytorch_model.bin.index.json"
WEIGHT_FORMS = (SAFETENSORS_INDEX, SAFETENSORS, TORCH_INDEX, TORCH_BIN)


def folder_model_type(folder: Path) -> str | None:
    """The `model_type` of `folder/config.json`, or None when there is no readable config."""
    path = folder / "config.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get("model_type")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None


@dataclass(frozen=True)
class WeightSource:
    """Where a checkpoint's tensors are: {tensor name: file} (one file or shards) and its format."""

    path: Path  # the file the user can name: the index, or the single weights file
    files: dict[str, Path]  # tensor name → file holding it (names as stored in the checkpoint)
    form: str  # "safetensors" | "torch"

    @property
    def names(self) -> list[str]:
        return list(self.files)


def find_weights(folder: Path) -> WeightSource:
    """The folder's weights, in the order from_pretrained prefers them.

    Raises:
        WeightsError (exit 2): no recognised weight file; the message names the files that are there.
    """
    for form in WEIGHT_FORMS:
        if (folder / form).is_file():
            return weight_source(folder / form)
    present = sorted(p.name for p in folder.iterdir())[:12]
    raise WeightsError(
        f"{folder} has no weights ({', '.join(WEIGHT_FORMS)}); files found: {', '.join(present) or 'none'}",
        "copy the checkpoint's weight files into the folder, or export the preset of the same architecture "
        "(random init, seeded) if you only want the graph")


def weight_source(path: Path) -> WeightSource:
    """A WeightSource for an index JSON, a .safetensors file or a torch checkpoint file."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist", "check the path (nothing is downloaded)")
    if path.name.endswith(".index.json"):
        index = read_json(path)
        wmap = index.get("weight_map")
        if not isinstance(wmap, dict) or not wmap:
            raise WeightsError(f"{path} has no weight_map", "re-save the checkpoint with save_pretrained")
        files = {str(k): path.parent / str(v) for k, v in wmap.items()}
        missing = sorted({f.name for f in files.values() if not f.is_file()})
        # The shards' own suffix says how to read them, whatever the index is called (a custom-named
        # `vision.safetensors.index.json` was read as torch shards: whole files).
        kinds = {f.suffix == ".safetensors" for f in files.values()}
        if len(kinds) > 1:
            raise WeightsError(f"{path} mixes .safetensors shards with other files",
                               "re-save the checkpoint with save_pretrained (one format per index)")
        form = "safetensors" if kinds == {True} else "torch"
        if missing:
            raise WeightsError(f"{path} names shards that are not in the folder: {', '.join(missing[:5])}",
                               "copy every shard the index lists")
        return WeightSource(path=path, files=files, form=form)
    if path.suffix == ".safetensors":
        names = _safetensors_names(path)
        return WeightSource(path=path, files={n: path for n in names}, form="safetensors")
    # a single torch file: its names are only known by loading it (memory-mapped, so nothing is read yet)
    return WeightSource(path=path, files={n: path for n in _torch_names(path)}, form="torch")


def _safetensors_names(path: Path) -> list[str]:
    import safetensors

    try:
        with safetensors.safe_open(str(path), framework="pt", device="cpu") as f:
            return list(f.keys())
    except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError
        raise WeightsError(f"{path} is not a readable safetensors file ({exc})",
                           "check the file is complete") from exc


def _torch_load(path: Path) -> dict[str, Any]:
    import torch

    from ..encoders.weights import load_state_dict, unwrap_tensors

    try:
        # mmap: tensors stay on disk until touched; weights_only: no code from the file runs.
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:
        return load_state_dict(path)  # a legacy (non-zip) file cannot be mapped: the safe full load
    except Exception:  # noqa: BLE001 - let the safe loader produce the one-line error
        return load_state_dict(path)
    # The same unwrapping as the full load ("state_dict"/"model"/"module" keys, `module.` prefixes), so
    # names match whichever path read the file.
    return unwrap_tensors(obj, path)


def _torch_names(path: Path) -> list[str]:
    return [str(k) for k in _torch_load(path)]


@dataclass
class ReadLog:
    """What a lazy read touched: for the report and for tests that prove the LLM stayed on disk."""

    tensors: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    bytes: int = 0


def read_tensors(src: WeightSource, names: list[str], log: ReadLog | None = None) -> dict[str, Any]:
    """Read exactly `names` from the checkpoint, file by file; nothing else is loaded."""
    import safetensors

    log = log if log is not None else ReadLog()
    by_file: dict[Path, list[str]] = {}
    for n in names:
        by_file.setdefault(src.files[n], []).append(n)
    out: dict[str, Any] = {}
    for file, keys in by_file.items():
        log.files.append(file.name)
        if src.form == "safetensors":
            try:
                with safetensors.safe_open(str(file), framework="pt", device="cpu") as f:
                    for k in keys:
                        out[k] = f.get_tensor(k)
            except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError
                raise WeightsError(f"{file} cannot be read ({exc})", "check the shard is complete") from exc
        else:
            sd = _torch_load(file)
            for k in keys:
                out[k] = sd[k].clone()  # copy out of the memory map, then drop the map
            del sd
        for k in keys:
            log.tensors.append(k)
            log.bytes += out[k].numel() * out[k].element_size()
    return out
