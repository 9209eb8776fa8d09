"""REST endpoints for organisations, jurisdictions, sites, datasets and policies.

Thin: each view scopes its reads through the selectors and hands changes to the services.
"""

from __future__ import annotations

from pathlib import Path

from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from cleanroom.api import named_in_body
from cleanroom.http import AuthenticatedRequest
from parties import credentials, selectors, services
from parties.ingest import infer_schema
from parties.models import Site
from parties.permissions import Permission, credential_keeper, require
from parties.serializers import (
    ApprovalCredentialSerializer,
    DatasetInputSerializer,
    DatasetSerializer,
    DatasetVersionInputSerializer,
    DatasetVersionSerializer,
    FileInputSerializer,
    InferredSchemaSerializer,
    JurisdictionSerializer,
    MachineKeyInputSerializer,
    OrganizationSerializer,
    PolicyInputSerializer,
    PolicySerializer,
    SiteSerializer,
)
from parties.uploads import refusal_of


def uploaded_file(request: AuthenticatedRequest, serializer_class) -> tuple[dict, Path, str]:
    """Validate a multipart upload; a file refused while streaming gets its reason back."""
    serializer = serializer_class(data=request.data)
    refusal = refusal_of(request)
    if refusal:
        raise ValidationError({"file": [refusal]})
    serializer.is_valid(raise_exception=True)
    upload = serializer.validated_data["file"]
    return serializer.validated_data, Path(upload.temporary_file_path()), upload.name


class OrganizationList(generics.ListAPIView):
    """The organisations the caller belongs to."""

    serializer_class = OrganizationSerializer

    def get_queryset(self):
        return selectors.organizations_of(self.request.user)


class JurisdictionList(generics.ListAPIView):
    serializer_class = JurisdictionSerializer

    def get_queryset(self):
        return selectors.jurisdictions().prefetch_related(
            "raw_processing_in", "shares_may_go_to", "outputs_may_go_to"
        )


class SiteList(generics.ListAPIView):
    serializer_class = SiteSerializer
    queryset = Site.objects.select_related("jurisdiction")


class DatasetList(generics.ListAPIView):
    """Datasets of the caller's organisations and of rooms they are in. Metadata only."""

    serializer_class = DatasetSerializer
    parser_classes = [JSONParser, MultiPartParser]
    # POST names its organisation in the body: one the caller is not in is not found.
    refusals = {"POST": (400, 403, 404)}

    def get_queryset(self):
        return selectors.datasets_for(self.request.user)

    @extend_schema(
        request={"multipart/form-data": DatasetInputSerializer}, responses={201: DatasetSerializer}
    )
    def post(self, request: AuthenticatedRequest) -> Response:
        """Register a dataset from an uploaded file and its confirmed schema."""
        # Who may first, for the organisation named: before the upload is even validated.
        organization = generics.get_object_or_404(
            selectors.organizations_of(request.user), slug=named_in_body(request, "organization")
        )
        require(request.user, Permission.MANAGE_DATASETS, organization=organization)
        data, path, filename = uploaded_file(request, DatasetInputSerializer)
        version = services.register_dataset(
            organization=organization,
            slug=data["slug"],
            name=data["name"],
            description=data["description"],
            jurisdiction=data["jurisdiction"],
            upload=path,
            filename=filename,
            schema=data["schema"],
            by=request.user,
        )
        return Response(DatasetSerializer(version.dataset).data, status=status.HTTP_201_CREATED)


class InferSchema(APIView):
    """Suggest a schema for a file. Reads it, stores nothing, returns no values but dimension
    domains and measure bounds suggested from the caller's own file."""

    parser_classes = [MultiPartParser]

    @extend_schema(
        request={"multipart/form-data": FileInputSerializer},
        responses={200: InferredSchemaSerializer},
    )
    def post(self, request: AuthenticatedRequest) -> Response:
        if not selectors.organizations_where(request.user, Permission.MANAGE_DATASETS):
            raise PermissionDenied("Only data owners upload datasets.")
        _, path, filename = uploaded_file(request, FileInputSerializer)
        fmt, specs = infer_schema(path, filename)
        return Response({"format": fmt, "schema": [spec.as_dict() for spec in specs]})


class DatasetDetail(generics.RetrieveAPIView):
    serializer_class = DatasetSerializer

    def get_object(self):
        return selectors.get_dataset_for_user(
            self.request.user, self.kwargs["org"], self.kwargs["slug"]
        )


class DatasetVersionList(generics.ListAPIView):
    serializer_class = DatasetVersionSerializer
    parser_classes = [JSONParser, MultiPartParser]

    def get_queryset(self):
        dataset = selectors.get_dataset_for_user(
            self.request.user, self.kwargs["org"], self.kwargs["slug"]
        )
        return dataset.versions.prefetch_related("columns").order_by("-number")

    @extend_schema(
        request={"multipart/form-data": DatasetVersionInputSerializer},
        responses={201: DatasetVersionSerializer},
    )
    def post(self, request: AuthenticatedRequest, org: str, slug: str) -> Response:
        """Add an immutable new version of the dataset."""
        dataset = selectors.get_dataset_for_user(request.user, org, slug)
        require(request.user, Permission.MANAGE_DATASETS, organization=dataset.organization)
        data, path, filename = uploaded_file(request, DatasetVersionInputSerializer)
        version = services.add_dataset_version(
            dataset=dataset,
            upload=path,
            filename=filename,
            schema=data["schema"],
            by=request.user,
        )
        return Response(DatasetVersionSerializer(version).data, status=status.HTTP_201_CREATED)


class PolicyDetail(APIView):
    """The dataset's current analysis policy; PUT writes a new version."""

    @extend_schema(responses={200: PolicySerializer})
    def get(self, request: AuthenticatedRequest, org: str, slug: str) -> Response:
        dataset = selectors.get_dataset_for_user(request.user, org, slug)
        return Response(PolicySerializer(selectors.current_policy(dataset)).data)

    @extend_schema(request=PolicyInputSerializer, responses={200: PolicySerializer})
    def put(self, request: AuthenticatedRequest, org: str, slug: str) -> Response:
        dataset = selectors.get_dataset_for_user(request.user, org, slug)
        require(request.user, Permission.MANAGE_POLICIES, organization=dataset.organization)
        serializer = PolicyInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        policy = services.update_policy(
            dataset=dataset, by=request.user, **serializer.validated_data
        )
        return Response(PolicySerializer(policy).data)


class PolicyHistory(generics.ListAPIView):
    serializer_class = PolicySerializer

    def get_queryset(self):
        dataset = selectors.get_dataset_for_user(
            self.request.user, self.kwargs["org"], self.kwargs["slug"]
        )
        return dataset.policies.prefetch_related("allowed_receivers").order_by("-version")


class MachineKeys(APIView):
    """The organisation's approval credentials (passkeys and machine keys); its owners register
    a machine key here: the Ed25519 public half of a key the organisation holds itself. The
    page /organizations/<org>/credentials/ does the same under the same rule."""

    # Reading them, too, is for the organisation's owners: other members are refused.
    refusals = {"GET": (403, 404), "POST": (400, 403, 404)}

    @extend_schema(responses={200: ApprovalCredentialSerializer(many=True)})
    def get(self, request: AuthenticatedRequest, org: str) -> Response:
        organization = credential_keeper(request.user, org)
        credentials_ = selectors.live_credentials(organization).select_related("user")
        return Response(ApprovalCredentialSerializer(credentials_, many=True).data)

    @extend_schema(request=MachineKeyInputSerializer, responses={201: ApprovalCredentialSerializer})
    def post(self, request: AuthenticatedRequest, org: str) -> Response:
        organization = credential_keeper(request.user, org)
        serializer = MachineKeyInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        machine_key = credentials.register_machine_key(
            organization=organization,
            by=request.user,
            name=serializer.validated_data["name"],
            public_key=serializer.validated_data["public_key"],
        )
        return Response(
            ApprovalCredentialSerializer(machine_key).data, status=status.HTTP_201_CREATED
        )


class CredentialRemove(APIView):
    @extend_schema(request=None, responses={200: ApprovalCredentialSerializer})
    def post(self, request: AuthenticatedRequest, org: str, pk: int) -> Response:
        organization = credential_keeper(request.user, org)
        credential = get_object_or_404(organization.approval_credentials, pk=pk)
        credential = credentials.remove_credential(credential=credential, by=request.user)
        return Response(ApprovalCredentialSerializer(credential).data)
