"""REST endpoints for the caller's own API tokens. Thin: rules in accounts.permissions, changes
in accounts.services."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import selectors, services
from accounts.models import ApiToken
from accounts.permissions import own_token, require_sign_in
from accounts.serializers import (
    ApiTokenSerializer,
    IssuedTokenSerializer,
    PasswordTokenRequestSerializer,
    TokenRequestSerializer,
)
from cleanroom.http import AuthenticatedRequest


def _issued(issued: services.IssuedToken) -> dict:
    data = IssuedTokenSerializer(issued.token).data
    data["token"] = issued.secret
    return data


class ObtainToken(APIView):
    """A new token for a username and password, lasting CLEANROOM_TOKEN_LIFETIME_DAYS unless
    `expires_in_days` asks for less. Repeated wrong passwords are locked out (django-axes)."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(request=PasswordTokenRequestSerializer, responses=IssuedTokenSerializer)
    def post(self, request: Request) -> Response:
        serializer = PasswordTokenRequestSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        issued = services.issue_token(
            user=data["user"], name=data["name"], days=data.get("expires_in_days")
        )
        return Response(_issued(issued))


class TokenList(APIView):
    """The caller's tokens (GET); a new one (POST), from a signed-in session only."""

    @extend_schema(responses=ApiTokenSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response(ApiTokenSerializer(selectors.tokens_of(request.user), many=True).data)

    @extend_schema(request=TokenRequestSerializer, responses={201: IssuedTokenSerializer})
    def post(self, request: AuthenticatedRequest) -> Response:
        require_sign_in(isinstance(request.auth, ApiToken))
        serializer = TokenRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        issued = services.issue_token(
            user=request.user,
            name=serializer.validated_data["name"],
            days=serializer.validated_data.get("expires_in_days"),
        )
        return Response(_issued(issued), status=status.HTTP_201_CREATED)


class TokenDetail(APIView):
    """One of the caller's tokens; DELETE revokes it at once (another user's: 404)."""

    @extend_schema(responses=ApiTokenSerializer)
    def get(self, request: Request, pk: int) -> Response:
        return Response(ApiTokenSerializer(own_token(request.user, pk)).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        services.revoke_token(token=own_token(request.user, pk), by=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
