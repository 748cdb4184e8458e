"""Producer side of vega-emu: sources -> continual-learning scenario -> wire codec -> publisher.

A node imports :mod:`dataset_stream.protocol` and nothing else; this package's own imports stay
light (scikit-learn, SciPy and Pillow are imported where they are used).
"""

from dataset_stream.dump import dump_stream
from dataset_stream.errors import (
    DatasetStreamError,
    ForeignMessage,
    PacingError,
    ProtocolError,
    PublishError,
    ScenarioError,
    SeqsRefused,
    SourceError,
    UnsupportedSchema,
)
from dataset_stream.outcome import UNANSWERED_EXIT_STATUS, Delivery
from dataset_stream.outstanding import Outstanding, ResendPolicy
from dataset_stream.pacing import Pacing
from dataset_stream.payloads import StreamStats
from dataset_stream.publisher import StreamPublisher
from dataset_stream.scenarios import SCENARIOS, Event, Scenario, build_scenario, factory_split
from dataset_stream.sources import Dataset, load_source

__all__ = [
    "SCENARIOS",
    "UNANSWERED_EXIT_STATUS",
    "Dataset",
    "DatasetStreamError",
    "Delivery",
    "Event",
    "ForeignMessage",
    "Outstanding",
    "Pacing",
    "PacingError",
    "ProtocolError",
    "PublishError",
    "ResendPolicy",
    "Scenario",
    "ScenarioError",
    "SeqsRefused",
    "SourceError",
    "StreamPublisher",
    "StreamStats",
    "UnsupportedSchema",
    "build_scenario",
    "dump_stream",
    "factory_split",
    "load_source",
]
