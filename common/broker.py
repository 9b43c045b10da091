"""The embedded broker: kombu's filesystem transport, with messages written atomically.

kombu's own `_put` creates the message file under its final name and only then writes the
body, so a worker polling the folder at that moment moves away an empty file, fails to decode
it and stops ("Unrecoverable error: JSONDecodeError"). Here the body is written under a name the
consumer ignores and renamed into place, which is atomic on one filesystem.
"""

import os
import uuid
from time import monotonic

from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

PARTIAL_SUFFIX = ".partial"


class Channel(filesystem.Channel):
    """A filesystem channel whose messages appear complete or not at all."""

    def _put(self, queue, payload, **kwargs):
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        path = os.path.join(self.data_folder_out, name)
        # The consumer only takes names ending in ".<queue>.msg", so it skips this one.
        partial = path + PARTIAL_SUFFIX
        try:
            with open(partial, "wb") as handle:
                handle.write(str_to_bytes(dumps(payload)))
            os.replace(partial, path)
        except OSError as error:
            raise filesystem.ChannelError(f"Cannot add file {path!r} to directory") from error


class Transport(filesystem.Transport):
    """kombu's filesystem transport with the atomic channel."""

    Channel = Channel

    @property
    def default_connection_params(self):
        # A folder needs no host: kombu would warn "No hostname was supplied" on every task.
        return {}
