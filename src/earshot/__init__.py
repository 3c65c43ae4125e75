"""earshot: a real-server integration test environment for streaming speech transcription."""

__version__ = "0.1.0"
