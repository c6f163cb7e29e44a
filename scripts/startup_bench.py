#!/usr/bin/env python3
"""Start -> first event of `forcebridge run`, for BENCHMARKS.md (issue 19, item 14).

Usage: scripts/startup_bench.py BINARY [BINARY ...] [--trials N]

One tansu broker and one `forcebridge sim` (from the first binary) serve every run. A first run
of each binary leaves checkpoints (4 events). Then, trial after trial and binary after binary
(interleaved, as this noisy VM needs), the org gets one new change and the binary is started
again: the time from spawn to `forcebridge_source_records_produced_total` >= 1 on its /metrics
(the first event handed to Kafka) is one sample. The binary is stopped with SIGTERM after each.
Prints the samples and the medians in milliseconds.
"""

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.read().decode()


def produced(port):
    try:
        page = http(f"http://127.0.0.1:{port}/metrics")
    except OSError:
        return 0
    total = 0
    for line in page.splitlines():
        if line.startswith("forcebridge_source_records_produced_total"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def start_sim(binary):
    sim = subprocess.Popen(
        [binary, "sim", "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    facts = {}
    while "client_secret" not in facts:
        line = sim.stdout.readline()
        if not line:
            sys.exit("the simulator ended")
        key, _, value = line.strip().partition(": ")
        if value and " " not in key:
            facts[key] = value
    return sim, facts


def config(facts, bootstrap, topic_suffix, ops_port):
    return f"""name: startup-{topic_suffix}
salesforce:
  login_url: {facts['login_url']}
  pubsub_endpoint: {facts['pubsub_endpoint']}
  allow_plaintext: true
  auth:
    type: client_credentials
    client_id: {facts['client_id']}
    client_secret: {facts['client_secret']}
source:
  topic_template: "startup-{topic_suffix}.{{object}}"
  channels:
    - name: /data/AccountChangeEvent
      initial_replay: earliest
  checkpoint_interval: 100ms
kafka:
  bootstrap_servers: {bootstrap}
  checkpoint_topic: startup-{topic_suffix}.checkpoints
  create_topics: true
  topic_partitions: 1
ops:
  listen: 127.0.0.1:{ops_port}
"""


def one_run(binary, cfg, port, expect):
    t0 = time.monotonic()
    proc = subprocess.Popen([binary, "run", "--config", cfg],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while produced(port) < expect:
        if proc.poll() is not None:
            sys.exit(f"{binary} exited with {proc.returncode}")
        if time.monotonic() - t0 > 60:
            sys.exit(f"{binary}: no event within 60 s")
        time.sleep(0.002)
    elapsed = (time.monotonic() - t0) * 1000
    time.sleep(0.5)  # the checkpoint of this event
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    return elapsed


def main():
    args = sys.argv[1:]
    trials = 7
    if "--trials" in args:
        i = args.index("--trials")
        trials = int(args[i + 1])
        del args[i:i + 2]
    binaries = [os.path.abspath(b) for b in args]
    tansu = shutil.which("tansu") or os.path.expanduser("~/.cargo/bin/tansu")
    kport = free_port()
    url = f"tcp://127.0.0.1:{kport}"
    broker = subprocess.Popen([tansu, "broker", "--listener-url", url,
                               "--advertised-listener-url", url,
                               "--storage-engine", "memory://tansu/"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sim, facts = start_sim(binaries[0])
    base = facts["login_url"]
    work = tempfile.mkdtemp(prefix="startup-bench-")
    try:
        time.sleep(2)
        runs = []
        for n, binary in enumerate(binaries):
            port = free_port()
            cfg = os.path.join(work, f"b{n}.yaml")
            with open(cfg, "w") as f:
                f.write(config(facts, f"127.0.0.1:{kport}", f"b{n}", port))
            runs.append((binary, cfg, port))
        http(f"{base}/sim/generate", {"object": "Account", "count": 4})
        for binary, cfg, port in runs:
            one_run(binary, cfg, port, 4)
        samples = {b: [] for b, _, _ in runs}
        for _ in range(trials):
            http(f"{base}/sim/generate", {"object": "Account", "count": 1})
            for binary, cfg, port in runs:
                samples[binary].append(one_run(binary, cfg, port, 1))
        for binary, values in samples.items():
            shown = " ".join(f"{v:.0f}" for v in values)
            print(f"{binary}: start -> first event ms: {shown}; median {statistics.median(values):.0f}")
    finally:
        sim.kill()
        broker.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
