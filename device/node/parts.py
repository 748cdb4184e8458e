"""What a node's jobs share and never replace while it runs (:class:`NodeParts`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from device.energy import CostConfig, NodePower, Profile
from device.learning.layers import LayerInfo
from device.model.bundle import ModelBundle
from device.model.frozen import FrozenStage
from device.node.settings import NodeSettings
from device.node.store import NodeStore, ReplayMemory

__all__ = ["NodeParts"]


@dataclass(frozen=True, slots=True)
class NodeParts:
    """A node's settings, model, energy model, state file and replay memory; ``power`` its
    radio and cell (``profile`` is already built with them: usable capacity, sleep power).

    Built once when the node starts (:func:`device.node.persistence.open_parts`); learning and
    inference read them and write only through ``store`` and ``memory``.
    """

    settings: NodeSettings
    bundle: ModelBundle
    frozen: FrozenStage
    profile: Profile
    layers: list[LayerInfo]
    cost_config: CostConfig
    store: NodeStore
    memory: ReplayMemory
    power: NodePower = field(default_factory=NodePower)

    @property
    def device_id(self) -> str:
        return self.settings.device_id
