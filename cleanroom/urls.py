from csp.decorators import csp_update
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerSplitView,
)

from cleanroom import views

handler404 = "cleanroom.api.not_found"
FAVICON = "img/favicon.svg"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("healthz", views.healthz, name="healthz"),
    # Pages link the icon; a browser asks /favicon.ico of those that do not (the admin, JSON).
    path("favicon.ico", RedirectView.as_view(url=static(FAVICON), permanent=True), name="favicon"),
    path("metrics", views.metrics, name="metrics"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("accounts.urls")),
    path("", include("parties.urls")),
    path("", include("jobs.urls")),
    path("", include("trails.urls")),
    path("api/", include("cleanroom.api_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # Swagger UI from the project's static files, with a template of its own (a language, a main
    # landmark, and its styles as a file); the split view serves its start-up script as a file
    # of its own, not inline. Swagger UI sets inline styles as it renders, which this one
    # page allows (styles only: scripts stay the project's own).
    path(
        "api/docs/",
        csp_update({"style-src": ["'unsafe-inline'"]})(
            SpectacularSwaggerSplitView.as_view(
                url_name="api-schema", template_name="api_swagger.html"
            )
        ),
        name="api-docs",
    ),
    # The same reference in ReDoc, from the project's static files with a template of its own
    # (drf-spectacular's loads web fonts from Google and has inline script). ReDoc styles
    # itself inline and runs its search in a worker made from a blob: URL, which this page
    # allows; its scripts stay the project's own.
    path(
        "api/redoc/",
        csp_update({"style-src": ["'unsafe-inline'"], "worker-src": ["blob:"]})(
            SpectacularRedocView.as_view(url_name="api-schema", template_name="api_redoc.html")
        ),
        name="api-redoc",
    ),
    path("operator/", admin.site.urls),
]
