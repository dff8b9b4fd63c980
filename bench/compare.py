"""Two commits' benchmarks in one run: every row of each bench script, for a base
revision and for the working tree, taken in turns so that both meet the same
machine, and their ratio.

    python bench/compare.py BASE [--rounds N] [--json FILE]

BASE is checked out in a temporary git worktree and installed in a virtualenv
of its own (with the same comparison libraries as the current one); each of
its bench scripts runs there, and the working tree's scripts run with this
interpreter's trioudp. Rates keep their best over the rounds, latencies their
lowest. Rows of systems that are not trioudp (uvloop, a raw socket pair ...)
are the control: their ratio shows how noisy the machine was.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import venv
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: Each script, and the arguments that make it quick enough to run in turns.
SCRIPTS: dict[str, list[str]] = {
    "receive_capacity.py": ["--rounds", "5"],
    "goodput.py": ["--rounds", "2"],
    "echo_latency.py": ["--rounds", "3000"],
    "peers.py": ["--peers", "3000"],
}
#: The libraries the bench scripts compare with, installed beside the base.
PEERS = ["uvloop", "twisted", "anyio", "asyncudp", "asyncio-dgram"]


def rows(script: str, record: dict[str, Any]) -> dict[str, tuple[float, bool]]:
    """The comparable rows of one script's JSON: name -> (value, higher is better)."""
    found: dict[str, tuple[float, bool]] = {}
    if script == "receive_capacity.py":
        for row in record["results"]:
            found[f"receive capacity: {row['system']}"] = (row["messages_per_second"], True)
    elif script == "goodput.py":
        for row in record["rows"]:
            found[f"goodput {row['size']} B: {row['system']}"] = (row["messages_per_second"], True)
    elif script == "echo_latency.py":
        for row in record["rows"]:
            found[f"echo p50 {row['placement']}: {row['system']}"] = (row["p50_us"], False)
    elif script == "peers.py":
        found["peers: bytes per idle peer, unreliable"] = (
            record["bytes_per_peer_unreliable"],
            False,
        )
        found["peers: bytes per idle peer, reliable"] = (record["bytes_per_peer_reliable"], False)
        found["peers: us per datagram, one peer"] = (record["microseconds_one_peer"], False)
        found["peers: us per datagram, many peers"] = (record["microseconds_many_peers"], False)
    return found


def prepare(base: str, where: Path) -> Path:
    """A worktree of ``base`` and a virtualenv with it installed: its python."""
    tree = where / "tree"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), base],
        check=True,
        capture_output=True,
    )
    environment = where / "venv"
    venv.create(environment, with_pip=True)
    python = environment / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(tree), *PEERS], check=True)
    return python


def run(python: Path, script: Path, arguments: list[str]) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json") as output:
        subprocess.run(
            [str(python), str(script), *arguments, "--json", output.name],
            check=True,
            cwd=tempfile.gettempdir(),  # never import the tree by accident
            stdout=subprocess.DEVNULL,
        )
        return json.loads(Path(output.name).read_text())  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description="two commits' benchmarks in one run")
    parser.add_argument("base", help="the revision to compare the working tree with")
    parser.add_argument("--rounds", type=int, default=2, help="turns each side takes")
    parser.add_argument("--json", type=Path, help="write the table here too")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trioudp-compare-") as scratch:
        base_python = prepare(args.base, Path(scratch))
        base_tree = Path(scratch) / "tree"
        try:
            best: dict[str, dict[str, tuple[float, bool]]] = {"base": {}, "head": {}}
            for _ in range(args.rounds):
                for script, arguments in SCRIPTS.items():
                    for side, python, folder in (
                        ("base", base_python, base_tree / "bench"),
                        ("head", Path(sys.executable), HERE),
                    ):
                        found = rows(script, run(python, folder / script, arguments))
                        for name, (value, higher) in found.items():
                            old = best[side].get(name)
                            if old is None or (value > old[0] if higher else value < old[0]):
                                best[side][name] = (value, higher)
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base_tree)],
                check=False,
                capture_output=True,
            )
    table: list[dict[str, object]] = []
    print(f"{'row':<66} {'base':>10} {'head':>10} {'head/base':>9}  (better is {'>'} 1)")
    for name, (base_value, higher) in best["base"].items():
        if name not in best["head"]:
            continue
        head_value = best["head"][name][0]
        # Always "how much better the head is": rates divide one way, times the other.
        ratio = head_value / base_value if higher else base_value / head_value
        ours = "trioudp" in name or name.startswith("peers:")
        flag = "  <-- slower by over 5%" if ratio < 0.95 and ours else ""
        print(f"{name:<66} {base_value:>10,.1f} {head_value:>10,.1f} {ratio:>9.3f}{flag}")
        table.append(
            {"row": name, "base": base_value, "head": head_value, "ratio": round(ratio, 3)}
        )
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "base": args.base,
                    "python": sys.version.split()[0],
                    "cpus": os.cpu_count(),
                    "rows": table,
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
