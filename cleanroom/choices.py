"""Model choices from the data plane's enums, so each enum is defined once: the data plane has
no Django, and the models, forms and serializers take their choices from here."""

from __future__ import annotations

from enum import StrEnum

from django.db import models


def text_choices(
    name: str, members: list[StrEnum], *, first: tuple[str, str, str] | None = None
) -> type[models.TextChoices]:
    """A TextChoices with the members' values and labels (each member has a `label`), after
    `first` (name, value, label) when given."""
    pairs = [(m.name, (m.value, m.label)) for m in members]
    if first:
        pairs.insert(0, (first[0], first[1:]))
    return models.TextChoices(name, pairs)
