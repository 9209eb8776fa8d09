"""Model choices from the data plane's enums, so each enum is defined once: the data plane has
no Django, and the models, forms and serializers take their choices from here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from django.db import models


class LabelledMember(Protocol):
    """A member of one of the data plane's enums, which each give their members a `label`."""

    @property
    def name(self) -> str: ...

    @property
    def value(self) -> str: ...

    @property
    def label(self) -> str: ...


def text_choices(
    name: str, members: Sequence[LabelledMember], *, first: tuple[str, str, str] | None = None
) -> type[models.TextChoices]:
    """A TextChoices with the members' values and labels, after `first` (name, value, label)
    when given."""
    pairs = [(m.name, (m.value, m.label)) for m in members]
    if first:
        pairs.insert(0, (first[0], first[1:]))
    # The Enum functional API; django-stubs type only TextChoices' member constructor.
    return models.TextChoices(name, pairs)  # type: ignore[call-overload]
