"""What the outside world is told about a model: its name, never where it lies on this server.

A model is a Hugging Face hub id (``openai/clip-vit-base-patch32``) or a local folder
(``/var/lib/loupe/models/finetune-7``); a folder's full path tells a caller how the server is laid
out, so only its last part is shown.
"""

from __future__ import annotations

from pathlib import PurePosixPath, PureWindowsPath


def public_model_name(model_ref: str) -> str:
    """The hub id as it is, else the folder's basename."""
    if not model_ref:
        return ""
    if _looks_like_a_path(model_ref):
        return PurePosixPath(model_ref.replace("\\", "/").rstrip("/")).name or ""
    return model_ref


def _looks_like_a_path(ref: str) -> bool:
    # Hub ids are "name" or "owner/name": no leading slash, dot or tilde, no backslash, at most one "/".
    return ref.startswith(("/", ".", "~")) or "\\" in ref or PureWindowsPath(ref).drive != "" or ref.count("/") > 1
