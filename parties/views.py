"""Dataset pages. Thin: selectors read, services change, the templates show metadata only."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.core.files.uploadedfile import TemporaryUploadedFile, UploadedFile
from django.forms import Form
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from cleanroom.errors import DomainError
from cleanroom.http import AuthenticatedHttpRequest
from parties import selectors, services
from parties.forms import DatasetForm, PolicyForm, VersionForm, schema_from_post
from parties.ingest import ColumnSpec, IngestError, detect_format, infer_schema
from parties.models import Column, DatasetVersion
from parties.permissions import Permission, has_permission
from parties.uploads import discard, refusal_of, stage, staged_file, staged_filename


@login_required
@require_GET
def dataset_list(request: AuthenticatedHttpRequest) -> HttpResponse:
    datasets = selectors.datasets_for(request.user).prefetch_related("versions")
    can_upload = bool(selectors.organizations_where(request.user, Permission.MANAGE_DATASETS))
    return render(
        request, "parties/dataset_list.html", {"datasets": datasets, "can_upload": can_upload}
    )


# What a page shows of a schema: as inferred from the file, or as the owner confirmed it.
Schema = list[ColumnSpec] | list[dict[str, Any]]
# Stores the file at a path, under its filename and confirmed schema, as a dataset version.
Store = Callable[[Path, str, list[dict[str, Any]]], DatasetVersion]


def _uploaded_path(upload: UploadedFile) -> Path:
    """Where the uploaded file is: uploads stream to temporary files, never into memory
    (FILE_UPLOAD_HANDLERS)."""
    if not isinstance(upload, TemporaryUploadedFile):
        raise ImproperlyConfigured("Uploads must stream to temporary files (FILE_UPLOAD_HANDLERS).")
    return Path(upload.temporary_file_path())


def _schema_context(fmt: str, specs: Schema) -> dict[str, Any]:
    return {
        "format": fmt,
        "specs": specs,
        "types": Column.Type.choices,
        "roles": Column.Role.choices,
    }


@login_required
@require_POST
def schema_suggestion(request: AuthenticatedHttpRequest) -> HttpResponse:
    """htmx: the confirmation table for a sample of the chosen file. Stores nothing."""
    if not selectors.organizations_where(request.user, Permission.MANAGE_DATASETS):
        raise PermissionDenied("Only data owners upload datasets.")
    upload = request.FILES.get("file")
    error = refusal_of(request) or ("Choose a file first." if upload is None else None)
    if error is None and upload is not None:
        try:
            fmt, specs = infer_schema(_uploaded_path(upload), upload.name or "")
            return render(request, "parties/_schema.html", _schema_context(fmt, specs))
        except IngestError as exc:
            error = str(exc)
    return render(request, "parties/_schema.html", {"error": error}, status=422)


def _upload(
    request: AuthenticatedHttpRequest, form: Form, store: Store
) -> tuple[DatasetVersion | None, dict[str, Any]]:
    """Run `store(path, filename, schema)` for a valid form with a confirmed schema. On any
    refusal the chosen file is staged (parties/uploads.py) and the page keeps every setting."""
    schema = schema_from_post(request.POST)
    token = request.POST.get("staged", "")
    valid = form.is_valid()  # before any add_error, which needs the cleaned data
    refusal = refusal_of(request)
    if refusal:
        form.add_error("file", refusal)
    upload = request.FILES.get("file")
    kept_name = staged_filename(request, token)
    source: AbstractContextManager[Path]
    if upload is not None:
        discard(request, token)  # a newly chosen file replaces the kept one
        token, filename = "", upload.name or ""
        source = nullcontext(_uploaded_path(upload))
    elif kept_name is not None:
        filename, source = kept_name, staged_file(request, token)
    else:
        if not refusal:
            form.add_error(
                "file",
                "The file you chose is no longer kept (after 30 minutes); choose it again."
                if token
                else "Choose a file.",
            )
        return None, _kept_schema(schema)
    fmt: str | None = None
    specs: Schema | None = schema
    version: DatasetVersion | None = None
    with source as path:
        try:
            fmt = detect_format(path, filename)
            if schema is None:
                # Without JavaScript the page has not shown the schema yet: show it now.
                fmt, specs = infer_schema(path, filename)
                form.add_error(None, "Confirm the schema below, then upload.")
            elif valid and not refusal:
                version = store(path, filename, schema)
        except (IngestError, DomainError) as exc:
            form.add_error(None, str(exc))
        if version is not None:
            discard(request, token)
            return version, {}
        if fmt is not None and not token:
            token = stage(request, path, filename)
    context = _kept_schema(specs, fmt)
    if fmt is not None:
        context |= {"staged": token, "staged_name": filename}
    return None, context


def _kept_schema(specs: Schema | None, fmt: str | None = None) -> dict[str, Any]:
    """The schema suggested, or as the owner had confirmed it, shown again as they left it."""
    return _schema_context(fmt or "", specs) if specs else {}


@login_required
@require_http_methods(["GET", "POST"])
def dataset_create(request: AuthenticatedHttpRequest) -> HttpResponse:
    organizations = selectors.organizations_where(request.user, Permission.MANAGE_DATASETS)
    if not organizations:
        raise PermissionDenied("Only data owners can upload datasets.")
    posted = request.method == "POST"
    form = DatasetForm(
        request.POST if posted else None,
        request.FILES if posted else None,
        organizations=organizations,
    )
    context: dict = {}
    if request.method == "POST":

        def store(path: Path, filename: str, schema: list[dict[str, Any]]) -> DatasetVersion:
            data = form.cleaned_data
            return services.register_dataset(
                organization=data["organization"],
                slug=data["slug"],
                name=data["name"],
                description=data["description"],
                jurisdiction=data["jurisdiction"].code,
                upload=path,
                filename=filename,
                schema=schema,
                by=request.user,
            )

        version, context = _upload(request, form, store)
        if version is not None:
            messages.success(
                request,
                f"{version.dataset.name} is stored encrypted in {version.dataset.jurisdiction.code}"
                f" ({version.row_count} rows). Its policy allows nothing until you open it.",
            )
            return redirect(
                "dataset-detail", org=version.dataset.organization.slug, slug=version.dataset.slug
            )
    return render(request, "parties/dataset_form.html", {"form": form, **context})


@login_required
@require_GET
def dataset_detail(request: AuthenticatedHttpRequest, org: str, slug: str) -> HttpResponse:
    dataset = selectors.get_dataset_for_user(request.user, org, slug)
    version = selectors.latest_version(dataset)
    manage = has_permission(
        request.user, Permission.MANAGE_DATASETS, organization=dataset.organization
    )
    return render(
        request,
        "parties/dataset_detail.html",
        {
            "dataset": dataset,
            "version": version,
            "columns": version.columns.all() if version else [],
            "versions": dataset.versions.order_by("-number"),
            "policy": selectors.current_policy(dataset),
            "policies": dataset.policies.order_by("-version")[:10],
            "can_manage": manage,
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def version_create(request: AuthenticatedHttpRequest, org: str, slug: str) -> HttpResponse:
    dataset = selectors.get_dataset_for_user(request.user, org, slug)
    if not has_permission(
        request.user, Permission.MANAGE_DATASETS, organization=dataset.organization
    ):
        raise PermissionDenied("Only the dataset's owners can add versions.")
    posted = request.method == "POST"
    form = VersionForm(request.POST if posted else None, request.FILES if posted else None)
    context: dict = {}
    if request.method == "POST":
        version, context = _upload(
            request,
            form,
            lambda path, filename, schema: services.add_dataset_version(
                dataset=dataset, upload=path, filename=filename, schema=schema, by=request.user
            ),
        )
        if version is not None:
            messages.success(
                request, f"Version {version.number} stored ({version.row_count} rows)."
            )
            return redirect("dataset-detail", org=org, slug=slug)
    return render(
        request, "parties/version_form.html", {"form": form, "dataset": dataset, **context}
    )


@login_required
@require_http_methods(["GET", "POST"])
def policy_edit(request: AuthenticatedHttpRequest, org: str, slug: str) -> HttpResponse:
    dataset = selectors.get_dataset_for_user(request.user, org, slug)
    if not has_permission(
        request.user, Permission.MANAGE_POLICIES, organization=dataset.organization
    ):
        raise PermissionDenied("Only the dataset's owners can change its policy.")
    policy = selectors.current_policy(dataset)
    version = selectors.latest_version(dataset)
    columns = version.columns.all() if version else []
    form = PolicyForm(
        request.POST or None, columns=columns, initial=PolicyForm.initial_from(policy)
    )
    if request.method == "POST" and form.is_valid():
        data = dict(form.cleaned_data)
        receivers = list(data.pop("allowed_receivers"))
        try:
            new = services.update_policy(
                dataset=dataset, by=request.user, allowed_receivers=receivers, **data
            )
        except DomainError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Policy version {new.version} is now in force.")
            return redirect("dataset-detail", org=org, slug=slug)
    return render(
        request, "parties/policy_form.html", {"form": form, "dataset": dataset, "policy": policy}
    )
