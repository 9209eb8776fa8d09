"""An upload handler that refuses a file over DATASET_MAX_UPLOAD_BYTES while it streams in."""

from django.conf import settings
from django.core.files.uploadhandler import SkipFile, TemporaryFileUploadHandler
from django.template.defaultfilters import filesizeformat

UPLOAD_REFUSED = "upload_refused"


class LimitedTemporaryFileUploadHandler(TemporaryFileUploadHandler):
    """Streams to a private temporary file; Django removes it when the request ends."""

    def new_file(self, *args, **kwargs):
        self.received = 0
        super().new_file(*args, **kwargs)

    def receive_data_chunk(self, raw_data, start):
        self.received += len(raw_data)
        limit = settings.DATASET_MAX_UPLOAD_BYTES
        if self.received > limit:
            setattr(
                self.request,
                UPLOAD_REFUSED,
                f"The file is over the size limit of {filesizeformat(limit)}.",
            )
            self.file.close()
            raise SkipFile
        return super().receive_data_chunk(raw_data, start)


def refusal_of(request) -> str | None:
    return getattr(request, UPLOAD_REFUSED, None)
