from django.urls import path

from accounts import api

urlpatterns = [
    path("token/", api.ObtainToken.as_view(), name="api-token"),
    path("tokens/", api.TokenList.as_view(), name="api-tokens"),
    path("tokens/<int:pk>/", api.TokenDetail.as_view(), name="api-token-detail"),
]
