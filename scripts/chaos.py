"""Kill it and look: the reliability scenarios, run with the real commands, counted in SQLite.

    python scripts/chaos.py kill     # 3 nodes, a paced stream of 40 events, 12 kill -9 of nodes
    python scripts/chaos.py outage   # 3 nodes, a paced stream of 30 events, Mosquitto down 5 s

Everything is a real process: ``vega-emu broker --engine mosquitto`` (persistence on),
``vega-emu node`` per device, ``vega-emu stream``. At the end every node's state file is read:
each must pass ``PRAGMA integrity_check`` and hold every seq exactly once. Exit status 1 if not.
Logs are kept in ``--work`` (default: a new temporary directory, printed).
"""

from __future__ import annotations

import argparse
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, within_s: float = 10.0) -> None:
    import socket

    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"error: no broker on port {port} after {within_s:.0f} s")


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
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--events", type=int, default=None, help="default: 40 (kill), 30 (outage)")
    parser.add_argument("--speed", type=float, default=None, help="default: 120 (kill), 60")
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--down", type=float, default=5.0, help="outage length, seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--stall", type=float, default=60.0, help="give up after this long without progress, s"
    )
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    events = args.events or (40 if args.scenario == "kill" else 30)
    speed = args.speed or (120.0 if args.scenario == "kill" else 60.0)
    work = args.work or Path(tempfile.mkdtemp(prefix="vega-chaos-"))
    logs, state = work / "logs", work / "state"
    logs.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    port = free_port()
    url = f"mqtt://127.0.0.1:{port}"
    broker_cmd = [*VEGA, "broker", "--engine", "mosquitto", "--port", str(port)]
    broker = Proc("broker", [*broker_cmd, "--data-dir", str(work / "mosquitto")], logs)
    ids = [f"node-{i:04d}" for i in range(args.nodes)]
    nodes = {
        d: Proc(d, [*VEGA, "node", "--broker", url, "--id", d, "--state-dir", str(state)], logs)
        for d in ids
    }
    stream_cmd = [*VEGA, "stream", "--broker", url, "--devices", str(args.nodes)]
    stream = Proc("stream", [*stream_cmd, "--speed", f"{speed:g}", "--events", str(events)], logs)
    print(f"{args.scenario}: work dir {work}", flush=True)
    started = time.monotonic()
    try:
        broker.start()
        wait_port(port)
        for node in nodes.values():
            node.start()
        time.sleep(3.0)  # the nodes connect once, so that their sessions exist at the broker
        stream.start()
        if args.scenario == "kill":
            for k in range(args.kills):
                time.sleep(rng.uniform(0.5, 2.5))
                victim = nodes[rng.choice(ids)]
                print(f"kill -9 {victim.name} ({k + 1}/{args.kills})", flush=True)
                victim.kill()
                victim.start()
        else:
            time.sleep(events * 60.0 / speed / 3)
            print(f"kill -9 mosquitto; down for {args.down:g} s", flush=True)
            conf = work / "mosquitto" / "mosquitto.conf"
            subprocess.run(["pkill", "-9", "-f", f"mosquitto -c {conf}"], check=True)
            broker.stop()
            time.sleep(args.down)
            broker.start()
            wait_port(port)
            print("broker back", flush=True)
        assert stream.proc is not None
        code = stream.proc.wait(timeout=600)
        print(f"stream exited with {code} after {time.monotonic() - started:.1f} s", flush=True)
        # the nodes work through what queued at the broker: wait while they make progress
        seen, stalled_since = None, time.monotonic()
        while time.monotonic() - stalled_since < args.stall:
            now = [count(state / f"{d}.db", events)["last_seq"] for d in ids]
            if all(last == events for last in now):
                break
            if now != seen:
                seen, stalled_since = now, time.monotonic()
            time.sleep(0.5)
    finally:
        for proc in (stream, *nodes.values(), broker):
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
