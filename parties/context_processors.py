from parties.models import Membership
from parties.permissions import Permission
from parties.selectors import organizations_where


def memberships(request) -> dict:
    """The caller's organisations and roles, for the navigation of every page."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    rows = Membership.objects.filter(user=user).select_related("organization")
    roles: dict = {}
    for row in rows:
        roles.setdefault(row.organization, []).append(row.get_role_display())
    return {
        "my_organizations": roles,
        "is_regulator": user.authorities.exists(),
        # Links to what the caller may do only: an auditor or a regulator is not offered a
        # page that refuses them.
        "can_create_rooms": bool(organizations_where(user, Permission.CREATE_ROOMS)),
    }
