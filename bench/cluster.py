"""Scale-out benchmark (docs/performance.md, "Scale-out"): one job of N
events through the adder pipeline (double, then sum; every doubled event is
stored and the job has its sum), timed from the POST to the job's `done`:

- embedded: one `wasmpipe serve` process, SQLite, its worker threads;
- nats: one `wasmpipe serve` ingest node plus 1 or 2 `wasmpipe worker`
  processes, JetStream and PostgreSQL (from tests/services).

Modes are alternated, each round in a fresh database, and the median of
the rounds is reported with its ratio to the embedded mode of the same run.
Run with: bash bench/run-cluster [--events N] [--rounds R] [--slots S]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/wasmpipe")
PLUGINS = os.path.join(ROOT, "plugins/target/wasm32-wasip1/release")


def psql(url, sql):
    subprocess.run(["psql", url, "-XAtq", "-c", sql], check=True, capture_output=True)


RESULT_ONLY = False


def manifest(path, name, queue):
    with open(path, "w") as f:
        f.write(f"""[pipeline]
name = "{name}"
[[stage]]
name = "double"
kind = "map"
plugin = "{PLUGINS}/double.wasm"
[[stage]]
name = "sum"
kind = "reduce"
plugin = "{PLUGINS}/sum.wasm"
[runtime]
chunk_size = 1000
[serve]
database = "bench.db"
max_events = 10000000
max_body = "256MiB"
max_backlog = 20000000
store_reduce_input = {"false" if RESULT_ONLY else "true"}
{queue}
""")


def start(args, env, log):
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=open(log, "w"), env=env, text=True)
    line = p.stdout.readline().strip()
    if not line:
        raise SystemExit(f"{' '.join(args)} did not start; see {log}")
    return p, line


def cpu_seconds(pid):
    """User + system CPU seconds of a live process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy():
    """(busy, total) jiffies of the whole machine."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def post_and_wait(base, name, body, n):
    t = time.perf_counter()
    req = urllib.request.Request(f"{base}/v1/pipelines/{name}/jobs", data=body,
                                 headers={"content-type": "application/x-ndjson"})
    job = json.load(urllib.request.urlopen(req))["job"]
    accepted = time.perf_counter() - t
    while True:
        j = json.load(urllib.request.urlopen(f"{base}/v1/jobs/{job}"))
        if j["status"] == "done":
            break
        time.sleep(0.02)
    total = time.perf_counter() - t
    expect = n * (n - 1)
    if j["result"] != expect or j["events_out"] != (0 if RESULT_ONLY else n):
        raise SystemExit(f"wrong result: {j}")
    return accepted, total


def run_mode(mode, workers, slots, body, n, pg, nats, tmp):
    env = dict(os.environ, RUST_LOG="warn")
    d = tempfile.mkdtemp(dir=tmp)
    name = f"bench{int(time.time() * 1000) % 10**9}"
    m = os.path.join(d, "bench.toml")
    procs = []
    if mode == "embedded":
        manifest(m, name, "")
        serve, line = start([BIN, "serve", "--listen", "127.0.0.1:0", m], env, os.path.join(d, "serve.log"))
    else:
        db = "wasmpipe_bench"
        psql(f"{pg}/postgres", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        psql(f"{pg}/postgres", f"CREATE DATABASE {db}")
        manifest(m, name, f'[queue]\nkind = "nats"\nstream = "{name}"\n[store]\nkind = "postgres"\nurl = "{pg}/{db}"\n')
        env["WASMPIPE_NATS_URL"] = nats
        serve, line = start([BIN, "serve", "--listen", "127.0.0.1:0", m], env, os.path.join(d, "serve.log"))
        for w in range(workers):
            p, _ = start([BIN, "worker", "--workers", str(slots), m], env, os.path.join(d, f"w{w}.log"))
            procs.append(p)
    procs.append(serve)
    try:
        before = [cpu_seconds(p.pid) for p in procs]
        b0, t0 = machine_busy()
        acc, total = post_and_wait(line.removeprefix("listening on "), name, body, n)
        b1, t1 = machine_busy()
        ours = sum(cpu_seconds(p.pid) for p in procs) - sum(before)
        machine = (b1 - b0) / (t1 - t0) * os.cpu_count() * total
        return acc, total, ours, machine
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--slots", type=int, default=1, help="chunks each worker process runs at once")
    ap.add_argument("--result-only", action="store_true",
                    help="store only each job's result, not every event ([serve] store_reduce_input = false)")
    a = ap.parse_args()
    global RESULT_ONLY
    RESULT_ONLY = a.result_only
    pg, nats = os.environ["WASMPIPE_TEST_POSTGRES"], os.environ["WASMPIPE_TEST_NATS"]
    n = a.events
    body = "".join(f'{{"n":{i}}}\n' for i in range(n)).encode()
    modes = [("embedded", 1, 0), ("nats", 1, a.slots), ("nats", 2, a.slots)]
    results = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            for m in modes:
                acc, total, ours, machine = run_mode(*m, body, n, pg, nats, tmp)
                results[m].append((acc, total, ours, machine))
                print(f"round {r + 1}: {m[0]:8} workers={m[1]} {n / total:>10,.0f} events/s "
                      f"(202 after {acc * 1000:.0f} ms, done after {total:.2f} s; CPU: wasmpipe "
                      f"{ours:.1f} s, whole machine {machine:.1f} s)", flush=True)
    base = statistics.median(n / r[1] for r in results[modes[0]])
    stored = "only the result stored" if RESULT_ONLY else "every event stored"
    print(f"\n{n:,} events, adder (double + sum, {stored}), median of {a.rounds} rounds, "
          f"{os.cpu_count()} cores")
    print(f"{'mode':44} {'events/s':>10} {'vs embedded':>12} {'202 after':>10} "
          f"{'CPU wasmpipe':>13} {'CPU machine':>12}")
    for m in modes:
        rate = statistics.median(n / r[1] for r in results[m])
        acc = statistics.median(r[0] for r in results[m])
        ours = statistics.median(r[2] for r in results[m])
        machine = statistics.median(r[3] for r in results[m])
        label = "embedded (serve, SQLite, 2 threads)" if m[0] == "embedded" else \
            f"nats+postgres, {m[1]} worker process{'es' if m[1] > 1 else ''} x {m[2]} slot{'s' if m[2] > 1 else ''}"
        print(f"{label:44} {rate:>10,.0f} {rate / base:>11.2f}x {acc * 1000:>7.0f} ms "
              f"{ours:>11.1f} s {machine:>10.1f} s")


main()
