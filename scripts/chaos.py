"""Kill it and look: the reliability scenarios, run with the real commands, counted in SQLite.

    python scripts/chaos.py kill     # 3 nodes, a paced stream of 40 events, 12 kill -9 of nodes
    python scripts/chaos.py outage   # a fleet of 6 nodes in 2 workers, a stream of 30 events at
                                     # speed 240, Mosquitto SIGKILLed 3 times, back 4 s later
    python scripts/chaos.py outage --connection shared   # the same fleet behind gateways
    python scripts/chaos.py outage --no-persistence      # a broker that comes back empty

Everything is a real process: Mosquitto (the configuration ``vega-emu broker --engine mosquitto``
writes, persistence on and saved every ``--autosave`` seconds, restarted on the same port and
data directory), ``vega-emu node`` per device (``kill``) or ``vega-emu fleet`` (``outage``), and
``vega-emu stream``. At the end every node's state file is read: each must pass
``PRAGMA integrity_check`` and hold every seq exactly once. Exit status 1 if not, or if the
stream failed: the stream keeps every batch until its node answers and waits up to
``--drain-timeout`` for the last answers (the nodes learn slower than the stream publishes, and
a broker that dies takes with it what it had not saved: only the stream can send it again).
Logs are kept in ``--work`` (default: a new temporary directory, printed).
"""

from __future__ import annotations

import argparse
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from broker.mosquitto import MosquittoConfig, find_mosquitto, render_config

VEGA = [sys.executable, "-m", "device.cli"]


class Proc:
    """A restartable command whose output goes to a log file."""

    def __init__(self, name: str, cmd: list[str], logs: Path) -> None:
        self.name, self.cmd, self.log = name, cmd, logs / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Broker(Proc):
    """Mosquitto on a fixed port and data directory, as ``vega-emu broker`` configures it, run
    directly so that a SIGKILL reaches the broker itself and nothing else."""

    def __init__(
        self, work: Path, port: int, *, persistence: bool, autosave_s: int, debug: bool
    ) -> None:
        data = work / "mosquitto"
        data.mkdir(parents=True, exist_ok=True)
        config = MosquittoConfig(
            data_dir=data, port=port, persistence=persistence, autosave_interval_s=autosave_s
        )
        conf = data / "mosquitto.conf"
        text = render_config(config, port)
        if debug:  # every packet, with a wall-clock time
            text += "log_type debug\nlog_timestamp_format %H:%M:%S\n"
        conf.write_text(text, encoding="utf-8")
        super().__init__("broker", [find_mosquitto(), "-c", str(conf)], work / "logs")
        self.port = port

    def start(self) -> None:
        super().start()
        wait_port(self.port)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"error: no broker on port {port} after {within_s:.0f} s")


def wait_for(what: str, ready: Callable[[], bool], within_s: float) -> None:
    """Poll ``ready()`` every 0.1 s (other processes' files: nothing to wait on but them)."""
    deadline = time.monotonic() + within_s
    while not ready():
        if time.monotonic() > deadline:
            raise SystemExit(f"error: {what} within {within_s:.0f} s")
        time.sleep(0.1)


def last_seq(db_path: Path) -> int:
    """The node's committed last seq, 0 before its first (or before its database exists)."""
    if not db_path.exists():
        return 0
    try:
        with sqlite3.connect(db_path, timeout=5) as db:
            row = db.execute("SELECT last_seq FROM state").fetchone()
    except sqlite3.Error:
        return 0
    return 0 if row is None or row[0] is None else int(row[0])


def count(db_path: Path, events: int) -> dict[str, object]:
    with sqlite3.connect(db_path) as db:
        ok = db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        seqs = [int(r[0]) for r in db.execute("SELECT seq FROM events WHERE outcome = 'learned'")]
        last, gaps = db.execute("SELECT last_seq, gaps FROM state").fetchone()
    missing = sorted(set(range(1, events + 1)) - set(seqs))
    return {
        "integrity": ok,
        "learned": len(seqs),
        "distinct": len(set(seqs)),
        "missing": missing,
        "last_seq": last,
        "gaps": gaps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=["kill", "outage"])
    parser.add_argument("--nodes", type=int, default=None, help="default: 3 (kill), 6 (outage)")
    parser.add_argument("--events", type=int, default=None, help="default: 40 (kill), 30 (outage)")
    parser.add_argument("--speed", type=float, default=None, help="default: 120 (kill), 240")
    parser.add_argument("--kills", type=int, default=12, help="kill: node kills")
    parser.add_argument(
        "--connection", choices=["node", "shared"], default="node", help="outage: the fleet's"
    )
    parser.add_argument("--workers", type=int, default=2, help="outage: fleet worker processes")
    parser.add_argument("--outages", type=int, default=3, help="outage: broker SIGKILLs")
    parser.add_argument("--down", type=float, default=4.0, help="outage length, seconds")
    parser.add_argument(
        "--up", type=float, default=3.0, help="seconds the broker runs between two outages"
    )
    parser.add_argument(
        "--autosave", type=int, default=1, help="Mosquitto's autosave_interval, seconds"
    )
    parser.add_argument(
        "--no-persistence",
        action="store_true",
        help="the broker comes back empty (no sessions, subscriptions or queued messages)",
    )
    parser.add_argument(
        "--broker-debug", action="store_true", help="log every MQTT packet in logs/broker.log"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--drain", type=float, default=300.0, help="the stream's --drain-timeout, seconds"
    )
    parser.add_argument(
        "--stall", type=float, default=60.0, help="give up after this long without progress, s"
    )
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    kill = args.scenario == "kill"
    nodes = args.nodes or (3 if kill else 6)
    events = args.events or (40 if kill else 30)
    speed = args.speed or (120.0 if kill else 240.0)
    work = args.work or Path(tempfile.mkdtemp(prefix="vega-chaos-"))
    logs, state = work / "logs", work / "state"
    logs.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    port = free_port()
    url = f"mqtt://127.0.0.1:{port}"
    broker = Broker(
        work,
        port,
        persistence=not args.no_persistence,
        autosave_s=args.autosave,
        debug=args.broker_debug,
    )
    ids = [f"node-{i:04d}" for i in range(nodes)]
    if kill:
        node_cmd = [*VEGA, "node", "--broker", url, "--state-dir", str(state)]
        procs = {d: Proc(d, [*node_cmd, "--id", d], logs) for d in ids}
    else:
        fleet_cmd = [*VEGA, "fleet", "--broker", url, "-n", str(nodes), "--state-dir", str(state)]
        fleet_cmd += ["--workers", str(args.workers), "--connection", args.connection]
        procs = {"fleet": Proc("fleet", fleet_cmd, logs)}
    stream_cmd = [*VEGA, "stream", "--broker", url, "--devices", str(nodes)]
    stream_cmd += ["--speed", f"{speed:g}", "--events", str(events)]
    stream = Proc("stream", [*stream_cmd, "--drain-timeout", f"{args.drain:g}"], logs)
    print(f"{args.scenario}: work dir {work}", flush=True)
    started = time.monotonic()
    code: int | None = None
    try:
        broker.start()
        for proc in procs.values():
            proc.start()
        if kill:
            time.sleep(3.0)  # the nodes connect once, so that their sessions exist at the broker
        else:  # the supervisor says so once every node is connected
            fleet_log = procs["fleet"].log
            wait_for("no fleet", lambda: "stops them" in fleet_log.read_text(), 120.0)
        stream.start()
        if kill:
            for k in range(args.kills):
                time.sleep(rng.uniform(0.5, 2.5))
                victim = procs[rng.choice(ids)]
                print(f"kill -9 {victim.name} ({k + 1}/{args.kills})", flush=True)
                victim.kill()
                victim.start()
        else:  # mid-stream: once every node has learned a third of the events

            def lowest() -> int:
                return min(last_seq(state / f"{d}.db") for d in ids)

            wait_for("no node learned", lambda: lowest() >= events // 3, 120.0)
            for k in range(args.outages):
                if k:
                    time.sleep(args.up)
                print(f"kill -9 mosquitto ({k + 1}/{args.outages}); down {args.down:g} s")
                broker.kill()
                time.sleep(args.down)
                broker.start()
                print(f"broker back; lowest last seq {lowest()}", flush=True)
        assert stream.proc is not None
        code = stream.proc.wait(timeout=600)
        print(f"stream exited with {code} after {time.monotonic() - started:.1f} s", flush=True)
        # the nodes work through what queued at the broker: wait while they make progress
        seen, stalled_since = None, time.monotonic()
        while time.monotonic() - stalled_since < args.stall:
            now = [last_seq(state / f"{d}.db") for d in ids]
            if all(last == events for last in now):
                break
            if now != seen:
                seen, stalled_since = now, time.monotonic()
            time.sleep(0.5)
    finally:
        for proc in (stream, *procs.values(), broker):
            proc.stop()
    failed = code != 0
    print("\n| device | learned | distinct | missing | gaps | integrity |")
    print("|---|---|---|---|---|---|")
    for d in ids:
        c = count(state / f"{d}.db", events)
        bad = not c["integrity"] or c["missing"] or c["learned"] != c["distinct"]
        failed = failed or bool(bad)
        print(
            f"| {d} | {c['learned']}/{events} | {c['distinct']} | {c['missing'] or '-'} | "
            f"{c['gaps']} | {'ok' if c['integrity'] else 'BAD'} |"
        )
    print("\nFAILED" if failed else "\nevery seq learned exactly once")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
