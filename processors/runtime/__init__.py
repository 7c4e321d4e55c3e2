"""The transactional stream-processor runtime shared by the inference and analytics processors."""

from processors.runtime.processor import InputRecord, OutputRecord, StreamProcessor, dead_letter

__all__ = ["InputRecord", "OutputRecord", "StreamProcessor", "dead_letter"]
