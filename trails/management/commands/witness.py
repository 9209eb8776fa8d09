"""`manage.py witness --org <slug> --log <name>`: check and cosign a log's latest checkpoint."""

from django.core.management.base import BaseCommand, CommandError

from cleanroom.audit.checkpoints import origin_of
from cleanroom.audit.witness import WitnessError, witness_checkpoint
from parties.models import Organization


class Command(BaseCommand):
    help = (
        "As an organisation's witness: fetch the latest checkpoint of a log and a consistency "
        "proof from the size it last cosigned, verify both, and cosign."
    )

    def add_arguments(self, parser):
        parser.add_argument("--org", required=True, help="the witnessing organisation's slug")
        parser.add_argument("--log", required=True, help="e.g. platform or room/7")

    def handle(self, *args, org: str, log: str, **options):
        organization = Organization.objects.filter(slug=org).first()
        if organization is None:
            raise CommandError(f"No organisation {org!r}.")
        try:
            result = witness_checkpoint(organization=organization, log_name=log)
        except WitnessError as exc:
            raise CommandError(str(exc)) from exc
        cosignature = result.cosignature
        if not result.new:
            self.stdout.write(f"{origin_of(log)}: already cosigned at size {cosignature.size}")
        elif result.previous_size is None:
            self.stdout.write(f"{origin_of(log)}: cosigned at size {cosignature.size} (first)")
        else:
            self.stdout.write(
                f"{origin_of(log)}: cosigned at size {cosignature.size}, consistent with "
                f"size {result.previous_size} ({result.proof_length}-hash proof)"
            )
