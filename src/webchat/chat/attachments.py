"""Attachments: which uploads are accepted, who may read them, and how a run refers to them.

An upload is judged by its bytes, never by what the client says it is: an image must start
with the magic bytes of PNG, JPEG, WebP or GIF (so SVG, which can carry script, is never an
image here), and a text file must have an allowed extension and decode as UTF-8. The media
type stored (and later served) is the one sniffed here.

A run names attachments by id; the user turn keeps a reference to each (``attachment_ref``)
in its user block's payload, under ``attachments``, so history and every later run on that
branch still have them. The bytes are not in the turn (each turn carries the whole
transcript, so they would be copied into every turn): the scheduler loads them from the store
when a run starts and hands them to the engine with the turn (``Turn.attachment_data``).
"""

from __future__ import annotations

import hashlib
import re
import time
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any, Final, Literal

from webchat.auth.principal import Principal
from webchat.chat.access import ConversationAccess
from webchat.errors import (
    ForbiddenError,
    InvalidRequestError,
    UnknownConversationError,
    WebchatError,
)
from webchat.events import new_id
from webchat.profiles import Profile
from webchat.storage import AttachmentRecord, Store
from webchat.turns import Block, Turn

__all__ = [
    "ATTACHMENTS_KEY",
    "IMAGE_TYPES",
    "TEXT_EXTENSIONS",
    "AttachmentKind",
    "AttachmentService",
    "AttachmentTooLargeError",
    "UnsupportedAttachmentError",
    "attachment_ids",
    "attachment_ref",
    "kind_of",
    "sanitize_name",
    "sniff",
]

NAME_MAX: Final = 200

ATTACHMENTS_KEY: Final = "attachments"
"""The key of a user block's payload that lists its attachments (``attachment_ref``s)."""

AttachmentKind = Literal["image", "text"]

IMAGE_TYPES: Final = ("image/png", "image/jpeg", "image/webp", "image/gif")
"""Raster images only: the only types ever served ``inline``."""

TEXT_EXTENSIONS: Final[Mapping[str, str]] = {
    **dict.fromkeys(("txt", "log", "text"), "text/plain"),
    **dict.fromkeys(("md", "markdown"), "text/markdown"),
    "csv": "text/csv",
    "tsv": "text/tab-separated-values",
    "json": "application/json",
    **dict.fromkeys(
        (
            "py", "pyi", "js", "mjs", "cjs", "ts", "tsx", "jsx", "java", "kt", "c", "h",
            "cc", "cpp", "hpp", "cs", "go", "rs", "rb", "php", "swift", "scala", "sh",
            "bash", "zsh", "sql", "r", "lua", "pl", "hs", "ex", "exs", "erl", "dart",
            "yaml", "yml", "toml", "ini", "cfg", "conf", "xml", "css", "scss", "diff",
            "patch", "tex", "rst", "proto", "graphql", "dockerfile", "makefile",
        ),
        "text/plain",
    ),
}  # fmt: skip
"""Text files by extension (lower case). Source code is served as ``text/plain``: a
browser must never run or render it (HTML, SVG and JavaScript types are never used)."""

_UNSAFE_NAME = re.compile(r'[\x00-\x1f\x7f"\\/<>:|?*;]')


class AttachmentTooLargeError(WebchatError):
    status_code = 413


class UnsupportedAttachmentError(WebchatError):
    status_code = 415


def sanitize_name(name: str | None) -> str:
    """A file name safe to store, show and put in a header: the last path segment only,
    NFC, no control or quoting characters, at most ``NAME_MAX`` characters; ``file`` when
    nothing is left."""
    base = PurePosixPath((name or "").replace("\\", "/")).name
    clean = _UNSAFE_NAME.sub("_", unicodedata.normalize("NFC", base)).strip(" .")
    if len(clean) > NAME_MAX:
        _, dot, ext = clean.rpartition(".")
        keep = dot and len(ext) < 16  # the extension says what the file is: keep it
        clean = clean[: NAME_MAX - len(ext) - 1] + "." + ext if keep else clean[:NAME_MAX]
    return clean or "file"


def _image_type(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return None


def sniff(name: str, data: bytes) -> tuple[AttachmentKind, str]:
    """(kind, media type) of an upload, from its bytes (and, for text, its extension);
    raises ``UnsupportedAttachmentError`` (415) for anything else."""
    image = _image_type(data)
    if image is not None:
        return "image", image
    path = PurePosixPath(name.lower())
    extension = path.suffix.lstrip(".") or path.name  # "Makefile", "Dockerfile"
    media_type = TEXT_EXTENSIONS.get(extension)
    if media_type is None:
        raise UnsupportedAttachmentError(
            f"{name!r} is not an accepted file: images must be PNG, JPEG, WebP or GIF; text "
            "files must be .txt, .md, .csv, .json or source code"
        )
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise UnsupportedAttachmentError(f"{name!r} is not UTF-8 text") from None
    if b"\x00" in data:
        raise UnsupportedAttachmentError(f"{name!r} is not text (it holds NUL bytes)")
    return "text", media_type


def kind_of(media_type: str) -> AttachmentKind:
    return "image" if media_type in IMAGE_TYPES else "text"


def attachment_ref(record: AttachmentRecord) -> dict[str, Any]:
    """What a user block keeps of an attachment (no bytes): enough for a UI to draw a
    thumbnail (``url``) or a file chip, and for an engine to find the bytes (``id``)."""
    return {
        "id": record.id,
        "name": record.name,
        "media_type": record.media_type,
        "size": record.size,
        "kind": kind_of(record.media_type),
    }


def attachment_ids(blocks: Iterable[Block]) -> list[str]:
    """Every attachment id the blocks refer to, first mention first, each once."""
    seen: dict[str, None] = {}
    for block in blocks:
        for ref in block.attachments:
            if isinstance(ref.get("id"), str):
                seen.setdefault(ref["id"], None)
    return list(seen)


def check_profile(profile: Profile, kinds: Iterable[AttachmentKind]) -> None:
    """Refuse (403) attachments a profile has turned off, or a kind it does not take."""
    options = profile.attachments
    if not options.enabled:
        raise ForbiddenError(f"the profile {profile.slug!r} does not accept attachments")
    refused = sorted(set(kinds) - set(options.kinds))
    if refused:
        allowed = ", ".join(options.kinds) or "none"
        raise ForbiddenError(
            f"the profile {profile.slug!r} does not accept {' or '.join(refused)} "
            f"attachments (it accepts: {allowed})"
        )


class AttachmentService:
    """Uploads, reads and run references, with the conversation's ownership rules.

    ``max_bytes`` and ``max_files`` are the deployment's limits (``attachment_max_bytes``,
    ``attachment_max_files``): a file, or a message's count of them, beyond is a 413."""

    def __init__(
        self, store: Store, access: ConversationAccess, *, max_bytes: int, max_files: int
    ) -> None:
        self.store = store
        self.access = access
        self.max_bytes = max_bytes
        self.max_files = max_files

    def too_large(self, size: int | None = None) -> AttachmentTooLargeError:
        """The 413 for a file over ``max_bytes`` (``size``: how big it is, when known)."""
        limit = f"{self.max_bytes} bytes (attachment_max_bytes)"
        message = (
            f"the file is larger than the limit of {limit}"
            if size is None
            else f"the file is {size} bytes; the limit is {limit}"
        )
        return AttachmentTooLargeError(message, limit=self.max_bytes)

    async def upload(
        self, conv_id: str, user: Principal, profile: Profile, name: str | None, data: bytes
    ) -> AttachmentRecord:
        """Store a file in a conversation of ``user``'s (a new id becomes theirs)."""
        # Ownership first: someone else's conversation is a 404 whatever the file.
        await self.access.claim(conv_id, user, to_write=True)
        if len(data) > self.max_bytes:
            raise self.too_large(len(data))
        if not data:
            raise InvalidRequestError("the file is empty")
        clean = sanitize_name(name)
        kind, media_type = sniff(clean, data)
        check_profile(profile, [kind])
        record = AttachmentRecord(
            id=new_id(),
            conv_id=conv_id,
            owner=user.id,
            name=clean,
            media_type=media_type,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            created_at=time.time(),
        )
        await self.store.save_attachment(record, data)
        return record

    async def read(
        self, conv_id: str, attachment_id: str, user: Principal
    ) -> tuple[AttachmentRecord, bytes]:
        """The file, for its conversation's owner or an admin; 404 for anyone else and for
        an attachment that does not exist (the same answer: no existence is revealed)."""
        await self.access.check_read(conv_id, user)
        found = await self.store.load_attachment(conv_id, attachment_id)
        if found is None or await self.access.owner(conv_id) is None:
            raise UnknownConversationError(f"unknown attachment {attachment_id!r}")
        return found

    async def for_run(
        self, conv_id: str, profile: Profile, attachment_ids: Sequence[str]
    ) -> list[AttachmentRecord]:
        """The records of a run's new attachments: 413 for too many, 400 for an id this
        conversation does not have, 403 for what the profile refuses."""
        if not attachment_ids:
            return []
        if len(attachment_ids) > self.max_files:
            raise AttachmentTooLargeError(
                f"{len(attachment_ids)} attachments; a message may carry at most "
                f"{self.max_files} (attachment_max_files)",
                limit=self.max_files,
            )
        known = {r.id: r for r in await self.store.list_attachments(conv_id)}
        unknown = [i for i in attachment_ids if i not in known]
        if unknown:
            raise InvalidRequestError(
                f"unknown attachments {unknown}: conversation {conv_id!r} has no such upload",
                attachments=unknown,
            )
        records = [known[i] for i in dict.fromkeys(attachment_ids)]
        check_profile(profile, [kind_of(r.media_type) for r in records])
        return records

    async def load_data(self, conv_id: str, ids: Iterable[str]) -> dict[str, bytes]:
        """The bytes of the attachments ``ids`` (those still stored), for an engine."""
        data: dict[str, bytes] = {}
        for attachment_id in ids:
            found = await self.store.load_attachment(conv_id, attachment_id)
            if found is not None:
                data[attachment_id] = found[1]
        return data


def history_ids(turn: Turn | None) -> list[str]:
    """The attachment ids a branch's history (ending at ``turn``) refers to."""
    return attachment_ids(turn.blocks) if turn is not None else []
