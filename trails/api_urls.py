from django.urls import path

from trails import api

urlpatterns = [
    path("audit/events/", api.TrailEvents.as_view(), name="api-audit-events"),
    path("audit/checkpoints/", api.LatestCheckpoint.as_view(), name="api-audit-checkpoint"),
    path("audit/consistency/", api.ConsistencyProof.as_view(), name="api-audit-consistency"),
    path("audit/witness/", api.Witness.as_view(), name="api-audit-witness"),
    path("audit/bundles/", api.BundleList.as_view(), name="api-audit-bundles"),
    path("audit/bundles/<slug:slug>/", api.BundleDownload.as_view(), name="api-audit-bundle"),
]
