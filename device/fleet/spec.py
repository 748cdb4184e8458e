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

A class's device settings (:data:`VARYING`: battery capacity and initial charge, clock drift,
compute speed, events per hour, LR size) may each be a constant or a seeded distribution table
(:mod:`device.fleet.distributions`), drawn per device from the spec's ``seed`` and the device id
(:meth:`DeviceClass.for_device`); a class may go offline and come back by a seeded model
(``availability = {up = {...}, down = {...}}``, :mod:`device.fleet.availability`) and says what
becomes of the batches sent meanwhile (``offline_batches``). Top-level tables besides
``[[class]]`` are read by the parsers of :data:`TABLES` (``[availability]``: a trace file, the
speed that maps its simulated seconds to wall time, the horizon of the models).
"""

from __future__ import annotations

import functools
import logging
import math
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from dataset_stream.protocol import FLEET_PREFIX, fleet_ids
from device.faults import FaultPlan, parse_faults
from device.fleet.availability import (
    OFFLINE_BATCHES,
    AvailabilityModel,
    AvailabilitySettings,
    Window,
    parse_availability_table,
)
from device.fleet.distributions import (
    Distribution,
    DistributionError,
    draw,
    parse_distribution,
    to_table,
)
from device.fleet.errors import FleetSpecError

if TYPE_CHECKING:
    from device.model.bundle import ModelBundle
    from device.node.settings import NodeSettings, PowerSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeviceClass:
    """One kind of device in a fleet. ``model``: a bundle directory, None for the default model.

    The learning fields mean what the ``vega-emu node`` flags of the same name mean
    (``learning_rate``: ``--learning-rate``, None for the model's recommended rate); ``dataset``
    and ``scenario`` are what the stream sends this class; ``radio``, ``battery`` and
    ``temperature_c`` what the node charges besides its compute (``--radio``, ``--battery``,
    ``--temperature``; :class:`~device.node.settings.PowerSettings`); ``policy`` and ``harvest``
    the energy-aware learning policy it runs and its harvester (``--policy``, ``--harvest``);
    ``eval_every`` the learned events between its accuracy measurements (``--eval-every``).
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
    battery_j: float | None = None  # None: the profile's
    initial_soc: float = 1.0
    drift_ppm: float = 0.0
    speed_factor: float = 1.0
    events_per_hour: float = 60.0
    vary: Mapping[str, Distribution] = field(default_factory=dict)  # setting -> distribution
    availability: AvailabilityModel | None = None
    offline_batches: str = "wait"
    radio: str | None = None  # a radio profile or file; None: none (nothing priced)
    battery: str | None = None  # a battery chemistry or file; None: the ideal battery
    temperature_c: float | None = None  # the cell's constant temperature; None: 20 C
    policy: str | None = None  # the energy-aware learning policy; None: always
    harvest: str | None = None  # a harvester (solar:FILE, constant:W ...); None: none
    batches_over_radio: bool = False  # batches arrive over the radio (charged), not captured
    eval_every: int = 1  # accuracy measured every k learned events (1: every event)

    def __post_init__(self) -> None:
        if not self.name:
            raise FleetSpecError("a device class needs a name")
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise FleetSpecError(
                f"class {self.name!r}: count must be an int >= 1, not {self.count!r}"
            )

    def drawn(self, seed: int, device_id: str) -> dict[str, float]:
        """``device_id``'s value of every :data:`VARYING` setting: the class's constant, or
        its draw from the spec's ``seed`` and the id alone (``battery_j``: the profile's when
        the class sets none)."""
        out: dict[str, float] = {}
        for key in VARYING:
            dist = self.vary.get(key)
            value = getattr(self, key) if dist is None else draw(dist, seed, device_id, key)
            if key == "battery_j" and value is None:
                from device.energy import load_profile

                value = load_profile(self.profile).battery_j
            out[key] = round(value) if key == "lr_size" else float(value)
        return out

    def for_device(self, seed: int, device_id: str) -> DeviceClass:
        """This class with ``device_id``'s drawn values as its constants (no ``vary``)."""
        if not self.vary:
            return self
        values = self.drawn(seed, device_id)
        changes: dict[str, Any] = {k: values[k] for k in self.vary}
        return replace(self, vary={}, **changes)

    def settings(
        self, device_id: str, state_dir: Path, bundle: ModelBundle, **extra: Any
    ) -> NodeSettings:
        """The checked :class:`NodeSettings` of one device of this class (``ValueError``)."""
        from device.energy import load_profile
        from device.learning.learner import TrainConfig
        from device.learning.nn import SGDConfig
        from device.node.settings import NodeSettings, ReplaySettings

        load_profile(self.profile)  # an unknown profile is an error now, not at the first event
        from device.node.settings import Hardware

        power = self.power_settings()
        power.load()  # an unknown radio or chemistry too

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
            events_per_hour=self.events_per_hour,
            hardware=Hardware(self.battery_j, self.initial_soc, self.speed_factor, self.drift_ppm),
            power=power,
            eval_every=self.eval_every,
            **extra,
        )

    def power_settings(self) -> PowerSettings:
        """The class's radio, chemistry and temperature (the defaults for None)."""
        from device.node.settings import PowerSettings

        default = PowerSettings()
        return PowerSettings(
            radio=default.radio if self.radio is None else self.radio,
            battery=default.battery if self.battery is None else self.battery,
            temperature_c=default.temperature_c
            if self.temperature_c is None
            else float(self.temperature_c),
            policy=default.policy if self.policy is None else self.policy,
            harvest=self.harvest,
            batches_over_radio=self.batches_over_radio,
        )

    def to_dict(self) -> dict[str, Any]:
        """The class as a spec table (distributions as their tables): :meth:`from_dict` reads
        it back."""
        skip = {"vary", "availability"}
        out = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in skip and getattr(self, f.name) is not None
        }
        if self.model is not None:
            out["model"] = str(self.model)
        out |= {key: to_table(dist) for key, dist in self.vary.items()}
        if self.availability is not None:
            out["availability"] = self.availability.to_table()
        return out

    def problems(self) -> list[str]:
        """What is wrong with this class's values (the profile, the replay and training
        settings, the learning rate), each led by its field; empty when the class can run (its
        model is checked when it is loaded). Checked with the constructors the node uses, so
        the rules live there."""
        from device.energy import EnergyError, load_profile, load_radio
        from device.learning.learner import TrainConfig
        from device.learning.nn import SGDConfig
        from device.node.settings import Hardware, ReplaySettings, check_eval_every

        out = []
        checks: list[tuple[str, Callable[[], object]]] = [
            ("profile", lambda: load_profile(self.profile)),
            ("lr_size", lambda: ReplaySettings(self.lr_size)),
            ("lr_bits", lambda: ReplaySettings(0, self.lr_bits)),
            ("epochs, mb, new_per_mb", lambda: TrainConfig(self.epochs, self.mb, self.new_per_mb)),
            ("battery_j", lambda: Hardware(battery_j=self.battery_j)),
            ("initial_soc", lambda: Hardware(initial_soc=self.initial_soc)),
            ("speed_factor", lambda: Hardware(speed_factor=self.speed_factor)),
            ("drift_ppm", lambda: Hardware(drift_ppm=self.drift_ppm)),
            ("events_per_hour", lambda: _positive(self.events_per_hour)),
            ("radio", lambda: load_radio("none" if self.radio is None else self.radio)),
            ("battery", lambda: self._check_battery()),
            ("temperature_c", lambda: self._check_temperature()),
            ("policy", lambda: self._check_policy()),
            ("harvest", lambda: self._check_harvest()),
            ("eval_every", lambda: check_eval_every(self.eval_every)),
        ]
        for key, dist in self.vary.items():  # every value a distribution can give must do
            low, high = dist.bounds
            for end in (low, high):
                if math.isfinite(end):
                    value = round(end) if key == "lr_size" else end
                    checks.append((key, functools.partial(self._check_one, key, value)))
        if self.offline_batches not in OFFLINE_BATCHES:
            out.append(
                f"offline_batches must be one of {', '.join(OFFLINE_BATCHES)}, "
                f"not {self.offline_batches!r}"
            )
        if self.learning_rate is not None:
            rate = self.learning_rate
            checks.append(("learning_rate", lambda: SGDConfig(learning_rate=rate)))
        for key, check in checks:
            try:
                check()
            except (ValueError, EnergyError) as exc:  # a ProfileError too
                out.append(f"{key}: {exc}")
        return list(dict.fromkeys(out))

    def _check_battery(self) -> None:
        from device.energy.chemistry import IDEAL, load_chemistry

        if self.battery is not None and self.battery != IDEAL:
            load_chemistry(self.battery)

    def _check_temperature(self) -> None:
        from device.node.settings import PowerSettings

        if self.temperature_c is not None:
            PowerSettings(temperature_c=float(self.temperature_c))

    def _check_policy(self) -> None:
        from device.node.settings import PowerSettings

        if self.policy is not None:  # defer-to-sun needs a harvester
            PowerSettings(policy=self.policy, harvest=self.harvest)

    def _check_harvest(self) -> None:
        from device.node.settings import PowerSettings

        if self.harvest is not None:
            PowerSettings(harvest=self.harvest).harvester()

    def _check_one(self, key: str, value: float) -> None:
        """Check the class with ``value`` as its ``key`` (a bound of a distribution)."""
        changes: dict[str, Any] = {key: value}
        problems = replace(self, vary={}, **changes).problems()
        mine = [p for p in problems if p.startswith(f"{key}:")]
        if mine:
            raise ValueError(f"a value the distribution can give is bad: {mine[0]}")

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
    vary: dict[str, Distribution] = {}
    for key in VARYING:
        if isinstance(values.get(key), Mapping):
            try:
                vary[key] = parse_distribution(values.pop(key))
            except DistributionError as exc:
                problems.append(f"{key}: {exc}")
    availability = None
    if "availability" in values:
        try:
            availability = AvailabilityModel.from_table(values.pop("availability"))
        except ValueError as exc:
            problems.append(str(exc))
    for key, kind in TYPES.items():
        if key in values and not _is(values[key], kind):
            problems.append(f"{key} must be {kind}, not {values[key]!r}")
    count = values.get("count")
    if isinstance(count, int) and not isinstance(count, bool) and count < 1:
        problems.append(f"count must be an int >= 1, not {count!r}")
    if values.get("name") == "":
        problems.append("a device class needs a name")
    typed: dict[str, Any] = {k: v for k, v in values.items() if k in TYPES and _is(v, TYPES[k])}
    typed |= {"vary": vary, "availability": availability}
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
    "battery_j": "float",
    "initial_soc": "float",
    "drift_ppm": "float",
    "speed_factor": "float",
    "events_per_hour": "float",
    "offline_batches": "str",
    "radio": "str",
    "battery": "str",
    "temperature_c": "float",
    "policy": "str",
    "harvest": "str",
    "batches_over_radio": "bool",
    "eval_every": "int",
}
#: Settings a class may give as a distribution table, drawn per device.
VARYING: Final = (
    "battery_j",
    "initial_soc",
    "drift_ppm",
    "speed_factor",
    "events_per_hour",
    "lr_size",
)
KEYS: Final = frozenset(f.name for f in fields(DeviceClass)) - {"vary"}
#: More problems of a device class (each led by its key), for :meth:`FleetSpec.load`.
ClassCheck: TypeAlias = Callable[[DeviceClass], list[str]]
#: Keys every class table must have.
REQUIRED: Final = ("name", "count")
#: Old spellings of class keys, still read: old key -> key.
OLD_KEYS: Final[dict[str, str]] = {"lr": "learning_rate"}


def _positive(value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"must be > 0, got {value}")


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


#: Parses one extra top-level table of a spec (its value and the spec's directory), giving the
#: value kept in :attr:`FleetSpec.extras` and its problems (each a line, naming the table).
TableParser: TypeAlias = Callable[[object, Path], tuple[object, list[str]]]
#: Top-level tables a spec may have besides ``[[class]]``: name -> parser. Add one here.
TABLES: Final[dict[str, TableParser]] = {"availability": parse_availability_table}


@dataclass(frozen=True, slots=True)
class FleetSpec:
    """Device classes, in order, taking consecutive ids ``{prefix}{start_index + i:04d}``.

    ``seed``: what every device's drawn values and availability come from (with its id);
    ``extras``: the parsed values of the spec's other top-level tables (:data:`TABLES`).
    """

    classes: tuple[DeviceClass, ...]
    prefix: str = FLEET_PREFIX
    start_index: int = 0
    source: str = field(default="command line", compare=False)
    #: The spec's ``seed`` and ``[[fault]]`` tables (docs/faults.md).
    faults: FaultPlan = field(default_factory=FaultPlan)
    seed: int = 0
    extras: Mapping[str, object] = field(default_factory=dict)

    @property
    def availability(self) -> AvailabilitySettings:
        value = self.extras.get("availability")
        return value if isinstance(value, AvailabilitySettings) else AvailabilitySettings()

    def scaled(self, devices: int) -> FleetSpec:
        """This fleet with ``devices`` devices in all, each class's count in proportion (largest
        remainders first; every class keeps at least one device, so ``devices`` must be at least
        the number of classes)."""
        if devices < len(self.classes):
            raise FleetSpecError(
                f"{self.source}: {devices} devices cannot hold its {len(self.classes)} classes"
            )
        exact = [c.count * devices / self.size for c in self.classes]
        counts = [max(1, math.floor(x)) for x in exact]
        order = sorted(range(len(exact)), key=lambda i: (counts[i] - exact[i], i))
        i = 0
        while sum(counts) != devices:
            k = order[i % len(order)]
            if sum(counts) < devices:
                counts[k] += 1
            elif counts[k] > 1:
                counts[k] -= 1
            i += 1
        classes = tuple(replace(c, count=n) for c, n in zip(self.classes, counts, strict=True))
        return replace(self, classes=classes)

    def drawn(self) -> dict[str, dict[str, float]]:
        """Every device's drawn values (:meth:`DeviceClass.drawn`), by id."""
        return {m.device_id: m.device_class.drawn(self.seed, m.device_id) for m in self.members()}

    def offline_windows(self) -> dict[str, tuple[Window, ...]]:
        """Every device that goes offline, with its windows: the trace's, else its class
        model's up to the horizon."""
        settings = self.availability
        out: dict[str, tuple[Window, ...]] = {}
        for m in self.members():
            model = m.device_class.availability
            if m.device_id in settings.trace:
                out[m.device_id] = settings.trace[m.device_id]
            elif model is not None:
                windows = model.windows(self.seed, m.device_id, settings.horizon_s)
                if windows:
                    out[m.device_id] = windows
        return out

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
        unknown = sorted(
            set(doc) - {"prefix", "start_index", "class", "seed", "fault"} - set(TABLES)
        )
        if unknown:
            problems.append(f"unknown key(s) {', '.join(unknown)}")
        seed = doc.get("seed", 0)
        if not _is(seed, "int") or seed < 0:
            problems.append(f"seed must be an int >= 0, not {seed!r}")
            seed = 0
        extras: dict[str, object] = {}
        for key, parse in TABLES.items():
            if key in doc:
                extras[key], bad = parse(doc[key], path.parent)
                problems += bad
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
        spec = cls(
            tuple(classes), prefix, start, source=str(path), seed=seed, extras=extras, faults=faults
        )
        bad_draws = _draw_problems(spec)
        if bad_draws:
            raise FleetSpecError("\n".join(f"fleet spec {path}: {p}" for p in bad_draws))
        return spec


def _draw_problems(spec: FleetSpec) -> list[str]:
    """The first device of each class and setting whose drawn value is bad (a distribution
    without a ``min`` can draw a negative battery), naming the class, the setting and the
    device."""
    out: dict[tuple[str, str], str] = {}
    for m in spec.members():
        c = m.device_class
        if not c.vary:
            continue
        for problem in c.for_device(spec.seed, m.device_id).problems():
            key = problem.split(":", 1)[0]
            if key in c.vary and (c.name, key) not in out:
                out[c.name, key] = (
                    f"class {c.name!r}: {key}: {m.device_id} drew a bad value ({problem}); "
                    "bound the distribution with min/max"
                )
    return list(out.values())


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


__all__ = [
    "TABLES",
    "VARYING",
    "AvailabilitySettings",
    "ClassCheck",
    "DeviceClass",
    "FleetSpec",
    "Member",
    "TableParser",
    "shard",
]
