from django.urls import path, re_path

from jobs import job_views, query_views, views

urlpatterns = [
    path("rooms/", views.room_list, name="room-list"),
    path(
        "datasets/<slug:org>/<slug:slug>/suspension/",
        views.dataset_suspension,
        name="dataset-suspension",
    ),
    path("rooms/new/", views.room_create, name="room-create"),
    path("rooms/<slug:slug>/", views.room_detail, name="room-detail"),
    path("rooms/<slug:slug>/invite/", views.room_invite, name="room-invite"),
    path(
        "rooms/<slug:slug>/invitations/<int:membership_id>/",
        views.room_respond,
        name="room-respond",
    ),
    path("rooms/<slug:slug>/contribute/", views.room_contribute, name="room-contribute"),
    path(
        "rooms/<slug:slug>/participation/suspension/",
        views.participation_suspension,
        name="participation-suspension",
    ),
    path("rooms/<slug:slug>/queries/new/", query_views.query_create, name="query-create"),
    path("rooms/<slug:slug>/queries/plan/", query_views.query_plan, name="query-plan"),
    path("rooms/<slug:slug>/queries/<int:pk>/", query_views.query_detail, name="query-detail"),
    path("rooms/<slug:slug>/queries/<int:pk>/edit/", query_views.query_edit, name="query-edit"),
    path(
        "rooms/<slug:slug>/queries/<int:pk>/submit/", query_views.query_submit, name="query-submit"
    ),
    path(
        "rooms/<slug:slug>/queries/<int:pk>/revise/", query_views.query_revise, name="query-revise"
    ),
    path(
        "rooms/<slug:slug>/queries/<int:pk>/decide/", query_views.query_decide, name="query-decide"
    ),
    path(
        "rooms/<slug:slug>/queries/<int:pk>/approvals/<int:approval_id>/revoke/",
        query_views.approval_revoke,
        name="approval-revoke",
    ),
    path("approvals/", query_views.inbox, name="inbox"),
    path("rooms/<slug:slug>/queries/<int:pk>/run/", job_views.job_run, name="job-run"),
    path("rooms/<slug:slug>/jobs/<int:pk>/", job_views.job_detail, name="job-detail"),
    path("rooms/<slug:slug>/jobs/<int:pk>/cancel/", job_views.job_cancel, name="job-cancel"),
    path("rooms/<slug:slug>/jobs/<int:pk>/result/", job_views.result_detail, name="result-detail"),
    re_path(
        r"^rooms/(?P<slug>[-\w]+)/jobs/(?P<pk>\d+)/result\.(?P<fmt>json|csv)$",
        job_views.result_download,
        name="result-download",
    ),
    path(
        "rooms/<slug:slug>/jobs/<int:pk>/result/opening.json",
        job_views.result_opening,
        name="result-opening",
    ),
    re_path(
        r"^rooms/(?P<slug>[-\w]+)/jobs/(?P<pk>\d+)/result/files/(?P<name>[\w][\w.-]*)$",
        job_views.result_file,
        name="result-file",
    ),
    re_path(
        r"^rooms/(?P<slug>[-\w]+)/jobs/(?P<pk>\d+)/result/extract-(?P<fmt>csv|parquet)\.zip$",
        job_views.result_archive,
        name="result-archive",
    ),
    path("rooms/<slug:slug>/budget/", job_views.room_budget, name="room-budget"),
]
