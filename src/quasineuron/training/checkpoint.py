"""Training checkpoints without pickle: tensors in safetensors, everything else as JSON.

One checkpoint is one file, ``checkpoint.safetensors``: the tensors (model, optimiser state,
random-generator state, best weights) are its entries and the rest (epoch, history, optimiser
scalars and parameter groups, run configuration) is a JSON document stored in its header
metadata. A single file replaced atomically (temp file, fsync, ``os.replace``) can never be
seen half-written, and it cannot get out of step with a separate JSON file. The header also
holds a SHA-256 digest of the tensors and the JSON, verified on every load: a damaged file
raises :class:`~quasineuron.errors.IntegrityError` instead of resuming from wrong numbers.
Checkpoints written before digests existed load unchecked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from quasineuron._atomic import atomic_write_bytes
from quasineuron._checked import read_document_checked, write_document_checked
from quasineuron.errors import StoreCorruptError

__all__ = [
    "CHECKPOINT_NAME",
    "Checkpoint",
    "atomic_write_bytes",
    "load_checkpoint",
    "restore_optimizer_state",
    "save_checkpoint",
]

CHECKPOINT_NAME = "checkpoint.safetensors"
_FORMAT = "quasineuron-checkpoint"
_VERSION = 1
_FIX = "delete it to restart training from scratch"


@dataclass(frozen=True)
class Checkpoint:
    """The content of a checkpoint file.

    Args:
        model_state: The model's ``state_dict``.
        optimizer_state: The optimiser's ``state_dict`` with JSON lists where tuples were;
            pass it through :func:`restore_optimizer_state` (done by :meth:`load_into`).
        generator_state: The batch-shuffling ``torch.Generator`` state, uint8 (n,).
        meta: JSON-ready run information (epoch, history, configuration, early-stopping state).
        best_model_state: The best weights so far, or None.
        extra_tensors: Further named tensors (the strategy's and callbacks' state, which the
            loop describes in ``meta``), or None.
    """

    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any]
    generator_state: torch.Tensor
    meta: dict[str, Any]
    best_model_state: dict[str, torch.Tensor] | None = None
    extra_tensors: dict[str, torch.Tensor] | None = None


def save_checkpoint(
    path: Path,
    *,
    model_state: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    generator_state: torch.Tensor,
    meta: dict[str, Any],
    best_model_state: dict[str, torch.Tensor] | None = None,
    extra_tensors: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write a checkpoint atomically to ``path`` (see the module docstring for the layout).

    Raises:
        TypeError: If the optimiser state holds a value that is neither a tensor nor JSON-ready.
    """
    tensors: dict[str, torch.Tensor] = {}
    for k, v in model_state.items():
        tensors[f"model/{k}"] = _plain(v)
    if best_model_state is not None:
        for k, v in best_model_state.items():
            tensors[f"best_model/{k}"] = _plain(v)
    tensors["generator/state"] = _plain(generator_state)
    for k, v in (extra_tensors or {}).items():
        tensors[f"extra/{k}"] = _plain(v)
    opt_scalars: dict[str, dict[str, Any]] = {}
    for idx, state in optimizer_state["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{idx}/{key}"] = _plain(value)
            else:
                _check_json(value, f"optimizer state {idx}/{key}")
                opt_scalars.setdefault(str(idx), {})[key] = value
    param_groups = optimizer_state["param_groups"]
    _check_json(param_groups, "optimizer param_groups")
    document = {
        "format": _FORMAT,
        "version": _VERSION,
        "meta": meta,
        "optimizer": {"param_groups": param_groups, "scalars": opt_scalars},
        "has_best_model": best_model_state is not None,
    }
    write_document_checked(Path(path), tensors, document)


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` and verify its checksum.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        IntegrityError: If the file is damaged (unreadable, truncated or not matching its
            checksum); the message names the file and says to delete it.
        StoreCorruptError: If the file is readable but not a quasineuron checkpoint.
    """
    path = Path(path)
    tensors, document = read_document_checked(path, what="checkpoint", fix=_FIX)
    if document is None:
        raise StoreCorruptError(
            f"{str(path)!r} is a safetensors file without quasineuron checkpoint metadata; {_FIX}"
        )
    if document.get("format") != _FORMAT or document.get("version") != _VERSION:
        raise StoreCorruptError(
            f"{str(path)!r} is not a version-{_VERSION} quasineuron checkpoint "
            f"(format={document.get('format')!r}, version={document.get('version')!r}); {_FIX}"
        )
    model_state: dict[str, torch.Tensor] = {}
    best_state: dict[str, torch.Tensor] = {}
    opt_state: dict[int, dict[str, Any]] = {}
    extra: dict[str, torch.Tensor] = {}
    generator_state = None
    for key, value in tensors.items():
        kind, _, rest = key.partition("/")
        if kind == "model":
            model_state[rest] = value
        elif kind == "best_model":
            best_state[rest] = value
        elif kind == "optimizer":
            idx, _, name = rest.partition("/")
            opt_state.setdefault(int(idx), {})[name] = value
        elif kind == "extra":
            extra[rest] = value
        elif key == "generator/state":
            generator_state = value
    for idx, scalars in document["optimizer"]["scalars"].items():
        opt_state.setdefault(int(idx), {}).update(scalars)
    if generator_state is None:
        raise StoreCorruptError(f"checkpoint {str(path)!r} lacks the generator state; {_FIX}")
    return Checkpoint(
        model_state=model_state,
        optimizer_state={"state": opt_state, "param_groups": document["optimizer"]["param_groups"]},
        generator_state=generator_state,
        meta=document["meta"],
        best_model_state=best_state if document["has_best_model"] else None,
        extra_tensors=extra,
    )


def restore_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """Load ``saved`` into ``optimizer``, turning JSON lists back into tuples where needed.

    The freshly built ``optimizer`` serves as the template for the types of the group options
    (JSON has no tuples, and e.g. Adam's ``betas`` is one).
    """
    template = optimizer.state_dict()["param_groups"]
    groups = []
    for fresh, stored in zip(template, saved["param_groups"], strict=True):
        group = dict(stored)
        for key, value in fresh.items():
            if isinstance(value, tuple) and isinstance(group.get(key), list):
                group[key] = tuple(group[key])
        groups.append(group)
    optimizer.load_state_dict({"state": saved["state"], "param_groups": groups})


def _plain(t: torch.Tensor) -> torch.Tensor:
    # safetensors refuses views that share storage; a contiguous CPU copy is always accepted.
    return t.detach().to("cpu", copy=True).contiguous()


def _check_json(value: Any, what: str) -> None:
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{what} is neither a tensor nor JSON-ready ({type(value).__name__}): {exc}; "
            f"checkpoints store tensors and plain numbers/strings only"
        ) from exc
