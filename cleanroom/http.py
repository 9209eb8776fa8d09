"""Request types the views share."""

from django.contrib.auth.models import User
from django.http import HttpRequest


class AuthenticatedHttpRequest(HttpRequest):
    """The request a `login_required` view receives: its user is signed in. Only a type: Django
    builds plain HttpRequests, and the decorator is what makes the narrower `user` true."""

    user: User
