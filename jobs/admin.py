from django.contrib import admin

from jobs.models import Room, RoomDataset, RoomMembership


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class MembershipInline(ReadOnlyInline):
    model = RoomMembership
    fields = readonly_fields = ("organization", "status", "responded_at")


class ContributionInline(ReadOnlyInline):
    model = RoomDataset
    fields = readonly_fields = ("dataset", "version", "policy", "contributed_at")


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    """Operators see who is in a room; membership changes only through the members' services."""

    list_display = ["name", "slug", "created_by_organization", "created_at"]
    readonly_fields = ["slug", "created_by_organization", "created_by"]
    inlines = [MembershipInline, ContributionInline]

    def has_add_permission(self, request):
        return False
