from django.urls import include, path
from rest_framework.authtoken.views import obtain_auth_token

urlpatterns = [
    path("token/", obtain_auth_token, name="api-token"),
    path("", include("parties.api_urls")),
    path("", include("jobs.api_urls")),
    path("", include("trails.api_urls")),
]
