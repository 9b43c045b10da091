"""Uploads stream to a temporary file with their SHA-256 computed on the fly, under a size cap.

`CappedHashingUploadHandler` replaces Django's default handlers on the registry's upload views:
every chunk is hashed and written as it arrives, so memory stays bounded whatever the size, and
the request is refused with 413 the moment it passes `MODELDECK_MAX_UPLOAD_BYTES`, with nothing
left on disk.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
import unicodedata
from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler

from common.errors import ApplicationError

# Room for the multipart boundaries and the small text fields next to the files.
_FORM_OVERHEAD_BYTES = 64 * 1024
_MAX_NAME_LENGTH = 200
_COPY_CHUNK = 1024 * 1024


class UploadTooLarge(ApplicationError):
    """The request body is bigger than the registry accepts (answered with 413)."""

    def __init__(self, limit: int):
        message = f"The upload is larger than the limit of {format_bytes(limit)}."
        super().__init__(message, {"limit_bytes": limit}, status=413)


def format_bytes(size: float) -> str:
    """A size as people read it: 512 bytes, 1.5 MiB, 2 GiB."""
    if size < 1024:
        return f"{int(size)} bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        size /= 1024
        if size < 1024 or unit == "TiB":
            return f"{size:.1f} {unit}".replace(".0 ", " ")
    raise AssertionError("unreachable")


def clean_file_name(name: str | None, *, default: str = "model.onnx") -> str:
    """The uploader's file name made safe to keep as metadata: no path parts, no control
    characters, bounded length. It is never used as a path; templates escape it."""
    name = unicodedata.normalize("NFKC", str(name or ""))
    name = re.split(r"[\\/]", name)[-1]
    name = "".join(
        char for char in name if unicodedata.category(char)[0] not in "CZ" or char == " "
    )
    name = name.strip()
    if name.strip(".") == "":
        return default
    if len(name) > _MAX_NAME_LENGTH:
        stem, dot, extension = name.rpartition(".")
        if dot and 0 < len(extension) <= 16:
            name = f"{stem[: _MAX_NAME_LENGTH - len(extension) - 2]}….{extension}"
        else:
            name = name[: _MAX_NAME_LENGTH - 1] + "…"
    return name


class HashedUpload(UploadedFile):
    """An uploaded file in a private temporary file, with its size and SHA-256 known.

    Storage backends move it (FileSystemStorage renames `temporary_file_path()`), so a big
    upload is never copied through memory. Closing it deletes the temporary file.
    """

    def __init__(
        self,
        *,
        name: str,
        content_type: str = "application/octet-stream",
        charset: str | None = None,
        content_type_extra: dict | None = None,
    ):
        file = tempfile.NamedTemporaryFile(suffix=".upload", dir=settings.FILE_UPLOAD_TEMP_DIR)  # noqa: SIM115
        super().__init__(file, clean_file_name(name), content_type, 0, charset, content_type_extra)
        self.sha256 = ""

    def temporary_file_path(self) -> str:
        return self.file.name

    def close(self):
        try:
            return self.file.close()
        except FileNotFoundError:
            # Storage moved the file away: nothing is left to delete.
            pass

    @classmethod
    def from_stream(cls, stream, *, name: str, limit: int | None = None) -> HashedUpload:
        """Copy any readable binary stream into a new upload, hashing as it goes."""
        upload = cls(name=name)
        digest = hashlib.sha256()
        size = 0
        while chunk := stream.read(_COPY_CHUNK):
            size += len(chunk)
            if limit is not None and size > limit:
                upload.close()
                raise UploadTooLarge(limit)
            digest.update(chunk)
            upload.file.write(chunk)
        upload.file.flush()
        upload.file.seek(0)
        upload.size = size
        upload.sha256 = digest.hexdigest()
        return upload

    @classmethod
    def from_path(cls, path: Path, *, name: str | None = None) -> HashedUpload:
        """Copy a local file into a new upload (used by commands and tests)."""
        with open(path, "rb") as stream:
            return cls.from_stream(stream, name=name or path.name)


def as_hashed_upload(file, *, limit: int | None = None) -> HashedUpload:
    """The file itself when the upload handler already hashed it, else a hashed copy."""
    if isinstance(file, HashedUpload) and file.sha256:
        return file
    file.seek(0)
    return HashedUpload.from_stream(file, name=getattr(file, "name", "") or "", limit=limit)


class CappedHashingUploadHandler(FileUploadHandler):
    """Streams every file of a multipart request to disk, hashing it, under one total cap."""

    def __init__(self, request=None, *, max_bytes: int | None = None):
        super().__init__(request)
        self.max_bytes = settings.MODELDECK_MAX_UPLOAD_BYTES if max_bytes is None else max_bytes
        self.received = 0
        self.uploads: list[HashedUpload] = []
        self.upload: HashedUpload | None = None
        self.digest = hashlib.sha256()

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        limit = self.max_bytes + settings.DATA_UPLOAD_MAX_MEMORY_SIZE + _FORM_OVERHEAD_BYTES
        if content_length and content_length > limit:
            # Refuse before reading a byte: the declared body cannot fit.
            raise UploadTooLarge(self.max_bytes)

    def new_file(
        self,
        field_name,
        file_name,
        content_type,
        content_length,
        charset=None,
        content_type_extra=None,
    ):
        super().new_file(
            field_name, file_name, content_type, content_length, charset, content_type_extra
        )
        self.upload = HashedUpload(
            name=file_name,
            content_type=content_type,
            charset=charset,
            content_type_extra=content_type_extra,
        )
        self.uploads.append(self.upload)
        self.digest = hashlib.sha256()

    def receive_data_chunk(self, raw_data, start):
        self.received += len(raw_data)
        if self.received > self.max_bytes:
            self.discard()
            raise UploadTooLarge(self.max_bytes)
        self.digest.update(raw_data)
        self.upload.file.write(raw_data)
        return None

    def file_complete(self, file_size):
        upload = self.upload
        upload.file.flush()
        upload.file.seek(0)
        upload.size = file_size
        upload.sha256 = self.digest.hexdigest()
        return upload

    def upload_interrupted(self):
        self.discard()

    def discard(self) -> None:
        """Delete every temporary file this request created."""
        for upload in self.uploads:
            upload.close()
        self.uploads.clear()


def copy_to_path(upload: UploadedFile, destination: Path) -> None:
    """Copy an upload's bytes to a local path in chunks."""
    upload.seek(0)
    with open(destination, "wb") as out:
        shutil.copyfileobj(upload, out, length=_COPY_CHUNK)
