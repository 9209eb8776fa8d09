"""The API's description (drf-spectacular), made to tell the truth about refusals.

Every operation lists the error answers it can give, each in the one error format of
`cleanroom.api.exception_handler`, from rules on what the operation is:

- 401 where the operation needs a logged-in caller (all but `POST /api/token/`);
- 404 where the path names an object (what the caller may not see is not found, by design)
  or the list is paginated (a page past the end);
- 400 and 403 for every change (POST, PUT, PATCH, DELETE) a caller makes: its input or a rule
  refused, or its role does not allow it.

Where those rules are wrong for an operation, its view says so in `refusals`: the 4xx answers
(besides 401) that each of its methods gives, e.g. a read an invitee is refused (403), or a
change refused for the object's current state (409). `tests/test_openapi.py` holds the schema
to the authorization matrix and runs schemathesis against a live server.
"""

from __future__ import annotations

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.plumbing import ResolvedComponent
from rest_framework import serializers
from rest_framework.permissions import AllowAny

ERROR_COMPONENT = "Error"

ERROR_SCHEMA = {
    "type": "object",
    "description": "The one error format of every refusal.",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {
                    "type": "string",
                    "description": "What went wrong, for programs: e.g. not_found, "
                    "permission_denied, invalid, already_decided.",
                },
                "message": {"type": "string", "description": "What went wrong, for people."},
                "fields": {
                    "type": "object",
                    "description": "Per input field, its problems (empty unless the input "
                    "was refused).",
                    "additionalProperties": True,
                },
            },
            "required": ["code", "message", "fields"],
        }
    },
    "required": ["error"],
}

ERROR_DESCRIPTIONS = {
    400: "Refused: the input is invalid, or a rule forbids what it asks.",
    401: "Not logged in: send `Authorization: Token <key>` (POST /api/token/).",
    403: "Your roles do not allow this.",
    404: "No such object, or none you may see.",
    409: "Refused for the object's current state (already decided, already ran, ...).",
}

UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


class AutoSchema(SpectacularAutoSchema):
    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        for status in sorted(self.error_statuses()):
            responses.setdefault(str(status), self._error_response(status))
        return responses

    def error_statuses(self) -> set[int]:
        statuses: set[int] = set()
        authenticated = not all(
            isinstance(permission, AllowAny) for permission in self.view.get_permissions()
        )
        if authenticated:
            statuses.add(401)
        declared = getattr(self.view, "refusals", {}).get(self.method)
        if declared is not None:
            return statuses | set(declared)
        if "{" in self.path or (self._is_list_view() and self._get_paginator()):
            statuses.add(404)
        if self.method in UNSAFE_METHODS:
            statuses.add(400)
            if authenticated:
                statuses.add(403)
        return statuses

    def _error_response(self, status: int) -> dict:
        component = ResolvedComponent(
            name=ERROR_COMPONENT,
            type=ResolvedComponent.SCHEMA,
            object=ERROR_COMPONENT,
            schema=ERROR_SCHEMA,
        )
        self.registry.register_on_missing(component)
        return {
            "content": {"application/json": {"schema": component.ref}},
            "description": ERROR_DESCRIPTIONS[status],
        }

    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if isinstance(field, serializers.DecimalField) and "pattern" in schema:
            schema["pattern"] = decimal_pattern(field)
        return schema


def decimal_pattern(field: serializers.DecimalField) -> str:
    """What the field accepts as a string: drf-spectacular's pattern also matches "", "-" and
    ".", and a negative number where the field's minimum is 0."""
    sign = "" if field.min_value is not None and field.min_value >= 0 else "-?"
    whole, places = field.max_whole_digits, field.decimal_places
    return rf"^{sign}(?:\d{{1,{whole}}}(?:\.\d{{0,{places}}})?|\.\d{{1,{places}}})$"
