"""Attachments as model input, the same way for every provider.

A user block refers to its attachments (``Block.attachments``); the bytes come with the turn
(``Turn.attachment_data``, loaded by the scheduler when the run starts). Each provider adapter
turns these parts into its own wire format: an image becomes an image part (base64), a text
file a text part that starts with its name, so the model can tell files apart and cite them.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from webchat.turns import Block

__all__ = ["ImagePart", "TextPart", "attachment_parts", "describe_attachments", "format_size"]


@dataclass(frozen=True, slots=True)
class ImagePart:
    media_type: str
    data: str
    """base64 of the image bytes"""

    @property
    def data_url(self) -> str:
        return f"data:{self.media_type};base64,{self.data}"


@dataclass(frozen=True, slots=True)
class TextPart:
    text: str


def attachment_parts(block: Block, data: Mapping[str, bytes]) -> list[ImagePart | TextPart]:
    """The parts for a user block's attachments, in upload order. An attachment whose bytes
    are missing (deleted since) is named in a text part rather than silently dropped, so the
    model is not left answering about a file it never saw."""
    parts: list[ImagePart | TextPart] = []
    for ref in block.attachments:
        name = str(ref.get("name", "file"))
        content = data.get(str(ref.get("id", "")))
        if content is None:
            parts.append(TextPart(f"[attachment {name} is no longer available]"))
        elif ref.get("kind") == "image":
            media_type = str(ref.get("media_type", "application/octet-stream"))
            parts.append(ImagePart(media_type, base64.b64encode(content).decode("ascii")))
        else:
            text = content.decode("utf-8", errors="replace")
            parts.append(TextPart(f"{name}:\n{text}"))
    return parts


def format_size(size: int) -> str:
    """``300 bytes``, ``12 KB``, ``1.2 MB`` (binary units, as file managers count)."""
    if size < 1024:
        return "1 byte" if size == 1 else f"{size} bytes"
    if size < 1024 * 1024:
        return f"{max(1, round(size / 1024))} KB"
    return f"{size / (1024 * 1024):.1f} MB"


def _one(ref: Mapping[str, Any]) -> str:
    size = format_size(int(ref.get("size", 0)))
    if ref.get("kind") == "image":
        subtype = str(ref.get("media_type", "")).partition("/")[2] or "image"
        return f"{subtype}, {size}"
    return f"{ref.get('name', 'file')}, {size}"


def _group(refs: Sequence[Mapping[str, Any]], noun: str) -> str:
    if len(refs) == 1:
        return f"1 {noun}, {_one(refs[0])}"
    return f"{len(refs)} {noun}s ({'; '.join(_one(r) for r in refs)})"


def describe_attachments(refs: Sequence[Mapping[str, Any]]) -> str:
    """``I received 1 image, png, 12 KB.`` or ``I received 2 images (png, 12 KB; gif,
    3 KB) and 1 text file, notes.md, 300 bytes.``; empty for no attachments."""
    images = [r for r in refs if r.get("kind") == "image"]
    texts = [r for r in refs if r.get("kind") != "image"]
    groups = [_group(images, "image")] if images else []
    if texts:
        groups.append(_group(texts, "text file"))
    return f"I received {' and '.join(groups)}." if groups else ""
