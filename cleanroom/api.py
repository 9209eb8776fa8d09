"""One error format for the whole API: {"error": {"code", "message", "fields"}}."""

from collections.abc import Mapping

from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.defaults import page_not_found
from rest_framework import exceptions
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from cleanroom.errors import DomainError


def named_in_body(request, name: str) -> str:
    """A name the request's body gives, read before the body is validated (to ask first
    whether the caller may act for it); "" where the body is not an object or the name not text."""
    data = request.data
    value = data.get(name, "") if isinstance(data, Mapping) else ""
    return value if isinstance(value, str) else ""


class Pages(PageNumberPagination):
    """DRF's page numbers, but a `page` given empty is refused (404) like any page that is not
    a number, rather than read as the first."""

    def get_page_number(self, request, paginator):
        if request.query_params.get(self.page_query_param) == "":
            raise exceptions.NotFound("Invalid page.")
        return super().get_page_number(request, paginator)


def error_body(code: str, message: str, fields: dict | None = None) -> dict:
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """A URL no route matches: under /api/ in the API's error format, as every other refusal
    there is; elsewhere Django's page."""
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("not_found", "No such API endpoint."), status=404)
    return page_not_found(request, exception)


def exception_handler(exc, context):
    domain = exc if isinstance(exc, DomainError) else None
    if domain is not None:
        exc = exceptions.ValidationError({"non_field_errors": [str(domain)]}, code=domain.code)
        exc.status_code = 409 if getattr(domain, "conflict", False) else 400
    elif isinstance(exc, ValidationError):
        exc = exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else exc.messages
        )
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    detail = response.data
    fields = {}
    if isinstance(detail, dict) and "detail" not in detail:
        fields = detail
        message = _first_message(detail)
    elif isinstance(detail, list):
        message = _first_message(detail)
    else:
        message = str(detail.get("detail", detail))
    code = getattr(exc, "default_code", "error")
    if isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        if isinstance(codes, str):
            code = codes
    if domain is not None:
        # The named domain failure (e.g. invalid_dataset), not the generic "invalid".
        code = domain.code
    body = error_body(code, message, fields)
    return Response(body, status=response.status_code, headers=response.headers)


def _first_message(detail) -> str:
    if isinstance(detail, dict):
        for key, value in detail.items():
            text = _first_message(value)
            return text if key == "non_field_errors" else f"{key}: {text}"
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    return str(detail)
