"""``vega-emu bridge``: live samples from a file, standard input or an MQTT topic, as learning
batches and inference requests for the devices of a fleet (``docs/live-data.md``).

- :mod:`~dataset_stream.bridge.sources` and :mod:`~dataset_stream.bridge.mqtt_source`: file,
  stdin and MQTT readers of raw :class:`Record` s;
- :mod:`~dataset_stream.bridge.samples`: a record -> a checked :class:`Sample` or :class:`Rejected`;
- :mod:`~dataset_stream.bridge.windows`: per-device windows -> batches and inference groups;
- :mod:`~dataset_stream.bridge.link` and :mod:`~dataset_stream.bridge.bridge`: the broker side.

The model's sample shape, dtype and class count come in as a :class:`SampleSpec`; this package
imports nothing from :mod:`device`.
"""

from dataset_stream.bridge.bridge import Bridge, BridgeSettings
from dataset_stream.bridge.mqtt_source import mqtt_records
from dataset_stream.bridge.samples import (
    NO_DEVICE,
    REASONS,
    Fields,
    Record,
    RecordKind,
    Rejected,
    Sample,
    SampleSpec,
    check_csv_header,
    parse_record,
)
from dataset_stream.bridge.sources import (
    FileSource,
    Format,
    MqttSource,
    Source,
    StdinSource,
    file_records,
    is_finite,
    split_source_url,
)
from dataset_stream.bridge.tally import BridgeReport, DeviceReport
from dataset_stream.bridge.windows import InferGroup, LearnBatch, Windower, WindowSettings

__all__ = [
    "NO_DEVICE",
    "REASONS",
    "Bridge",
    "BridgeReport",
    "BridgeSettings",
    "DeviceReport",
    "Fields",
    "FileSource",
    "Format",
    "InferGroup",
    "LearnBatch",
    "MqttSource",
    "Record",
    "RecordKind",
    "Rejected",
    "Sample",
    "SampleSpec",
    "Source",
    "StdinSource",
    "WindowSettings",
    "Windower",
    "check_csv_header",
    "file_records",
    "is_finite",
    "mqtt_records",
    "parse_record",
    "split_source_url",
]
