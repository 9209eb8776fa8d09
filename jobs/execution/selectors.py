"""Reads about jobs, scoped to the room's readers."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.shortcuts import get_object_or_404

from jobs.models import Job
from jobs.rooms.selectors import get_room_for_reader


def get_job_for_reader(user: User, slug: str, pk: int) -> Job:
    """A job of a room the caller reads (jobs/permissions.py: outsiders 404, invitees 403)."""
    room = get_room_for_reader(user, slug)
    return get_object_or_404(
        Job.objects.select_related("query__room", "site__jurisdiction"), pk=pk, query__room=room
    )
