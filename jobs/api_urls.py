from django.urls import path

from jobs.execution.api import JobCancel, JobDetail, QueryRun, RoomBudget
from jobs.queries.api import (
    ApprovalRevoke,
    Inbox,
    QueryDecision,
    QueryDetail,
    QueryList,
    QueryPlan,
    QuerySubmit,
)
from jobs.results.api import JobResult, JobResultFile
from jobs.rooms.api import (
    DatasetSuspension,
    RespondToInvitation,
    RoomContributions,
    RoomDetail,
    RoomInvitations,
    RoomList,
    RoomParticipationSuspension,
)

urlpatterns = [
    path("rooms/", RoomList.as_view(), name="api-rooms"),
    path(
        "datasets/<slug:org>/<slug:slug>/suspension/",
        DatasetSuspension.as_view(),
        name="api-dataset-suspension",
    ),
    path("rooms/<slug:slug>/", RoomDetail.as_view(), name="api-room"),
    path("rooms/<slug:slug>/invitations/", RoomInvitations.as_view(), name="api-invite"),
    path("rooms/<slug:slug>/accept/", RespondToInvitation.as_view(accept=True), name="api-accept"),
    path(
        "rooms/<slug:slug>/decline/",
        RespondToInvitation.as_view(accept=False),
        name="api-decline",
    ),
    path("rooms/<slug:slug>/datasets/", RoomContributions.as_view(), name="api-contribute"),
    path(
        "rooms/<slug:slug>/participation/suspension/",
        RoomParticipationSuspension.as_view(),
        name="api-participation-suspension",
    ),
    path("rooms/<slug:slug>/queries/", QueryList.as_view(), name="api-queries"),
    path("rooms/<slug:slug>/queries/plan/", QueryPlan.as_view(), name="api-query-plan"),
    path("rooms/<slug:slug>/queries/<int:pk>/", QueryDetail.as_view(), name="api-query"),
    path(
        "rooms/<slug:slug>/queries/<int:pk>/submit/",
        QuerySubmit.as_view(),
        name="api-query-submit",
    ),
    path(
        "rooms/<slug:slug>/queries/<int:pk>/approve/",
        QueryDecision.as_view(approve=True),
        name="api-query-approve",
    ),
    path(
        "rooms/<slug:slug>/queries/<int:pk>/reject/",
        QueryDecision.as_view(approve=False),
        name="api-query-reject",
    ),
    path(
        "rooms/<slug:slug>/queries/<int:pk>/approvals/<int:approval_id>/revoke/",
        ApprovalRevoke.as_view(),
        name="api-approval-revoke",
    ),
    path("approvals/", Inbox.as_view(), name="api-inbox"),
    path("rooms/<slug:slug>/queries/<int:pk>/run/", QueryRun.as_view(), name="api-query-run"),
    path("rooms/<slug:slug>/jobs/<int:pk>/", JobDetail.as_view(), name="api-job"),
    path("rooms/<slug:slug>/jobs/<int:pk>/cancel/", JobCancel.as_view(), name="api-job-cancel"),
    path("rooms/<slug:slug>/jobs/<int:pk>/result/", JobResult.as_view(), name="api-result"),
    path(
        "rooms/<slug:slug>/jobs/<int:pk>/result/files/<str:name>",
        JobResultFile.as_view(),
        name="api-result-file",
    ),
    path("rooms/<slug:slug>/budget/", RoomBudget.as_view(), name="api-budget"),
]
