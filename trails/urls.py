from django.urls import path

from trails import views

urlpatterns = [
    path("audit/", views.trail, name="audit-trail"),
    path("audit/bundles/", views.bundle_list, name="audit-bundles"),
    path("audit/bundles/<slug:slug>.zip", views.bundle_download, name="audit-bundle-download"),
    path("audit/bundles/<slug:slug>/prepare", views.bundle_prepare, name="audit-bundle-prepare"),
]
