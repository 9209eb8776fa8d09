"""Operators manage jurisdictions, sites, organisations and memberships here; never data."""

from django.contrib import admin

from parties.models import (
    AnalysisPolicy,
    Authority,
    Column,
    Dataset,
    DatasetVersion,
    Jurisdiction,
    Membership,
    Organization,
    Site,
)


@admin.register(Jurisdiction)
class JurisdictionAdmin(admin.ModelAdmin):
    list_display = ["code", "name", "legal_framework"]
    filter_horizontal = ["raw_processing_in", "shares_may_go_to", "outputs_may_go_to"]


@admin.register(Site)
class SiteAdmin(admin.ModelAdmin):
    list_display = ["name", "jurisdiction", "kind", "active"]
    list_filter = ["jurisdiction", "kind", "active"]


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "created_at"]
    inlines = [MembershipInline]


@admin.register(Authority)
class AuthorityAdmin(admin.ModelAdmin):
    list_display = ["name", "slug"]
    filter_horizontal = ["jurisdictions", "members"]


class ReadOnlyAdmin(admin.ModelAdmin):
    """Datasets, versions and policies change only through the owners' services."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Dataset)
class DatasetAdmin(ReadOnlyAdmin):
    list_display = ["qualified_name", "jurisdiction", "created_at"]


class ColumnInline(admin.TabularInline):
    model = Column
    extra = 0
    can_delete = False
    fields = readonly_fields = ("position", "name", "type", "role", "domain", "lower", "upper")


@admin.register(DatasetVersion)
class DatasetVersionAdmin(ReadOnlyAdmin):
    list_display = ["dataset", "number", "row_count", "created_at"]
    exclude = ["wrapped_data_key"]
    inlines = [ColumnInline]


@admin.register(AnalysisPolicy)
class AnalysisPolicyAdmin(ReadOnlyAdmin):
    list_display = ["dataset", "version", "created_at"]
