"""What a fleet is made of: device classes (count, model, profile, learning settings, data).

A fleet spec is data, read once at the edge. ``vega-emu fleet --spec fleet.toml`` reads it from a
TOML file (``docs/fleet.md`` has an example); ``vega-emu fleet -n N`` makes a spec of one class
from the command-line flags. The classes take consecutive fleet ids in the order written::

    prefix = "node-"        # optional, ids are {prefix}{index:04d}
    start_index = 0         # optional

    [[class]]
    name = "vega"
    count = 900
    profile = "vega"        # or a profile TOML file
    lr_size = 1500

    [[class]]
    name = "stm32"
    count = 100
    profile = "stm32l4"
    model = "bundles/digits-lr-c1"   # another model bundle (another LR layer), relative to the spec

gives ``node-0000`` .. ``node-0899`` (vega) and ``node-0900`` .. ``node-0999`` (stm32). The
stream reads the same file for the ids and each class's data scenario.
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from dataset_stream.protocol import FLEET_PREFIX, fleet_ids
from device.faults import FaultPlan, parse_faults
from device.fleet.errors import FleetSpecError

if TYPE_CHECKING:
    from device.model.bundle import ModelBundle
    from device.node.settings import NodeSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeviceClass:
    """One kind of device in a fleet. ``model``: a bundle directory, None for the default model.

    The learning fields mean what the ``vega-emu node`` flags of the same name mean
    (``learning_rate``: ``--learning-rate``, None for the model's recommended rate); ``dataset``
    and ``scenario`` are what the stream sends this class.
    """

    name: str
    count: int
    model: Path | None = None
    profile: str = "vega"
    lr_size: int = 1500
    lr_bits: int = 8
    epochs: int = 4
    mb: int = 128
    new_per_mb: int = 21
    learning_rate: float | None = None
    class_balanced: bool = False
    dataset: str = "digits"
    scenario: str = "nic"

    def __post_init__(self) -> None:
        if not self.name:
            raise FleetSpecError("a device class needs a name")
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise FleetSpecError(
                f"class {self.name!r}: count must be an int >= 1, not {self.count!r}"
            )

    def settings(
        self, device_id: str, state_dir: Path, bundle: ModelBundle, **extra: Any
    ) -> NodeSettings:
        """The checked :class:`NodeSettings` of one device of this class (``ValueError``)."""
        from device.energy import load_profile
        from device.learning.learner import TrainConfig
        from device.learning.nn import SGDConfig
        from device.node.settings import NodeSettings, ReplaySettings

        load_profile(self.profile)  # an unknown profile is an error now, not at the first event
        rate = self.learning_rate
        if rate is None:
            rate = bundle.recommended_learning_rate
        return NodeSettings(
            device_id=device_id,
            state_dir=state_dir,
            replay=ReplaySettings(self.lr_size, self.lr_bits, self.class_balanced),
            train=TrainConfig(epochs=self.epochs, mb_size=self.mb, new_per_mb=self.new_per_mb),
            sgd=SGDConfig(learning_rate=rate),
            profile=self.profile,
            **extra,
        )

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if v is not None}
        if self.model is not None:
            out["model"] = str(self.model)
        return out

    def problems(self) -> list[str]:
        """What is wrong with this class's values (the profile, the replay and training
        settings, the learning rate), each led by its field; empty when the class can run (its
        model is checked when it is loaded). Checked with the constructors the node uses, so
        the rules live there."""
        from device.energy import load_profile
        from device.learning.learner import TrainConfig
        from device.learning.nn import SGDConfig
        from device.node.settings import ReplaySettings

        out = []
        checks: list[tuple[str, Callable[[], object]]] = [
            ("profile", lambda: load_profile(self.profile)),
            ("lr_size", lambda: ReplaySettings(self.lr_size)),
            ("lr_bits", lambda: ReplaySettings(0, self.lr_bits)),
            ("epochs, mb, new_per_mb", lambda: TrainConfig(self.epochs, self.mb, self.new_per_mb)),
        ]
        if self.learning_rate is not None:
            rate = self.learning_rate
            checks.append(("learning_rate", lambda: SGDConfig(learning_rate=rate)))
        for key, check in checks:
            try:
                check()
            except ValueError as exc:  # a ProfileError too
                out.append(f"{key}: {exc}")
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, base: Path | None = None) -> DeviceClass:
        """From a TOML table or :meth:`to_dict`; relative ``model`` paths are under ``base``.
        :class:`FleetSpecError` names every problem of the table's keys, types and values.

        ``lr``, the old spelling of ``learning_rate``, is read as that with a logged deprecation
        notice.
        """
        device_class, problems = _parse(data, base)
        if problems:
            name = data.get("name", "?")
            raise FleetSpecError("; ".join(f"class {name!r}: {p}" for p in problems))
        return device_class


def _parse(data: Mapping[str, Any], base: Path | None) -> tuple[DeviceClass, list[str]]:
    """The class of the table ``data`` and every problem of its keys, types and values (with
    problems, the class is a stand-in, named ``?``, with a default for each bad value)."""
    name = data.get("name", "?")
    problems: list[str] = []
    old = [key for key in OLD_KEYS if key in data]
    values = dict(data)
    for key in old:
        new = OLD_KEYS[key]
        if new in data:
            problems.append(f"give {new} only, not also its old spelling {key}")
            values.pop(key)
            continue
        log.warning("class %r: %s is deprecated, write %s (read as that now)", name, key, new)
        values[new] = values.pop(key)
    unknown = sorted(set(values) - KEYS)
    if unknown:
        problems.append(f"unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(KEYS))}")
    problems += [f"{key} is missing" for key in REQUIRED if key not in values]
    for key, kind in TYPES.items():
        if key in values and not _is(values[key], kind):
            problems.append(f"{key} must be {kind}, not {values[key]!r}")
    count = values.get("count")
    if isinstance(count, int) and not isinstance(count, bool) and count < 1:
        problems.append(f"count must be an int >= 1, not {count!r}")
    if values.get("name") == "":
        problems.append("a device class needs a name")
    typed = {k: v for k, v in values.items() if k in KEYS and _is(v, TYPES[k])}
    model = typed.get("model")
    if model is not None:
        path = Path(model)
        typed["model"] = path if path.is_absolute() or base is None else base / path
    if problems:  # check the values that can be, on a stand-in with the others' defaults
        stand_in = DeviceClass(**{**typed, "name": "?", "count": 1})
        return stand_in, problems + stand_in.problems()
    device_class = DeviceClass(**typed)
    return device_class, device_class.problems()


#: Keys of a class table and the type each must have.
TYPES: Final[dict[str, str]] = {
    "name": "str",
    "count": "int",
    "model": "str",
    "profile": "str",
    "lr_size": "int",
    "lr_bits": "int",
    "epochs": "int",
    "mb": "int",
    "new_per_mb": "int",
    "learning_rate": "float",
    "class_balanced": "bool",
    "dataset": "str",
    "scenario": "str",
}
KEYS: Final = frozenset(f.name for f in fields(DeviceClass))
#: More problems of a device class (each led by its key), for :meth:`FleetSpec.load`.
ClassCheck: TypeAlias = Callable[[DeviceClass], list[str]]
#: Keys every class table must have.
REQUIRED: Final = ("name", "count")
#: Old spellings of class keys, still read: old key -> key.
OLD_KEYS: Final[dict[str, str]] = {"lr": "learning_rate"}


def _is(value: object, kind: str) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == "int":
        return isinstance(value, int)
    if kind == "float":
        return isinstance(value, int | float)
    return isinstance(value, str)


@dataclass(frozen=True, slots=True)
class Member:
    """One device of a fleet: its id, its index in the fleet and its class."""

    device_id: str
    index: int
    device_class: DeviceClass


@dataclass(frozen=True, slots=True)
class FleetSpec:
    """Device classes, in order, taking consecutive ids ``{prefix}{start_index + i:04d}``."""

    classes: tuple[DeviceClass, ...]
    prefix: str = FLEET_PREFIX
    start_index: int = 0
    source: str = field(default="command line", compare=False)
    #: The spec's ``seed`` and ``[[fault]]`` tables (docs/faults.md).
    faults: FaultPlan = field(default_factory=FaultPlan)

    def __post_init__(self) -> None:
        names = [c.name for c in self.classes]
        problems = _fleet_problems(names, self.prefix, self.start_index)
        if problems:
            raise FleetSpecError("; ".join(f"{self.source}: {p}" for p in problems))

    @property
    def size(self) -> int:
        return sum(c.count for c in self.classes)

    def members(self) -> list[Member]:
        """Every device, in id order."""
        ids = iter(fleet_ids(self.size, self.prefix, start=self.start_index))
        index = self.start_index
        out: list[Member] = []
        for device_class in self.classes:
            for _ in range(device_class.count):
                out.append(Member(next(ids), index, device_class))
                index += 1
        return out

    def device_ids(self) -> list[str]:
        return [m.device_id for m in self.members()]

    def by_class(self) -> Iterator[tuple[DeviceClass, list[str]]]:
        """Each class with the ids of its devices."""
        members = self.members()
        for device_class in self.classes:
            yield device_class, [m.device_id for m in members if m.device_class is device_class]

    @classmethod
    def load(cls, path: Path, check: ClassCheck | None = None) -> FleetSpec:
        """Read a TOML spec and check all of it: :class:`FleetSpecError` has one line per
        problem, each naming the file, the class and the key. ``check`` adds problems of a
        class (e.g. its dataset, which the stream reads), each led by its key."""
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise FleetSpecError(f"cannot read the fleet spec {path}: {exc.strerror}") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise FleetSpecError(f"fleet spec {path} is not valid TOML: {exc}") from exc
        problems = []
        unknown = sorted(set(doc) - {"prefix", "start_index", "class", "seed", "fault"})
        if unknown:
            problems.append(f"unknown key(s) {', '.join(unknown)}")
        tables = doc.get("class", [])
        if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
            problems.append("write each device class as [[class]]")
            tables = []
        prefix, start = doc.get("prefix", FLEET_PREFIX), doc.get("start_index", 0)
        if not isinstance(prefix, str) or not _is(start, "int"):
            problems.append("prefix must be a string, start_index an int")
            prefix, start = FLEET_PREFIX, 0
        classes = []
        for i, table in enumerate(tables, 1):
            device_class, bad = _parse(table, path.parent)
            if not bad:
                classes.append(device_class)
            bad += check(device_class) if check is not None else []
            name = table.get("name")
            where = f"class {name!r}" if isinstance(name, str) and name else f"class #{i}"
            problems += [f"{where}: {p}" for p in bad]
        names = [t.get("name") for t in tables]
        problems += _fleet_problems(names, prefix, start)
        faults, bad_faults = parse_faults(doc, [n for n in names if isinstance(n, str)])
        problems += bad_faults
        if problems:
            lines = [f"fleet spec {path}: {p}" for p in dict.fromkeys(problems)]
            head = f"{len(lines)} problems in fleet spec {path}:\n" if len(lines) > 1 else ""
            raise FleetSpecError(head + "\n".join(lines))
        return cls(tuple(classes), prefix, start, source=str(path), faults=faults)


def _fleet_problems(names: list[Any], prefix: str, start_index: int) -> list[str]:
    """What is wrong with a fleet of classes named ``names`` as a whole (its classes' own
    problems aside)."""
    out = []
    if not names:
        out.append("a fleet needs at least one [[class]]")
    if len(set(map(str, names))) != len(names):
        out.append(f"class names must be distinct, got {names}")
    if isinstance(start_index, bool) or start_index < 0:
        out.append("start_index must be >= 0")
    try:
        fleet_ids(1, prefix)
    except ValueError as exc:
        out.append(str(exc))
    return out


def shard(members: list[Member], workers: int) -> list[list[Member]]:
    """Split ``members`` into ``workers`` contiguous ranges of sizes differing by at most one."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    size, extra = divmod(len(members), workers)
    out, start = [], 0
    for w in range(workers):
        end = start + size + (1 if w < extra else 0)
        out.append(members[start:end])
        start = end
    return [part for part in out if part]


__all__ = ["ClassCheck", "DeviceClass", "FleetSpec", "Member", "shard"]
