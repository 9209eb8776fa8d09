"""REST endpoints of the audit log: the caller's trail with proofs, checkpoints, consistency
proofs, witnessing, and bundles."""

from __future__ import annotations

import base64

from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cleanroom.audit import bundles as bundle_service
from cleanroom.audit import tree
from cleanroom.audit.checkpoints import latest_checkpoint, note_with_cosignatures, origin_of
from cleanroom.audit.models import AuditLog
from cleanroom.audit.verification import ProvenEvent, prove_events
from cleanroom.audit.witness import witness_checkpoint
from parties.selectors import organizations_of
from trails import selectors
from trails.permissions import (
    Permission,
    bundle_rooms,
    get_bundle_room,
    jurisdictions_regulated_by,
    may_witness,
    organizations_with,
    require_log,
)
from trails.views import bundle_response


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


class CheckpointSerializer(serializers.Serializer):
    log = serializers.CharField()
    origin = serializers.CharField()
    size = serializers.IntegerField()
    root_hash = serializers.CharField(help_text="base64")
    note = serializers.CharField(help_text="The signed note, with witnesses' cosignatures.")
    cosigned_by = serializers.ListField(child=serializers.CharField())


def checkpoint_data(checkpoint) -> dict:
    return {
        "log": checkpoint.log.name,
        "origin": origin_of(checkpoint.log.name),
        "size": checkpoint.size,
        "root_hash": b64(bytes(checkpoint.root_hash)),
        "note": note_with_cosignatures(checkpoint),
        "cosigned_by": [c.witness.name for c in checkpoint.cosignatures.select_related("witness")],
    }


class TrailEventSerializer(serializers.Serializer):
    log = serializers.CharField()
    seq = serializers.IntegerField()
    type = serializers.CharField()
    event = serializers.DictField(help_text="The event as recorded.")
    canonical = serializers.CharField(help_text="base64 of the event's canonical bytes (leaf)")
    leaf_hash = serializers.CharField(help_text="base64 SHA-256(0x00 || canonical)")
    status = serializers.ChoiceField(choices=["verified", "pending", "failed"])
    reason = serializers.CharField(allow_blank=True)
    checkpoint_size = serializers.IntegerField(allow_null=True)
    checkpoint = serializers.CharField(allow_null=True, help_text="The signed checkpoint note.")
    inclusion_proof = serializers.ListField(child=serializers.CharField(), help_text="base64")


def trail_event_data(proven: ProvenEvent) -> dict:
    event = proven.event
    checkpoint = proven.checkpoint
    return {
        "log": event.log.name,
        "seq": event.seq,
        "type": event.type,
        "event": proven.body,
        "canonical": b64(bytes(event.canonical)),
        "leaf_hash": b64(proven.leaf_hash),
        "status": proven.status,
        "reason": proven.reason,
        "checkpoint_size": checkpoint.size if checkpoint else None,
        "checkpoint": note_with_cosignatures(checkpoint) if checkpoint else None,
        "inclusion_proof": [b64(p) for p in proven.proof],
    }


TRAIL_FILTERS = [
    OpenApiParameter("room", str, description="a room's slug"),
    OpenApiParameter("type", str, description="an event type, e.g. query.approved"),
    OpenApiParameter("query", str, description="a query id (12 or query:12)"),
    OpenApiParameter("dataset", str, description="a dataset id (7 or dataset:7)"),
]


class TrailEvents(generics.ListAPIView):
    """Your organisations' trail, newest first: each event with its inclusion proof against its
    log's latest signed checkpoint, verified by the server (`status`); check it yourself with
    the proof, the checkpoint and the log key."""

    serializer_class = TrailEventSerializer
    refusals = {"GET": (403, 404)}

    def get_queryset(self):
        return selectors.trail_events(
            self.request.user, selectors.TrailFilter.from_params(self.request.query_params)
        )

    @extend_schema(parameters=TRAIL_FILTERS)
    def get(self, request: Request, *args, **kwargs) -> Response:
        if not organizations_with(request.user, Permission.READ_ROOM_TRAILS):
            if jurisdictions_regulated_by(request.user).exists():
                raise PermissionDenied("Regulators download bundles; they read no trail.")
            raise PermissionDenied("Audit trails are read by the members of an organisation.")
        page = self.paginate_queryset(self.get_queryset())
        if page is None:
            raise ImproperlyConfigured("the trail is served in pages: set REST_FRAMEWORK PAGE_SIZE")
        data = [trail_event_data(p) for p in prove_events(page)]
        return self.get_paginated_response(data)


def _log_param(request: Request) -> str:
    name = request.query_params.get("log", "")
    require_log(request.user, name)
    return name


class LatestCheckpoint(APIView):
    """The latest signed checkpoint of a log you may read, with its cosignatures."""

    refusals = {"GET": (404,)}

    @extend_schema(
        parameters=[OpenApiParameter("log", str, required=True, description="platform, room/7")],
        responses={200: CheckpointSerializer},
    )
    def get(self, request: Request) -> Response:
        checkpoint = latest_checkpoint(_log_param(request))
        if checkpoint is None:
            raise Http404("The log has no signed checkpoint yet.")
        return Response(checkpoint_data(checkpoint))


class ConsistencySerializer(serializers.Serializer):
    log = serializers.CharField()
    first = serializers.IntegerField()
    second = serializers.IntegerField()
    proof = serializers.ListField(child=serializers.CharField(), help_text="base64 hashes")


class ConsistencyProof(APIView):
    """An RFC 9162 consistency proof between two sizes of a log you may read."""

    refusals = {"GET": (400, 404)}

    @extend_schema(
        parameters=[
            OpenApiParameter("log", str, required=True),
            OpenApiParameter("first", int, required=True),
            OpenApiParameter("second", int, description="default: the latest checkpoint's size"),
        ],
        responses={200: ConsistencySerializer},
    )
    def get(self, request: Request) -> Response:
        name = _log_param(request)
        head = get_object_or_404(AuditLog, name=name)
        checkpoint = latest_checkpoint(name)
        try:
            first = int(request.query_params.get("first", ""))
            second = int(
                request.query_params.get("second") or (checkpoint.size if checkpoint else 0)
            )
        except ValueError:
            raise ValidationError({"first": ["Give the two tree sizes as integers."]}) from None
        if not (0 < first <= second <= (checkpoint.size if checkpoint else 0)):
            raise ValidationError(
                {"first": ["Sizes must satisfy 0 < first <= second <= the latest checkpoint."]}
            )
        proof = tree.consistency_proof(head, first, second)
        return Response(
            {"log": name, "first": first, "second": second, "proof": [b64(p) for p in proof]}
        )


class WitnessInputSerializer(serializers.Serializer):
    organization = serializers.SlugField(help_text="The witnessing organisation (yours).")
    log = serializers.CharField(help_text="platform, or room/<id>")


class WitnessOutputSerializer(serializers.Serializer):
    cosigned = serializers.BooleanField(help_text="false if it was already cosigned")
    size = serializers.IntegerField()
    previous_size = serializers.IntegerField(allow_null=True)
    checkpoint = CheckpointSerializer()


class Witness(APIView):
    """As your organisation's witness: check the log's latest checkpoint extends the last one
    it cosigned (by a consistency proof) and cosign it."""

    refusals = {"POST": (400, 403, 404)}

    @extend_schema(request=WitnessInputSerializer, responses={200: WitnessOutputSerializer})
    def post(self, request: Request) -> Response:
        serializer = WitnessInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        organization = get_object_or_404(organizations_of(request.user), slug=data["organization"])
        require_log(request.user, data["log"])
        if not may_witness(request.user, organization, data["log"]):
            raise PermissionDenied(
                f"Only owners and auditors of {organization.name} may witness for it, and only "
                "logs it belongs to."
            )
        result = witness_checkpoint(organization=organization, log_name=data["log"])
        return Response(
            {
                "cosigned": result.new,
                "size": result.cosignature.size,
                "previous_size": result.previous_size,
                "checkpoint": checkpoint_data(result.cosignature.checkpoint),
            },
            status=status.HTTP_200_OK,
        )


class BundleSerializer(serializers.Serializer):
    room = serializers.CharField(source="room.slug")
    name = serializers.CharField(source="room.name")
    origin = serializers.CharField()
    size = serializers.IntegerField(help_text="events in the log now")
    # None until a bundle of the room has been built.
    bundle_tree_size = serializers.IntegerField(
        source="bundle.tree_size",
        default=None,
        allow_null=True,
        help_text="events in the newest built bundle",
    )
    bundle_sha256 = serializers.CharField(source="bundle.sha256", default=None, allow_null=True)
    bundle_created_at = serializers.DateTimeField(
        source="bundle.created_at", default=None, allow_null=True
    )
    download = serializers.SerializerMethodField()

    def get_download(self, obj) -> str:
        request = self.context["request"]
        return request.build_absolute_uri(f"/api/audit/bundles/{obj['room'].slug}/")


class BundleList(generics.GenericAPIView):
    """Rooms whose audit bundle you may download: as a regulator, those touching data pinned to
    your jurisdictions; as an owner or auditor, your organisations' rooms."""

    serializer_class = BundleSerializer
    pagination_class = None

    @extend_schema(operation_id="audit_bundles_list", responses=BundleSerializer(many=True))
    def get(self, request: Request) -> Response:
        rooms = bundle_service.bundle_summaries(bundle_rooms(request.user).order_by("name"))
        return Response(self.get_serializer(rooms, many=True).data)


class BundleDownload(APIView):
    """The room's audit bundle (cleanroom-bundle/v1 zip); verify it offline with its
    verify.pyz and your trust file. Where the web tier does not hold the log key (production),
    GET serves the newest bundle the audit worker built (404 before the first) and POST asks
    it for a fresh one (202); in the embedded default GET builds one of the log as it is."""

    # Whoever may not download the room's bundle is told it does not exist.
    refusals = {"GET": (404,), "POST": (400, 404)}

    @extend_schema(
        operation_id="audit_bundle_download",
        responses={(200, "application/zip"): OpenApiResponse(OpenApiTypes.BINARY)},
    )
    def get(self, request: Request, slug: str) -> HttpResponse:
        room = get_bundle_room(request.user, slug)
        bundle = bundle_service.bundle_for_download(room, by=request.user)
        if bundle is None:
            raise Http404("No bundle of this room has been built yet; POST to request one.")
        return bundle_response(bundle, room)

    @extend_schema(
        operation_id="audit_bundle_request",
        request=None,
        responses={201: BundleSerializer, 202: OpenApiTypes.OBJECT},
    )
    def post(self, request: Request, slug: str) -> Response:
        room = get_bundle_room(request.user, slug)
        with transaction.atomic():
            bundle = bundle_service.request_bundle(room=room, by=request.user)
        if bundle is None:
            return Response({"room": room.slug, "status": "requested"}, status=202)
        [summary] = bundle_service.bundle_summaries([room])
        return Response(BundleSerializer(summary, context={"request": request}).data, status=201)
