from django.urls import path

from jobs import views

urlpatterns = [
    path("rooms/", views.room_list, name="room-list"),
    path("rooms/new/", views.room_create, name="room-create"),
    path("rooms/<slug:slug>/", views.room_detail, name="room-detail"),
    path("rooms/<slug:slug>/invite/", views.room_invite, name="room-invite"),
    path(
        "rooms/<slug:slug>/invitations/<int:membership_id>/",
        views.room_respond,
        name="room-respond",
    ),
    path("rooms/<slug:slug>/contribute/", views.room_contribute, name="room-contribute"),
]
