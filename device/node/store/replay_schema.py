"""Tables of the latent-replay memory, created and upgraded by the ``vega-replay`` migrations.

``replay_config``  one row (id 1): capacity, bits, latent shape (JSON list), and ``updates``,
                   the number of AR1* events applied so far (the ``i`` of the AR1* quota; the
                   factory replays a new memory starts from count as event 0).
                   ``capacity`` is N_LR, ``ReplayConfig.lr_size`` in the code: the column keeps
                   its first name because renaming it would rewrite every existing state file.
``replay``         one row per occupied slot: slot (0 .. size-1), label, FP32 scale and zero point
                   (stored as SQLite REAL, exact), codes (BLOB, the bit-packed codes of the LR).
"""

from __future__ import annotations

import sqlite_utils

__all__ = ["MIGRATIONS"]

MIGRATIONS = sqlite_utils.Migrations("vega-replay")


@MIGRATIONS(name="0001_replay")
def _create_replay(db: sqlite_utils.Database) -> None:
    db.table("replay_config").create(
        {"id": int, "capacity": int, "bits": int, "shape": str, "updates": int},
        pk="id",
        not_null={"capacity", "bits", "shape", "updates"},
    )
    db.table("replay").create(
        {"slot": int, "label": int, "scale": float, "zero_point": float, "codes": bytes},
        pk="slot",
        not_null={"label", "scale", "zero_point", "codes"},
    )
