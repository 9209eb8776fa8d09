from django.urls import path

from jobs import api

urlpatterns = [
    path("rooms/", api.RoomList.as_view(), name="api-rooms"),
    path(
        "datasets/<slug:org>/<slug:slug>/suspension/",
        api.DatasetSuspension.as_view(),
        name="api-dataset-suspension",
    ),
    path("rooms/<slug:slug>/", api.RoomDetail.as_view(), name="api-room"),
    path("rooms/<slug:slug>/invitations/", api.RoomInvitations.as_view(), name="api-invite"),
    path(
        "rooms/<slug:slug>/accept/", api.RespondToInvitation.as_view(accept=True), name="api-accept"
    ),
    path(
        "rooms/<slug:slug>/decline/",
        api.RespondToInvitation.as_view(accept=False),
        name="api-decline",
    ),
    path("rooms/<slug:slug>/datasets/", api.RoomContributions.as_view(), name="api-contribute"),
    path(
        "rooms/<slug:slug>/participation/suspension/",
        api.RoomParticipationSuspension.as_view(),
        name="api-participation-suspension",
    ),
    path("rooms/<slug:slug>/queries/", api.QueryList.as_view(), name="api-queries"),
    path("rooms/<slug:slug>/queries/plan/", api.QueryPlan.as_view(), name="api-query-plan"),
    path("rooms/<slug:slug>/queries/<int:pk>/", api.QueryDetail.as_view(), name="api-query"),
    path(
        "rooms/<slug:slug>/queries/<int:pk>/submit/",
        api.QuerySubmit.as_view(),
        name="api-query-submit",
    ),
    path(
        "rooms/<slug:slug>/queries/<int:pk>/approve/",
        api.QueryDecision.as_view(approve=True),
        name="api-query-approve",
    ),
    path(
        "rooms/<slug:slug>/queries/<int:pk>/reject/",
        api.QueryDecision.as_view(approve=False),
        name="api-query-reject",
    ),
    path(
        "rooms/<slug:slug>/queries/<int:pk>/approvals/<int:approval_id>/revoke/",
        api.ApprovalRevoke.as_view(),
        name="api-approval-revoke",
    ),
    path("approvals/", api.Inbox.as_view(), name="api-inbox"),
    path("rooms/<slug:slug>/queries/<int:pk>/run/", api.QueryRun.as_view(), name="api-query-run"),
    path("rooms/<slug:slug>/jobs/<int:pk>/", api.JobDetail.as_view(), name="api-job"),
    path("rooms/<slug:slug>/jobs/<int:pk>/cancel/", api.JobCancel.as_view(), name="api-job-cancel"),
    path("rooms/<slug:slug>/jobs/<int:pk>/result/", api.JobResult.as_view(), name="api-result"),
    path(
        "rooms/<slug:slug>/jobs/<int:pk>/result/files/<str:name>",
        api.JobResultFile.as_view(),
        name="api-result-file",
    ),
    path("rooms/<slug:slug>/budget/", api.RoomBudget.as_view(), name="api-budget"),
]
