"""A load over a real two-node Ray cluster: two hosts made of network namespaces (198.18.0.1 and
198.18.0.2, a veth pair between them, host names of their own, no default route, nothing joined
to the machine's interfaces), a Ray head on one and a worker node on the other, with token
authentication as current Ray has it on, both started and ended by PID by the test (never
`ray stop`, which ends every Ray process of the machine by name).

Needs root and iproute2's `ip` and util-linux's `unshare` (CI runs as root); without them it
fails and says so rather than skipping, since it is the only proof that meetings span hosts.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from netns import Namespace

from signaling.devserver import DevServer

pytestmark = [pytest.mark.ray, pytest.mark.netns, pytest.mark.timeout(180)]

HEAD, NODE = "198.18.0.1", "198.18.0.2"
RAY = str(Path(sys.executable).with_name("ray"))
STARTED = "Ray runtime started"


@dataclass
class Cluster:
    head: Namespace
    node: Namespace
    veth: str
    env: dict[str, str]
    logs: Path


def needs() -> None:
    """What this test needs, said plainly when missing."""
    missing = [tool for tool in ("ip", "unshare") if shutil.which(tool) is None]
    if os.geteuid() != 0 or missing:
        pytest.fail(
            "test_ray_netns needs root (network namespaces) and the commands ip (iproute2) and "
            f"unshare (util-linux); missing: {['root'] if os.geteuid() else []}{missing}"
        )


def started(process: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    """Waits for `ray start --block` to say the node runs; its log in the error otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if STARTED in log.read_text(errors="replace"):
            return
        if process.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"ray did not start:\n{log.read_text(errors='replace')[-3000:]}")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """The two hosts, a Ray head on the first and a worker node on the second (one CPU each),
    all their processes ended by PID and the namespaces removed, whatever happened."""
    needs()
    tag = os.getpid() % 100000
    logs = Path(tempfile.mkdtemp(prefix="ray-ns-"))  # short: Ray's socket paths live under it
    env = {  # less Ray's "one node" switch, which a local Ray run earlier in this process set
        **{k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"},
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    with (
        Namespace.made(f"connvo-ray-a{tag}") as head,
        Namespace.made(f"connvo-ray-b{tag}") as node,
        head.joined(node, HEAD, NODE) as veth,
    ):
        for ns in (head, node):  # the veth's subnet (and IPv6 link-local), nothing beyond it
            routes = ns.routes()
            assert not [r for r in routes if r.startswith("default")], routes
            assert [r for r in routes if "." in r.split()[0]] == [
                r for r in routes if "198.18.0.0/24" in r
            ]
        try:
            common = ["--num-cpus", "1", "--disable-usage-stats", "--block"]
            head_log = logs / "head.log"
            up = head.start(
                [RAY, "start", "--head", "--node-ip-address", HEAD, "--port", "6379",
                 "--include-dashboard", "false", "--temp-dir", str(logs / "a"), *common],
                hostname="connvo-node-a", env=env, log=str(head_log),
            )  # fmt: skip
            started(up, head_log)
            node_log = logs / "node.log"
            joined = node.start(
                [RAY, "start", "--address", f"{HEAD}:6379", "--node-ip-address", NODE, *common],
                hostname="connvo-node-b", env=env, log=str(node_log),
            )  # fmt: skip
            started(joined, node_log)
            yield Cluster(head, node, veth, env, logs)
        finally:
            node.end_all()
            head.end_all()
            print(
                f"sends refused for want of a route: a {head.unroutable()}, b {node.unroutable()}"
            )
            shutil.rmtree(logs, ignore_errors=True)


def load(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    """`connvo-agent load --ray` of the head, run on host a; its summary is the last line."""
    command = [sys.executable, "-m", "agent", "load", "--ray", f"{HEAD}:6379", "--json", *args]
    return subprocess.run(
        ["ip", "netns", "exec", cluster.head.name, *command],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_meetings_spread_over_two_ray_nodes_send_their_media_between_the_hosts(cluster: Cluster):
    # The embedded backend, which must then listen on the head's address; ICE on each node's
    # own address; bots of each meeting on nodes a, b, a, b: two of each bot's three peers are
    # across the veth, the only way between the hosts.
    before = cluster.head.counters()[cluster.veth]
    report = cluster.logs / "report"
    done = load(
        cluster, "--placement", "spread", "--meetings", "2", "--participants", "4",
        "--media", "av", "--duration", "3", "--report", str(report),
        "--allow-saturated",  # two cores for two nodes, their Ray daemons and other tests
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    after = cluster.head.counters()[cluster.veth]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["success_rate"] == 100.0, summary["failures"]
    placement = summary["placement"]
    assert placement["nodes"] == {
        "connvo-node-a": {"bots": 4, "ok": 4, "failures": {}},
        "connvo-node-b": {"bots": 4, "ok": 4, "failures": {}},
    }
    assert placement["meetings_spanning_nodes"] == 2
    assert "2 of 2 meetings spanned nodes" in done.stderr
    assert f"embedded backend on http://{HEAD}:" in done.stderr  # where node b reaches it
    assert "ICE: each bot gathers on its own node's addresses" in done.stderr
    bots = json.loads((report / "bots.json").read_text())
    payload = {node: 0 for node in placement["nodes"]}
    for bot in bots:
        payload[bot["worker"].rsplit(":", 1)[0]] += bot["audio_bytes"] + bot["video_bytes"]
    sent, received = after.tx_bytes - before.tx_bytes, after.rx_bytes - before.rx_bytes
    print(f"veth: {sent / 1e6:.2f} MB sent, {received / 1e6:.2f} MB received by host a; media")
    print(f"payload received: {payload}")
    # Two thirds of what each node's bots received came over the veth, headers not counted.
    assert received > 2 / 3 * payload["connvo-node-a"] > 300_000
    assert sent > 2 / 3 * payload["connvo-node-b"] > 300_000


def test_a_node_that_cannot_reach_the_backend_shows_as_that_nodes_failures(cluster: Cluster):
    # A backend on host a's loopback, which host b's bots cannot reach: a meeting per node.
    with cluster.head.entered(), DevServer(cluster.logs / "unreachable") as server:
        host = server.token("host")
        tokens = "".join(server.token(f"b{i}") + "\n" for i in range(4))
        (cluster.logs / "tokens").write_text(tokens)
        done = load(
            cluster, "--url", server.url, "--host-token", host, "--tokens",
            str(cluster.logs / "tokens"), "--meetings", "2", "--participants", "2",
            "--duration", "0.5", "--allow-saturated",
        )  # fmt: skip
    assert done.returncode == 1, done.stderr[-4000:]
    nodes = json.loads(done.stdout.strip().splitlines()[-1])["placement"]["nodes"]
    assert nodes["connvo-node-a"] == {"bots": 2, "ok": 2, "failures": {}}
    assert nodes["connvo-node-b"] == {
        "bots": 2, "ok": 0, "failures": {"room_initialized:TransportError": 2}
    }  # fmt: skip
    assert "connvo-node-b: 2 bots, ok 0, failed: room_initialized:TransportError 2" in done.stderr
