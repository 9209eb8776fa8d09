"""Keeps each signed-in session's record current (accounts.services.session_seen)."""

from __future__ import annotations

from accounts import services


class SessionRecordMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        # Only requests that carry a session cookie can be signed in: the others (API calls
        # with a token, health checks) cost nothing here.
        if request.session.session_key and request.user.is_authenticated:
            services.session_seen(request)
        return self.get_response(request)
