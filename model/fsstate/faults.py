"""Planted bugs for testing the tests: a :class:`Faults` object is passed to the model by
whoever wants a wrong model (the planted-bug property test, ``fsoracle stress replay
--fault``). The model reads nothing from its environment."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Faults:
    """Each flag makes the model wrong in one named way.

    - ``truncate_extra_byte``: a truncate that shrinks a file keeps one byte too many
      (the new size is ``size + 1``; the kept byte is the old content's).
    - ``rename_no_replace``: a rename onto an existing name succeeds but changes nothing
      (the target is not replaced and the source stays where it was).
    """

    truncate_extra_byte: bool = False
    rename_no_replace: bool = False

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def parse(cls, spec: str) -> Faults:
        """``"truncate_extra_byte,rename_no_replace"`` -> Faults; ``""`` -> no faults."""
        on: dict[str, bool] = {}
        for name in (s.strip() for s in spec.split(",")):
            if not name:
                continue
            if name not in cls.names():
                raise ValueError(f"unknown fault {name!r}: one of {', '.join(cls.names())}")
            on[name] = True
        return cls(**on)

    def spec(self) -> str:
        return ",".join(n for n in self.names() if getattr(self, n))

    def __bool__(self) -> bool:
        return bool(self.spec())
