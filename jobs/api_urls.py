from django.urls import path

from jobs import api

urlpatterns = [
    path("rooms/", api.RoomList.as_view(), name="api-rooms"),
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
]
