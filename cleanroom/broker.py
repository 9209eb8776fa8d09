"""The embedded broker's transport: kombu's filesystem transport, with each message written
whole before a worker can take it.

kombu's own creates a message's file under its final name and then writes it, so a worker
polling the folder can take the file while it is still empty: it cannot decode it, the message
is lost (a job handed to its site's queue then waits forever, holding no lease) and the worker
stops. Here the message is written under a name no queue reads and then renamed, which is
atomic within a folder. cleanroom/celery.py uses it for `filesystem://` URLs."""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    # kombu names the second argument `message` in the base class, `payload` in this one.
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        # kombu's name: the time first, so that a folder listing is the queue's order.
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        path = os.path.join(self.data_folder_out, name)
        try:
            with open(f"{path}.part", "wb") as part:
                part.write(str_to_bytes(dumps(payload)))
            os.replace(f"{path}.part", path)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {path!r} to directory") from exc


class FilesystemTransport(filesystem.Transport):
    Channel = Channel
