from django.urls import path

from parties import views

urlpatterns = [
    path("datasets/", views.dataset_list, name="dataset-list"),
    path("datasets/new/", views.dataset_create, name="dataset-create"),
    path("datasets/schema/", views.schema_suggestion, name="dataset-schema"),
    path("datasets/<slug:org>/<slug:slug>/", views.dataset_detail, name="dataset-detail"),
    path(
        "datasets/<slug:org>/<slug:slug>/versions/new/", views.version_create, name="version-create"
    ),
    path("datasets/<slug:org>/<slug:slug>/policy/", views.policy_edit, name="policy-edit"),
]
