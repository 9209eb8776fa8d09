from django.urls import path

from parties import api

urlpatterns = [
    path("organizations/", api.OrganizationList.as_view(), name="api-organizations"),
    path(
        "organizations/<slug:org>/credentials/",
        api.MachineKeys.as_view(),
        name="api-approval-credentials",
    ),
    path(
        "organizations/<slug:org>/credentials/<int:pk>/remove/",
        api.CredentialRemove.as_view(),
        name="api-approval-credential-remove",
    ),
    path("jurisdictions/", api.JurisdictionList.as_view(), name="api-jurisdictions"),
    path("sites/", api.SiteList.as_view(), name="api-sites"),
    path("datasets/", api.DatasetList.as_view(), name="api-datasets"),
    path("datasets/infer-schema/", api.InferSchema.as_view(), name="api-infer-schema"),
    path("datasets/<slug:org>/<slug:slug>/", api.DatasetDetail.as_view(), name="api-dataset"),
    path(
        "datasets/<slug:org>/<slug:slug>/versions/",
        api.DatasetVersionList.as_view(),
        name="api-dataset-versions",
    ),
    path("datasets/<slug:org>/<slug:slug>/policy/", api.PolicyDetail.as_view(), name="api-policy"),
    path(
        "datasets/<slug:org>/<slug:slug>/policies/",
        api.PolicyHistory.as_view(),
        name="api-policy-history",
    ),
]
