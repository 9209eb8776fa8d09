from django.urls import include, path

urlpatterns = [
    path("", include("accounts.api_urls")),
    path("", include("parties.api_urls")),
    path("", include("jobs.api_urls")),
    path("", include("trails.api_urls")),
]
