"""The one exception the model raises for bad input."""

from __future__ import annotations


class FormatError(Exception):
    """The bytes do not hold what the format says they must.

    ``structure`` names what was being decoded (``"superblock"``, ``"tree block"``,
    ``"leaf item 3"``...), ``offset`` is the byte offset in the image (physical) where it
    lies, and ``logical`` the btrfs logical address when there is one.
    """

    def __init__(
        self, structure: str, offset: int, message: str, logical: int | None = None
    ) -> None:
        self.structure = structure
        self.offset = offset
        self.logical = logical
        self.message = message
        where = f"offset {offset}"
        if logical is not None:
            where += f" (logical {logical})"
        super().__init__(f"{structure} at {where}: {message}")
