"""Request types the views share."""

from django.contrib.auth.models import User
from django.http import HttpRequest
from django_htmx.middleware import HtmxDetails
from rest_framework.request import Request


class AuthenticatedHttpRequest(HttpRequest):
    """The request a `login_required` view receives: its user is signed in. Only a type: Django
    builds plain HttpRequests, and the decorator is what makes the narrower `user` true.
    `htmx` is what django-htmx's middleware (in every deployment's MIDDLEWARE) attaches."""

    user: User
    htmx: HtmxDetails


class AuthenticatedRequest(Request):
    """The request an API view receives behind `IsAuthenticated` (the default permission
    class): its user is signed in. Only a type, as AuthenticatedHttpRequest is."""

    user: User
