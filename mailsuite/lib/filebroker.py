"""The embedded Celery broker: kombu's filesystem transport, with messages made visible
only once they are completely written.

kombu's own version creates the message file and then writes it; a worker that lists the
folder in between reads an empty or partial file and dies (JSONDecodeError). Here the
bytes go to a temporary name first and are renamed into place, which is atomic.
"""
import os
import uuid
from time import monotonic

from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        temporary = final + ".part"  # never matches the reader's "<queue>.msg" filter
        try:
            with open(temporary, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(temporary, final)
        except OSError as error:
            raise filesystem.ChannelError(f"cannot add {name!r} to the broker folder") from error


class Transport(filesystem.Transport):
    Channel = Channel
