"""A fake autotagger for the cross-check tests: fixed opinions, no model."""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from pathlib import Path

from tasks.crosscheck.autotag import Tags


class FakeTagger:
    """Fixed opinions by face file name; records the faces it was asked about."""

    name = "local"
    paid = False

    def __init__(self, opinions: dict[str, Tags]) -> None:
        self.opinions = opinions
        self.seen: list[str] = []

    def tag(self, images: Sequence[str | PathLike[str]]) -> list[Tags]:
        """One `Tags` per image, in order; a face without an opinion gets 'tagger found no face'."""
        self.seen.extend(Path(p).name for p in images)
        return [self.opinions.get(Path(p).name, Tags(note="tagger found no face")) for p in images]
