from django.urls import path, re_path

from jobs.execution.views import job_cancel, job_detail, job_run, room_budget
from jobs.queries.views import (
    approval_revoke,
    inbox,
    query_create,
    query_decide,
    query_detail,
    query_edit,
    query_plan,
    query_revise,
    query_submit,
)
from jobs.results.views import (
    result_archive,
    result_detail,
    result_download,
    result_file,
    result_opening,
)
from jobs.rooms.views import (
    dataset_suspension,
    participation_suspension,
    room_contribute,
    room_create,
    room_detail,
    room_invite,
    room_list,
    room_respond,
)
from jobs.sites import views as site_api

urlpatterns = [
    path("rooms/", room_list, name="room-list"),
    path(
        "datasets/<slug:org>/<slug:slug>/suspension/",
        dataset_suspension,
        name="dataset-suspension",
    ),
    path("rooms/new/", room_create, name="room-create"),
    path("rooms/<slug:slug>/", room_detail, name="room-detail"),
    path("rooms/<slug:slug>/invite/", room_invite, name="room-invite"),
    path(
        "rooms/<slug:slug>/invitations/<int:membership_id>/",
        room_respond,
        name="room-respond",
    ),
    path("rooms/<slug:slug>/contribute/", room_contribute, name="room-contribute"),
    path(
        "rooms/<slug:slug>/participation/suspension/",
        participation_suspension,
        name="participation-suspension",
    ),
    path("rooms/<slug:slug>/queries/new/", query_create, name="query-create"),
    path("rooms/<slug:slug>/queries/plan/", query_plan, name="query-plan"),
    path("rooms/<slug:slug>/queries/<int:pk>/", query_detail, name="query-detail"),
    path("rooms/<slug:slug>/queries/<int:pk>/edit/", query_edit, name="query-edit"),
    path("rooms/<slug:slug>/queries/<int:pk>/submit/", query_submit, name="query-submit"),
    path("rooms/<slug:slug>/queries/<int:pk>/revise/", query_revise, name="query-revise"),
    path("rooms/<slug:slug>/queries/<int:pk>/decide/", query_decide, name="query-decide"),
    path(
        "rooms/<slug:slug>/queries/<int:pk>/approvals/<int:approval_id>/revoke/",
        approval_revoke,
        name="approval-revoke",
    ),
    path("approvals/", inbox, name="inbox"),
    path("rooms/<slug:slug>/queries/<int:pk>/run/", job_run, name="job-run"),
    path("rooms/<slug:slug>/jobs/<int:pk>/", job_detail, name="job-detail"),
    path("rooms/<slug:slug>/jobs/<int:pk>/cancel/", job_cancel, name="job-cancel"),
    path("rooms/<slug:slug>/jobs/<int:pk>/result/", result_detail, name="result-detail"),
    re_path(
        r"^rooms/(?P<slug>[-\w]+)/jobs/(?P<pk>\d+)/result\.(?P<fmt>json|csv)$",
        result_download,
        name="result-download",
    ),
    path(
        "rooms/<slug:slug>/jobs/<int:pk>/result/opening.json",
        result_opening,
        name="result-opening",
    ),
    re_path(
        r"^rooms/(?P<slug>[-\w]+)/jobs/(?P<pk>\d+)/result/files/(?P<name>[\w][\w.-]*)$",
        result_file,
        name="result-file",
    ),
    re_path(
        r"^rooms/(?P<slug>[-\w]+)/jobs/(?P<pk>\d+)/result/extract-(?P<fmt>csv|parquet)\.zip$",
        result_archive,
        name="result-archive",
    ),
    path("rooms/<slug:slug>/budget/", room_budget, name="room-budget"),
    # The site API (jobs/sites/): signed by sites, never by users.
    *[
        path(f"site-api/jobs/<int:pk>/{act}", view, name=f"site-api-{act}")
        for act, view in site_api.JOB_ACTS.items()
    ],
    *[
        path(f"site-api/steps/<int:pk>/{act}", view, name=f"site-api-step-{act}")
        for act, view in site_api.STEP_ACTS.items()
    ],
]
