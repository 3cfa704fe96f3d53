"""Checked safetensors files that carry a JSON document: twins, checkpoints, network weights.

Each such file stores a JSON document under the metadata key :data:`DOC_KEY`. Files written
with checksums say so inside that document (``"checksummed": true``), so a damaged header
that loses the digest entry (one flipped byte in its key is enough) is caught: the document
then claims a digest the header no longer holds. Files written before checksums existed
have neither and are read unchecked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from quasineuron._atomic import CHECKSUM_KEY, load_safetensors_checked, save_safetensors_checked
from quasineuron.errors import IntegrityError

__all__ = ["CHECKED_FLAG", "DOC_KEY", "read_document_checked", "write_document_checked"]

#: Metadata key of the JSON document.
DOC_KEY = "quasineuron"
#: Document entry that says the file was written with a checksum.
CHECKED_FLAG = "checksummed"


def write_document_checked(
    path: str | Path, tensors: dict[str, Any], document: dict[str, Any]
) -> None:
    """Write ``tensors`` and ``document`` (JSON) atomically, with a checksum over both."""
    text = json.dumps({**document, CHECKED_FLAG: True})
    save_safetensors_checked(path, tensors, {DOC_KEY: text})


def read_document_checked(
    path: str | Path, *, what: str, fix: str
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Read a file written by :func:`write_document_checked` (or a digest-less older one).

    Args:
        path: The safetensors file.
        what: What the file is, for messages (``"twin"``, ``"checkpoint"``).
        fix: What the user should do when it is damaged.

    Returns:
        The tensors and the JSON document (None when the file has no document).

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        IntegrityError: If the file is damaged: unreadable, not matching its checksum, a
            document that is not JSON, or a checksum the document promises but the header lacks.
    """
    tensors, meta = load_safetensors_checked(path, what=what, fix=fix)
    raw = meta.get(DOC_KEY)
    if raw is None:
        return tensors, None
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise IntegrityError(
            f"{what} {str(path)!r} is damaged (its JSON header does not parse: {exc}); {fix}"
        ) from None
    if not isinstance(document, dict):
        raise IntegrityError(
            f"{what} {str(path)!r} is damaged (its JSON header is not an object); {fix}"
        )
    if document.get(CHECKED_FLAG) and CHECKSUM_KEY not in meta:
        raise IntegrityError(
            f"{what} {str(path)!r} is damaged: it was written with a checksum but its header "
            f"no longer holds one; {fix}"
        )
    return tensors, document
