#!/usr/bin/env python3
"""antenna-operator benchmark (`make bench`): docs/bench.md describes it.

On a private local control plane (scripts/dev-cluster.sh with DEVCLUSTER_DIR, default
/tmp/devcluster-bench), with the same KWOK timing on every Pod, one after the other:

  single   N CaptureJobs (post_processing: one Pod) vs N batch/v1 Jobs (completions 1)
  multi    N/4 CaptureJobs (ml: discovery Pod + 4 batch Pods) vs N/4 Jobs (4 x 4)
  limit    N bare Pods created by a tight client, no controller
  memory   the operator (`run`: controller + facade) at MEM_SMALL and MEM_N idle jobs
  facade   GET /api/v2/jobs/?limit=25 and a detail GET at MEM_N jobs, 15 s each
  exec     (opt-in) MEM_N CaptureJobs that run, with the operator's RSS and CPU

API cost comes from the API server's own apiserver_request_total (deltas per phase,
attributed to a client by resource; the phases never overlap), cross-checked with the
clients' own counters (the operator's antenna_api_requests_total, the
controller-manager's and scheduler's rest_client_requests_total).

Settings come from the environment (make variables): see `usage()` below. Prints a
markdown report and writes it to bench/results/<date>.md; raw data and logs stay in
$BENCH_WORK (default /tmp/antenna-bench).
"""

import datetime
import json
import os
import re
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPERATOR = os.path.join(REPO, "target", "release", "antenna-operator")
LOADGEN = os.path.join(REPO, "target", "release", "antenna-bench")
CLK_TCK = os.sysconf("SC_CLK_TCK")
ALL_PARTS = ["single", "multi", "limit", "memory", "facade"]


def usage():
    return """make bench [N=1000] [PARTS=single,multi,limit,memory,facade[,exec]] [AFTER=1s]
           [MEM_SMALL=1000] [MEM_N=10000] [CONCURRENCY=32] [OP_ARGS="--concurrency 16"]
           [DURATION=15] [CONNECTIONS=10] [NODES=4] [KEEP_CLUSTER=1] [ORDER=ours-first]
           [DEVCLUSTER_DIR=/tmp/devcluster-bench]"""


def env(name, default):
    v = os.environ.get(name, "")
    return v if v != "" else default


CFG = {
    "n": int(env("N", "1000")),
    "parts": [p.strip() for p in env("PARTS", ",".join(ALL_PARTS)).split(",") if p.strip()],
    "after": env("AFTER", "1s"),
    "mem_small": int(env("MEM_SMALL", "1000")),
    "mem_n": int(env("MEM_N", "10000")),
    "concurrency": int(env("CONCURRENCY", "32")),
    "op_args": env("OP_ARGS", "").split(),
    "duration": int(env("DURATION", "15")),
    "connections": int(env("CONNECTIONS", "10")),
    "nodes": int(env("NODES", "4")),
    "keep_cluster": env("KEEP_CLUSTER", "0") == "1",
    "order": env("ORDER", "ours-first"),
    "settle": float(env("SETTLE", "3")),
    "repeat": int(env("REPEAT", "2")),
    "cleanup": env("CLEANUP", "0") == "1",
    "profile": env("PROFILE", "0") == "1",
    "devcluster_dir": env("DEVCLUSTER_DIR", "/tmp/devcluster-bench"),
    "work": env("BENCH_WORK", "/tmp/antenna-bench"),
}

T_START = time.time()
STAMP = datetime.datetime.fromtimestamp(T_START).strftime("%Y%m%d-%H%M%S")


def log(msg):
    print(f"[bench {time.time() - T_START:7.1f}s] {msg}", file=sys.stderr, flush=True)


def sh(args, check=True, capture=True, env_extra=None, timeout=None):
    e = dict(os.environ)
    e.update(KENV)
    if env_extra:
        e.update(env_extra)
    r = subprocess.run(args, env=e, text=True, capture_output=capture, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


KENV = {}


# ----------------------------------------------------------------------------------------
# Cluster
# ----------------------------------------------------------------------------------------


class Cluster:
    def __init__(self, run_dir):
        self.dir = run_dir
        self.script = os.path.join(REPO, "scripts", "dev-cluster.sh")

    def up(self):
        e = {"DEVCLUSTER_DIR": self.dir, "NODES": str(CFG["nodes"])}
        st = subprocess.run(["bash", self.script, "status"], env={**os.environ, **e},
                            capture_output=True, text=True)
        if st.returncode == 0:
            log(f"reusing the running cluster in {self.dir}")
        else:
            log(f"starting a private cluster in {self.dir} (NODES={CFG['nodes']})")
            r = subprocess.run(["bash", self.script, "up"], env={**os.environ, **e}, text=True)
            if r.returncode != 0:
                raise RuntimeError("dev-cluster.sh up failed")
        out = subprocess.run(["bash", self.script, "env"], env={**os.environ, **e},
                             capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            m = re.match(r"export (\w+)=(.*)", line)
            if m:
                val = m.group(2).strip()
                val = val.replace('"$PATH"', os.environ["PATH"]).strip("'")
                KENV[m.group(1)] = val
        self.ports = {}
        with open(os.path.join(self.dir, "ports.env")) as f:
            for line in f:
                k, _, v = line.strip().partition("=")
                if k:
                    self.ports[k] = int(v)
        pki = os.path.join(self.dir, "pki")
        self.tls = ssl.create_default_context()
        self.tls.check_hostname = False
        self.tls.verify_mode = ssl.CERT_NONE
        self.tls.load_cert_chain(os.path.join(pki, "admin.crt"), os.path.join(pki, "admin.key"))

    def down(self):
        subprocess.run(["bash", self.script, "down"],
                       env={**os.environ, "DEVCLUSTER_DIR": self.dir}, text=True)

    def pid(self, component):
        with open(os.path.join(self.dir, "pids", component)) as f:
            return int(f.read().split()[0])

    def scrape(self, url):
        with urllib.request.urlopen(url, context=self.tls, timeout=30) as r:
            return r.read().decode()

    def apiserver_metrics(self):
        return self.scrape(f"https://127.0.0.1:{self.ports['API_PORT']}/metrics")

    def kcm_metrics(self):
        return self.scrape(f"https://127.0.0.1:{self.ports['KCM_PORT']}/metrics")

    def scheduler_metrics(self):
        return self.scrape(f"https://127.0.0.1:{self.ports['SCHED_PORT']}/metrics")


LABEL_RE = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metric(text, name):
    """[(labels dict, value)] of one metric family's samples."""
    out = []
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, val = line.rpartition(" ")
        labels = dict(LABEL_RE.findall(head[len(name):]))
        try:
            out.append((labels, float(val)))
        except ValueError:
            pass
    return out


def proc_stats(pid):
    """RSS, peak RSS (KiB) and CPU seconds of a process."""
    st = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                st[k] = int(v.split()[0])
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime is field 14, stime field 15.
    st["cpu_s"] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return st


def all_procs():
    """{pid: (command, CPU seconds)} of every process."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1:raw.rindex(")")]
        fields = raw.rsplit(")", 1)[1].split()
        out[int(d)] = (comm, (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return out


def machine_cpu():
    """Busy CPU seconds of the whole machine (user, nice, system), of this script's reaped
    children (loadgen, kubectl) so far, and of every process."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    busy = (v[0] + v[1] + v[2]) / CLK_TCK
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"busy": busy, "children": ru.ru_utime + ru.ru_stime, "procs": all_procs(),
            "me": os.getpid()}


def foreign_cores(before, after, own_pids=()):
    """Cores used during a phase by work that is not the benchmark's (others' builds and
    tests on the machine): machine busy time minus the cluster's, the operator's and the
    benchmark's own processes', over the wall time; and the top other commands."""
    wall = after["t"] - before["t"]
    busy = after["machine"]["busy"] - before["machine"]["busy"]
    own = sum(delta(before["cpu"], after["cpu"]).values())
    own += after["machine"]["children"] - before["machine"]["children"]
    pa, pb = before["machine"].get("procs", {}), after["machine"].get("procs", {})
    mine = set(own_pids) | {after["machine"].get("me")}
    by_comm = {}
    for pid, (comm, cpu) in pb.items():
        if pid in mine or comm in ("perf",):
            if comm == "perf":
                own += cpu - pa.get(pid, (comm, 0.0))[1]
            continue
        d = cpu - pa.get(pid, (comm, 0.0))[1]
        if d > 0:
            by_comm[comm] = by_comm.get(comm, 0) + d
    top = sorted(by_comm.items(), key=lambda x: -x[1])[:3]
    cores = max(0.0, (busy - own) / wall) if wall > 0 else 0.0
    return cores, [(c, round(v / wall, 2)) for c, v in top if v / wall >= 0.05]


# ----------------------------------------------------------------------------------------
# Snapshots of every counter a phase's deltas are taken from
# ----------------------------------------------------------------------------------------

VERB_CLASS = {
    "POST": "create", "PUT": "update/patch", "PATCH": "update/patch", "APPLY": "update/patch",
    "DELETE": "delete", "DELETECOLLECTION": "delete",
    "GET": "get/list/watch", "LIST": "get/list/watch", "WATCH": "get/list/watch",
}
CLASSES = ["create", "update/patch", "delete", "get/list/watch"]
COMPONENTS = ["kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler", "kwok"]


def own_pids(cluster, op):
    pids = []
    for c in COMPONENTS:
        try:
            pids.append(cluster.pid(c))
        except (OSError, ValueError):
            pass
    if op is not None:
        pids.append(op.proc.pid)
    return pids


def snapshot(cluster, operator=None):
    snap = {"t": time.time()}
    reqs = {}
    text = cluster.apiserver_metrics()
    for labels, v in parse_metric(text, "apiserver_request_total"):
        if not labels.get("resource"):
            continue  # /metrics, /healthz...
        key = "|".join((labels["verb"], labels.get("group", ""), labels["resource"],
                        labels.get("subresource", "")))
        reqs[key] = reqs.get(key, 0) + v
    snap["server"] = reqs
    conflicts = {}
    for labels, v in parse_metric(text, "apiserver_request_total"):
        if labels.get("resource") and labels.get("code") == "409":
            key = "|".join((labels["verb"], labels.get("group", ""), labels["resource"],
                            labels.get("subresource", "")))
            conflicts[key] = conflicts.get(key, 0) + v
    snap["conflicts"] = conflicts
    lat = {}
    for part in ("sum", "count"):
        for labels, v in parse_metric(text, "apiserver_request_duration_seconds_" + part):
            if not labels.get("resource"):
                continue
            key = "|".join((labels["verb"], labels.get("group", ""), labels["resource"],
                            labels.get("subresource", ""))) + "|" + part
            lat[key] = lat.get(key, 0) + v
    snap["latency"] = lat
    for name, text in (("kcm", cluster.kcm_metrics()), ("sched", cluster.scheduler_metrics())):
        per = {}
        for labels, v in parse_metric(text, "rest_client_requests_total"):
            per[labels["method"]] = per.get(labels["method"], 0) + v
        snap[name] = per
    snap["cpu"] = {}
    for c in COMPONENTS:
        try:
            snap["cpu"][c] = proc_stats(cluster.pid(c))["cpu_s"]
        except (OSError, ValueError):
            pass
    snap["machine"] = machine_cpu()
    if operator is not None:
        snap["operator"] = operator.metrics()
        snap["cpu"]["antenna-operator"] = proc_stats(operator.proc.pid)["cpu_s"]
    return snap


def delta(a, b):
    keys = set(a) | set(b)
    return {k: b.get(k, 0) - a.get(k, 0) for k in keys if b.get(k, 0) - a.get(k, 0) != 0}


def attribute(before, after, kind, client_reads):
    """Splits the API server's requests of a phase by client.

    kind: 'ours' (CaptureJobs), 'theirs' (batch/v1 Jobs) or 'pods' (bare Pods, no
    controller). Rules (documented in docs/bench.md):
      - POST of the benchmark's own objects (capturejobs / jobs / bare pods): the client;
        so are its LIST and WATCH of them (client_reads each).
      - pods/binding: scheduler. pods/status, nodes, leases: kwok (the kubelet's part).
      - events.k8s.io Events: the scheduler writes its Scheduled events there too; its
        share is its own rest_client POST+PATCH minus its bindings, the rest is the
        controller's.
      - everything else on capturejobs, jobs, pods, configmaps, events: the controller.
    """
    d = delta(before["server"], after["server"])
    sched = delta(before["sched"], after["sched"])
    client_res = {"ours": "capturejobs", "theirs": "jobs", "pods": "pods"}[kind]
    roles = {"controller": {}, "client": {}, "scheduler": {}, "kwok": {}, "gc": {}, "other": {}}
    bindings = sum(v for k, v in d.items() if k.split("|")[2:] == ["pods", "binding"])
    sched_writes = sched.get("POST", 0) + sched.get("PATCH", 0) + sched.get("PUT", 0)
    sched_events = max(0.0, sched_writes - bindings)

    def add(role, key, v):
        roles[role][key] = roles[role].get(key, 0) + v

    for key, v in sorted(d.items()):
        verb, group, res, sub = key.split("|")
        if res == client_res and sub == "" and (verb == "POST" or
                                                 (kind == "pods" and verb != "DELETE")):
            add("client", key, v)
        elif res == client_res and sub == "" and verb in ("LIST", "WATCH"):
            c = min(v, client_reads)
            add("client", key, c)
            if v - c:
                add("controller", key, v - c)
        elif res == "capturejobs" and sub == "" and verb == "GET":
            # The operator never GETs a CaptureJob (it reads its cache); these are the
            # controller-manager's garbage collector checking the owners of our Pods, and
            # they can fall into a later phase's window.
            add("gc", key, v)
        elif res == "pods" and sub == "binding":
            add("scheduler", key, v)
        elif (res == "pods" and sub == "status") or res in ("nodes", "leases"):
            add("kwok", key, v)
        elif res == "events" and group == "events.k8s.io":
            take = min(v, sched_events)
            sched_events -= take
            if take:
                add("scheduler", key, take)
            if v - take:
                add("controller", key, v - take)
        elif res in ("capturejobs", "jobs", "pods", "configmaps", "events"):
            if kind == "pods":
                add("other", key, v)
            else:
                add("controller", key, v)
        else:
            add("other", key, v)
    return roles


def by_class(reqs, per):
    out = {c: 0.0 for c in CLASSES}
    for key, v in reqs.items():
        verb = key.split("|")[0]
        out[VERB_CLASS.get(verb, "get/list/watch")] += v
    return {c: v / per for c, v in out.items()}


def events_writes(reqs, per):
    return sum(v for k, v in reqs.items()
               if k.split("|")[2] == "events"
               and VERB_CLASS.get(k.split("|")[0]) in ("create", "update/patch")) / per


# ----------------------------------------------------------------------------------------
# The operator
# ----------------------------------------------------------------------------------------


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Operator:
    def __init__(self, mode, namespace, tag):
        self.metrics_port = free_port()
        self.api_port = free_port()
        self.log_path = os.path.join(CFG["work"], f"operator-{tag}.log")
        args = [OPERATOR, mode, "--namespace", namespace, "--operator-namespace", "bench-system",
                "--default-namespace", namespace,
                "--metrics-addr", f"127.0.0.1:{self.metrics_port}",
                "--api-addr", f"127.0.0.1:{self.api_port}"] + CFG["op_args"]
        self.args = args
        self.logf = open(self.log_path, "w")
        e = dict(os.environ)
        e.update(KENV)
        e.setdefault("RUST_LOG", "warn")
        self.proc = subprocess.Popen(args, env=e, stdout=self.logf, stderr=subprocess.STDOUT)
        t = time.time()
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"operator exited ({self.proc.returncode}); see {self.log_path}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/readyz",
                                            timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.time() - t > 60:
                raise RuntimeError(f"operator not ready in 60 s; see {self.log_path}")
            time.sleep(0.2)
        log(f"operator {mode} ready (pid {self.proc.pid}, metrics :{self.metrics_port}, "
            f"api :{self.api_port})")

    def metrics(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                    timeout=10) as r:
            text = r.read().decode()
        m = {"api_requests": {}, "reconciles": 0.0, "duration_sum": 0.0, "duration_count": 0.0,
             "errors": {}}
        for labels, v in parse_metric(text, "antenna_api_requests_total"):
            m["api_requests"][f"{labels.get('verb')} {labels.get('resource')}"] = v
        for labels, v in parse_metric(text, "antenna_reconciles_total"):
            m["reconciles"] += v
        for labels, v in parse_metric(text, "antenna_reconcile_errors_total"):
            m["errors"][labels.get("kind", "?")] = v
        for labels, v in parse_metric(text, "antenna_reconcile_duration_seconds_sum"):
            m["duration_sum"] += v
        for labels, v in parse_metric(text, "antenna_reconcile_duration_seconds_count"):
            m["duration_count"] += v
        m["duration_buckets"] = [(labels["le"], v) for labels, v in
                                 parse_metric(text, "antenna_reconcile_duration_seconds_bucket")]
        return m

    def stats(self):
        return proc_stats(self.proc.pid)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()


def op_delta(before, after):
    a, b = before["operator"], after["operator"]
    return {
        "api_requests": delta(a["api_requests"], b["api_requests"]),
        "reconciles": b["reconciles"] - a["reconciles"],
        "errors": delta(a["errors"], b["errors"]),
        "duration_sum": b["duration_sum"] - a["duration_sum"],
        "duration_count": b["duration_count"] - a["duration_count"],
        "duration_buckets": [(le, v - dict(a["duration_buckets"]).get(le, 0))
                             for le, v in b["duration_buckets"]],
    }


# ----------------------------------------------------------------------------------------
# Phases
# ----------------------------------------------------------------------------------------


def kubectl(*args, check=True, timeout=None):
    return sh(["kubectl", *args], check=check, timeout=timeout)


def fresh_namespace(ns):
    kubectl("delete", "namespace", ns, "--ignore-not-found", "--wait=true", timeout=600)
    kubectl("create", "namespace", ns)
    t = time.time()
    while kubectl("-n", ns, "get", "serviceaccount", "default", check=False).returncode != 0:
        if time.time() - t > 60:
            raise RuntimeError(f"no default ServiceAccount in {ns}")
        time.sleep(0.2)
    # Let the namespace's own setup (kube-root-ca.crt, default SA) finish before counting.
    time.sleep(1)


def drop_namespace(ns):
    t = time.time()
    kubectl("delete", "namespace", ns, "--ignore-not-found", "--wait=true", timeout=900)
    log(f"deleted namespace {ns} in {time.time() - t:.0f}s")


def loadgen(*args, timeout=None):
    r = sh([LOADGEN, *args], timeout=timeout)
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError) as e:
        raise RuntimeError(f"loadgen output: {r.stdout}\n{r.stderr}") from e


def common_args(ns, count, prefix="b", until="final", start_index=0):
    return ["--namespace", ns, "--count", str(count), "--concurrency", str(CFG["concurrency"]),
            "--after", CFG["after"], "--prefix", prefix, "--until", until,
            "--start-index", str(start_index), "--timeout", "1200"]


class Perf:
    """`perf record` of a process while a phase runs (PROFILE=1)."""

    def __init__(self, pid, tag):
        self.proc = None
        if not CFG["profile"] or not shutil.which("perf"):
            return
        self.data = os.path.join(CFG["work"], f"perf-{tag}.data")
        self.txt = os.path.join(CFG["work"], f"perf-{tag}.txt")
        self.proc = subprocess.Popen(["perf", "record", "-F", "499", "-g", "-o", self.data,
                                      "-p", str(pid)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

    def stop(self):
        if not self.proc:
            return None
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=60)
        r = subprocess.run(["perf", "report", "-i", self.data, "--stdio", "--no-children",
                            "--sort", "symbol", "-g", "none", "--percent-limit", "1"],
                           capture_output=True, text=True)
        with open(self.txt, "w") as f:
            f.write(r.stdout)
        top = []
        for line in r.stdout.splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split()
            while parts and parts[-1] == "-":
                parts.pop()
            top.append(" ".join(parts))
        top = top[:15]
        return top


def run_side(cluster, kind, shape, count, tag):
    """One measured run: ours (CaptureJobs, fresh operator), theirs (batch/v1 Jobs) or bare
    Pods, in a namespace of its own."""
    ns = f"bench-{kind}-{shape}-{tag}"
    fresh_namespace(ns)
    op = Operator("controller", ns, f"{kind}-{shape}-{tag}") if kind == "ours" else None
    perf = Perf(op.proc.pid, f"{kind}-{shape}-{tag}") if op and tag == "1" else None
    try:
        before = snapshot(cluster, op)
        if kind == "ours":
            res = loadgen("capturejobs", *common_args(ns, count), "--shape", shape)
            pods_per_job = 1 if shape == "single" else 5
        elif kind == "theirs":
            completions = 1 if shape == "single" else 4
            res = loadgen("jobs", *common_args(ns, count), "--completions", str(completions))
            pods_per_job = completions
        else:
            res = loadgen("pods", *common_args(ns, count))
            pods_per_job = 1
        time.sleep(CFG["settle"])
        after = snapshot(cluster, op)
        out = {
            "kind": kind, "shape": shape, "namespace": ns, "count": count,
            "pods_per_job": pods_per_job, "loadgen": res,
            "roles": attribute(before, after, kind, res["client_requests"]["list"]),
            "kcm_client": delta(before["kcm"], after["kcm"]),
            "conflicts": delta(before["conflicts"], after["conflicts"]),
            "latency": delta(before["latency"], after["latency"]),
            "sched_client": delta(before["sched"], after["sched"]),
            "cpu": delta(before["cpu"], after["cpu"]),
            "window_s": after["t"] - before["t"],
        }
        out["foreign_cores"], out["foreign_top"] = foreign_cores(before, after,
                                                                 own_pids(cluster, op))
        if op:
            out["operator"] = op_delta(before, after)
            out["operator_proc"] = op.stats()
        if perf:
            out["perf_top"] = perf.stop()
            perf = None
        log(f"{kind}/{shape}/{tag}: {count} in {res['wall_s']:.1f}s = {res['per_s']:.1f}/s "
            f"(creates {res['create_per_s']:.0f}/s, done {res['done']}, states {res['states']}; "
            f"other load {out['foreign_cores']:.2f} cores {out['foreign_top']})")
        return out
    finally:
        if perf:
            perf.stop()
        if op:
            op.stop()
        if CFG["cleanup"]:
            drop_namespace(ns)


def memory_and_facade(cluster, parts):
    ns = "bench-mem"
    fresh_namespace(ns)
    op = Operator("run", ns, "memory")
    out = {"namespace": ns}
    try:
        out["idle0"] = op.stats()
        small, big = CFG["mem_small"], CFG["mem_n"]
        t = time.time()
        r1 = loadgen("capturejobs", *common_args(ns, small, prefix="m", until="status"),
                     "--idle")
        time.sleep(CFG["settle"])
        out["small"] = {"jobs": small, "proc": op.stats(), "loadgen": r1,
                        "op": op.metrics(), "cache": loadgen("cachesize", "--namespace", ns)}
        log(f"memory: {small} idle jobs processed in {r1['wall_s']:.1f}s; {out['small']['proc']}")
        before = snapshot(cluster, op)
        perf = Perf(op.proc.pid, "idle-jobs")
        r2 = loadgen("capturejobs", *common_args(ns, big - small, prefix="m", until="status",
                                                  start_index=small), "--idle")
        time.sleep(CFG["settle"])
        idle_top = perf.stop()
        after = snapshot(cluster, op)
        out["big"] = {"jobs": big, "proc": op.stats(), "loadgen": r2, "op": op.metrics(),
                      "create_and_process_s": time.time() - t,
                      "cache": loadgen("cachesize", "--namespace", ns),
                      "roles": attribute(before, after, "ours", r2["client_requests"]["list"]),
                      "foreign": foreign_cores(before, after, own_pids(cluster, op)),
                      "cpu": delta(before["cpu"], after["cpu"]),
                      "perf_top": idle_top, "operator": op_delta(before, after)}
        log(f"memory: {big} idle jobs; {out['big']['proc']}; cache {out['big']['cache']}")
        raw = kubectl("get", "--raw",
                      f"/apis/antenna.insectai.org/v1alpha1/namespaces/{ns}/capturejobs?limit=100")
        items = json.loads(raw.stdout)["items"]
        ids = [i.get("status", {}).get("id") for i in items]
        ids = [x for x in ids if x]
        if "facade" in parts:
            addr = f"127.0.0.1:{op.api_port}"
            fac = {}
            for name, paths in (("list", ["/api/v2/jobs/?limit=25"]),
                                ("detail", [f"/api/v2/jobs/{i}/" for i in ids[:100]])):
                if not paths:
                    fac[name] = {"served": False, "status": "no ids"}
                    continue
                cpu0 = op.stats()["cpu_s"]
                s0 = {"t": time.time(), "machine": machine_cpu(), "cpu": {}}
                perf = Perf(op.proc.pid, f"facade-{name}")
                fac[name] = loadgen("http", "--addr", addr,
                                    *sum([["--path", p] for p in paths], []),
                                    "--duration", str(CFG["duration"]),
                                    "--connections", str(CFG["connections"]))
                top = perf.stop()
                if top:
                    fac[name]["perf_top"] = top
                s1 = {"t": time.time(), "machine": machine_cpu(), "cpu": {}}
                fac[name]["operator_cpu_s"] = op.stats()["cpu_s"] - cpu0
                s1["cpu"]["op"] = fac[name]["operator_cpu_s"]
                fac[name]["foreign_cores"], fac[name]["foreign_top"] = foreign_cores(
                    s0, s1, own_pids(cluster, op))
                fac[name]["path"] = paths[0]
                log(f"facade {name}: {fac[name].get('req_per_s')} req/s, p99 "
                    f"{fac[name].get('p99_ms')} ms (served: {fac[name].get('served')})")
            out["facade"] = fac
            out["after_facade"] = op.stats()
    finally:
        op.stop()
        if CFG["cleanup"]:
            drop_namespace(ns)
    return out


def exec_at_scale(cluster):
    """MEM_N CaptureJobs that run (single-Pod), with the operator's RSS and CPU."""
    ns = "bench-exec"
    fresh_namespace(ns)
    op = Operator("run", ns, "exec")
    try:
        before = snapshot(cluster, op)
        perf = Perf(op.proc.pid, "exec")
        res = loadgen("capturejobs", *common_args(ns, CFG["mem_n"], prefix="x"),
                      "--shape", "single")
        time.sleep(CFG["settle"])
        top = perf.stop()
        after = snapshot(cluster, op)
        out = {"loadgen": res, "proc": op.stats(), "operator": op_delta(before, after),
               "perf_top": top,
               "cache_jobs": loadgen("cachesize", "--namespace", ns),
               "cache_pods": loadgen("cachesize", "--namespace", ns, "--pods"),
               "roles": attribute(before, after, "ours", res["client_requests"]["list"]),
               "cpu": delta(before["cpu"], after["cpu"]),
               "foreign": foreign_cores(before, after, own_pids(cluster, op))}
        log(f"exec: {CFG['mem_n']} in {res['wall_s']:.1f}s; {out['proc']}")
        return out
    finally:
        op.stop()
        if CFG["cleanup"]:
            drop_namespace(ns)


# ----------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------


def mark(ok):
    return "**met**" if ok else "**missed**"


def f1(x):
    return "–" if x is None else f"{x:.1f}"


def f2(x):
    return "–" if x is None else f"{x:.2f}"


def mib(kib):
    return kib / 1024.0


def med(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2


def merged(rs):
    """Roles, operator and client counters of several runs of one kind, summed."""
    roles, kcm, conf, lat, cpu = {}, {}, {}, {}, {}
    created = 0
    op = {"api_requests": {}, "reconciles": 0.0, "errors": {}, "duration_sum": 0.0,
          "duration_count": 0.0, "duration_buckets": {}}
    for r in rs:
        created += r["loadgen"]["created"]
        for role, reqs in r["roles"].items():
            d = roles.setdefault(role, {})
            for k, v in reqs.items():
                d[k] = d.get(k, 0) + v
        for src, dst in ((r.get("kcm_client", {}), kcm), (r.get("conflicts", {}), conf),
                         (r.get("latency", {}), lat), (r.get("cpu", {}), cpu)):
            for k, v in src.items():
                dst[k] = dst.get(k, 0) + v
        o = r.get("operator")
        if o:
            for k, v in o["api_requests"].items():
                op["api_requests"][k] = op["api_requests"].get(k, 0) + v
            for k, v in o["errors"].items():
                op["errors"][k] = op["errors"].get(k, 0) + v
            for k in ("reconciles", "duration_sum", "duration_count"):
                op[k] += o[k]
            for le, v in o["duration_buckets"]:
                op["duration_buckets"][le] = op["duration_buckets"].get(le, 0) + v
    return {"roles": roles, "kcm": kcm, "conflicts": conf, "latency": lat, "cpu": cpu,
            "created": created, "operator": op}


def report(R):
    L = []
    p = L.append
    n = CFG["n"]
    when = datetime.datetime.fromtimestamp(T_START).strftime("%Y-%m-%d %H:%M")
    runs = R.get("runs", {})
    p(f"# antenna-operator benchmark, {when}")
    p("")
    p(f"`make bench` with N={n}, REPEAT={CFG['repeat']} (ABBA order), "
      f"PARTS={','.join(CFG['parts'])}, AFTER={CFG['after']} (`sim.kwok.test/after` on every "
      f"Pod of every side), create concurrency {CFG['concurrency']}, operator flags "
      f"`{' '.join(CFG['op_args']) or '(defaults)'}`; {os.cpu_count()} cores, k8s v1.37.2 + "
      f"KWOK v0.8.0, NODES={CFG['nodes']}. Total run time {R.get('total_s', 0) / 60:.1f} min. "
      f"Figures are medians over the repeats; \"other load\" is the CPU (in cores) that "
      f"processes outside the benchmark used meanwhile.")
    b = R.get("build")
    if b:
        p("")
        p(f"Operator built {b['binary_built']} from commit {b['commit']}"
          + (f" plus uncommitted changes in {', '.join(b['dirty'])}" if b["dirty"] else "")
          + ".")
    p("")

    def srow(label, rs, pods_per_job):
        lg = [r["loadgen"] for r in rs]
        per = med([x["per_s"] for x in lg])
        each = ", ".join(f"{x['per_s']:.1f}" for x in lg)
        other = ", ".join(f"{r.get('foreign_cores', 0):.1f}" for r in rs)
        return (f"| {label} | {lg[0]['created']} | {lg[0]['created'] * pods_per_job} | "
                f"{med([x['wall_s'] for x in lg]):.1f} | **{per:.1f}** | "
                f"{per * pods_per_job:.1f} | {f2(med([x['latency_p50_s'] for x in lg]))} / "
                f"{f2(med([x['latency_p99_s'] for x in lg]))} | "
                f"{med([x['create_per_s'] for x in lg]):.0f} | {each} | {other} |")

    def per_s(key):
        return med([r["loadgen"]["per_s"] for r in runs.get(key, [])])

    if runs:
        p("## Throughput (wall time from the first create to the last object final)")
        p("")
        p("| run | jobs | Pods | wall s | jobs/s | Pods/s | job latency p50 / p99 s | "
          "creates/s | jobs/s of each run | other load |")
        p("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
        for shape, ours_l, theirs_l in (
            ("single", "CaptureJob `post_processing` (1 Pod)", "batch/v1 Job, completions 1"),
            ("multi", "CaptureJob `ml`, limit 100, batchSize 25, parallelism 4 "
                      "(discovery Pod, then 4 batch Pods)",
             "batch/v1 Job, completions 4, parallelism 4"),
        ):
            o, t = runs.get(f"ours-{shape}"), runs.get(f"theirs-{shape}")
            if o:
                p(srow(ours_l, o, o[0]["pods_per_job"]))
            if t:
                p(srow(theirs_l, t, t[0]["pods_per_job"]))
            if o and t:
                ratio = per_s(f"ours-{shape}") / per_s(f"theirs-{shape}")
                pairs = ", ".join(f"{a['loadgen']['per_s'] / b['loadgen']['per_s']:.2f}"
                                  for a, b in zip(o, t))
                p(f"| **ratio ours / Job controller** | | | | **{ratio:.2f}** | | | | {pairs} | "
                  f"target ≥ 1.0 (aim 1.5): {mark(ratio >= 1.0)} |")
        lim = runs.get("pods-limit")
        if lim:
            p(srow("the limit: bare Pods from a tight client, no controller", lim, 1))
            for key, label in (("ours-single", "**ours** (single-Pod jobs/s ÷ limit Pods/s)"),
                               ("theirs-single", "Job controller (single-Pod jobs/s ÷ limit)"),
                               ("ours-multi", "**ours**, multi (Pods/s ÷ limit)"),
                               ("theirs-multi", "Job controller, multi (Pods/s ÷ limit)")):
                if key in runs:
                    ppj = runs[key][0]["pods_per_job"]
                    frac = per_s(key) * ppj / per_s("pods-limit")
                    p(f"| fraction of the limit: {label} | | | | {frac:.2f} | | | | | |")
        p("")
        notes = []
        for k, rs in runs.items():
            for r in rs:
                lg = r["loadgen"]
                if lg["create_errors"] or lg["timed_out"] or lg["done"] < lg["created"]:
                    notes.append(f"{r['namespace']}: {lg['create_errors']} create errors, "
                                 f"{lg['created'] - lg['done']} not final, states "
                                 f"{lg['states']}, e.g. "
                                 f"{lg['first_errors'] or lg['not_done_examples']}")
                bad = {s_: c for s_, c in lg["states"].items()
                       if s_ not in ("SUCCESS", "final", "Succeeded")}
                if bad:
                    notes.append(f"{r['namespace']}: final states {lg['states']}")
        for x in notes:
            p(f"- {x}")
        if notes:
            p("")

        cols = [k for k in ("ours-single", "theirs-single", "ours-multi", "theirs-multi")
                if k in runs]
        head = {"ours-single": "ours, single", "theirs-single": "Job ctrl, single",
                "ours-multi": "ours, multi (5 Pods)",
                "theirs-multi": "Job ctrl, multi (4 Pods)"}
        M = {k: merged(runs[k]) for k in cols}
        if cols:
            p("## API cost per job: the controller's own requests (apiserver_request_total)")
            p("")
            p("| requests per job | " + " | ".join(head[k] for k in cols) + " |")
            p("| --- |" + " ---: |" * len(cols))
            cls = {k: by_class(M[k]["roles"].get("controller", {}), M[k]["created"])
                   for k in cols}
            ev = {k: events_writes(M[k]["roles"].get("controller", {}), M[k]["created"])
                  for k in cols}
            for c in CLASSES:
                p(f"| {c} | " + " | ".join(f"{cls[k][c]:.2f}" for k in cols) + " |")
            writes = {k: cls[k]["create"] + cls[k]["update/patch"] + cls[k]["delete"]
                      for k in cols}
            conf = {k: sum(v for key, v in M[k]["conflicts"].items()
                           if key in M[k]["roles"].get("controller", {})) / M[k]["created"]
                    for k in cols}
            p("| **writes** (create + update/patch + delete) | " +
              " | ".join(f"**{writes[k]:.2f}**" for k in cols) + " |")
            p("| of which Events | " + " | ".join(f"{ev[k]:.2f}" for k in cols) + " |")
            p("| of which refused 409 Conflict | " + " | ".join(f"{conf[k]:.2f}" for k in cols)
              + " |")
            p("| writes without Events | " +
              " | ".join(f"{writes[k] - ev[k]:.2f}" for k in cols) + " |")

            def cpu_row(label, comp):
                vals = []
                for k in cols:
                    c = comp(k)
                    vals.append(f"{M[k]['cpu'].get(c, 0) / M[k]['created'] * 1000:.1f}")
                p(f"| {label} | " + " | ".join(vals) + " |")

            cpu_row("kube-apiserver CPU ms per job (all clients)", lambda k: "kube-apiserver")
            cpu_row("etcd CPU ms per job", lambda k: "etcd")
            cpu_row("controller CPU ms per job (the operator; all of kube-controller-manager)",
                    lambda k: "antenna-operator" if k.startswith("ours") else
                    "kube-controller-manager")
            if "ours-single" in cols and "theirs-single" in cols:
                w_o, w_t = writes["ours-single"], writes["theirs-single"]
                p("")
                p(f"Target, at most 6 API writes per single-Pod job and fewer than the Job "
                  f"controller: {w_o:.2f} vs {w_t:.2f}: ≤ 6 {mark(w_o <= 6.0)}, fewer "
                  f"{mark(w_o < w_t)}.")
            p("")
            p("Cross-check from the clients' own counters, per job: the operator's "
              "`antenna_api_requests_total`; kube-controller-manager's "
              "`rest_client_requests_total` by HTTP method (all its controllers).")
            p("")
            for k in cols:
                per = M[k]["created"]
                if k.startswith("ours"):
                    od = M[k]["operator"]
                    items = ", ".join(f"{a} {v / per:.2f}"
                                      for a, v in sorted(od["api_requests"].items()))
                    p(f"- {head[k]}: {items}")
                else:
                    items = ", ".join(f"{m} {v / per:.2f}" for m, v in sorted(M[k]["kcm"].items()))
                    p(f"- {head[k]}: kube-controller-manager {items}")
            p("")
            p("### Profile: each request of the controllers, its conflicts and server latency")
            p("")
            p("| run | request | per job | 409 per job | server mean ms |")
            p("| --- | --- | ---: | ---: | ---: |")
            for k in cols:
                per = M[k]["created"]
                for key, v in sorted(M[k]["roles"].get("controller", {}).items(),
                                     key=lambda x: -x[1]):
                    if v / per < 0.05:
                        continue
                    verb, g, res, sub = key.split("|")
                    ssum = M[k]["latency"].get(key + "|sum", 0)
                    scount = M[k]["latency"].get(key + "|count", 0)
                    mean = f"{ssum / scount * 1000:.1f}" if scount else "–"
                    cf = M[k]["conflicts"].get(key, 0) / per
                    p(f"| {head[k]} | {verb} {res}{'/' + sub if sub else ''} | {v / per:.2f} | "
                      f"{cf:.2f} | {mean} |")
            p("")
            for k in cols:
                if not k.startswith("ours"):
                    continue
                od = M[k]["operator"]
                per = M[k]["created"]
                total = od["duration_count"] or 1
                b = sorted((float(le) if le != "+Inf" else float("inf"), v)
                           for le, v in od["duration_buckets"].items())
                q = []
                for pct in (50, 90, 99):
                    for le, v in b:
                        if v >= total * pct / 100:
                            q.append(f"p{pct} ≤ {le * 1000:.0f} ms")
                            break
                mean = od["duration_sum"] / total * 1000
                p(f"- {head[k]}: {od['reconciles'] / per:.1f} reconciles per job, reconcile "
                  f"duration mean {mean:.0f} ms ({', '.join(q)}), reconcile errors "
                  f"{ {e: round(v / per, 2) for e, v in od['errors'].items()} or 'none'} "
                  f"per job.")
            for k in cols:
                for r in runs[k]:
                    if r.get("perf_top"):
                        p("")
                        p(f"perf, operator during {r['namespace']} (self time, top symbols):")
                        p("")
                        p("```")
                        for line in r["perf_top"]:
                            p(line[:150])
                        p("```")
            p("")
            p("<details><summary>Every request of the first run of each kind, by client "
              "(apiserver_request_total deltas)</summary>")
            p("")
            for k, rs in runs.items():
                r = rs[0]
                per = r["loadgen"]["created"]
                p(f"**{r['namespace']}** ({per} objects, window {r['window_s']:.0f} s)")
                p("")
                p("| client | verb | resource | count | per object |")
                p("| --- | --- | --- | ---: | ---: |")
                for role, reqs in r["roles"].items():
                    for key, v in sorted(reqs.items(), key=lambda x: (x[0].split("|")[2], x[0])):
                        verb, g, res, sub = key.split("|")
                        rname = (f"{g}/" if g else "") + res + (f"/{sub}" if sub else "")
                        p(f"| {role} | {verb} | {rname} | {v:.0f} | {v / per:.2f} |")
                p("")
            p("</details>")
            p("")

    mem = R.get("memory")
    if mem:
        if "facade" in mem:
            p(f"## Facade ({CFG['mem_n']} jobs in the cache; {CFG['connections']} keep-alive "
              f"connections, closed loop, {CFG['duration']} s after 1 s warm-up, loopback; "
              f"the generator uses 1 thread)")
            p("")
            p("| request | req/s | p50 ms | p90 ms | p99 ms | max ms | bytes | errors | "
              "operator CPU cores | other load | target |")
            p("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
            for name in ("list", "detail"):
                f = mem["facade"].get(name, {})
                label = "GET /api/v2/jobs/?limit=25" if name == "list" else \
                    "GET /api/v2/jobs/{id}/ (100 ids in turn)"
                if not f.get("served"):
                    p(f"| {label} | **not served** (HTTP {f.get('status')}) | | | | | | | | | "
                      f"facade not wired yet |")
                    continue
                tgt = ""
                if name == "list":
                    tgt = (f"p99 < 10 ms {mark(f['p99_ms'] < 10)}, ≥ 5,000 req/s "
                           f"{mark(f['req_per_s'] >= 5000)}")
                p(f"| {label} | **{f['req_per_s']:.0f}** | {f2(f['p50_ms'])} | "
                  f"{f2(f['p90_ms'])} | **{f2(f['p99_ms'])}** | {f2(f['max_ms'])} | "
                  f"{f['bytes_per_response']} | {f['non_2xx'] + f['errors']} | "
                  f"{f['operator_cpu_s'] / (f['duration_s'] + 1):.2f} | "
                  f"{f.get('foreign_cores', 0):.2f} | {tgt} |")
            for name in ("list", "detail"):
                f = mem["facade"].get(name, {})
                if f.get("perf_top"):
                    p("")
                    p(f"perf, operator during the {name} load (self time, top symbols):")
                    p("")
                    p("```")
                    for line in f["perf_top"]:
                        p(line[:150])
                    p("```")
            p("")
        p("## Operator memory and CPU (`/proc/<pid>`: VmHWM, VmRSS, utime + stime)")
        p("")
        p("| operator process | jobs | peak RSS MiB | RSS MiB | CPU s | target |")
        p("| --- | ---: | ---: | ---: | ---: | --- |")
        for k in ("ours-single", "ours-multi"):
            for r in runs.get(k, []):
                s_ = r["operator_proc"]
                p(f"| `controller` after {r['namespace']} (the jobs ran) | "
                  f"{r['loadgen']['created']} | {mib(s_['VmHWM']):.1f} | {mib(s_['VmRSS']):.1f} "
                  f"| {s_['cpu_s']:.1f} | |")
        s0 = mem["idle0"]
        p(f"| `run` (controller + facade) started, no job | 0 | {mib(s0['VmHWM']):.1f} | "
          f"{mib(s0['VmRSS']):.1f} | {s0['cpu_s']:.1f} | |")
        ss, sb = mem["small"]["proc"], mem["big"]["proc"]
        p(f"| `run`, idle jobs (`start: false`: id label + CREATED status written) | "
          f"{mem['small']['jobs']} | {mib(ss['VmHWM']):.1f} | {mib(ss['VmRSS']):.1f} | "
          f"{ss['cpu_s']:.1f} | |")
        p(f"| `run`, idle jobs | {mem['big']['jobs']} | {mib(sb['VmHWM']):.1f} | "
          f"{mib(sb['VmRSS']):.1f} | {sb['cpu_s']:.1f} | < 150 MiB "
          f"{mark(mib(sb['VmHWM']) < 150)} |")
        if "after_facade" in mem:
            sf = mem["after_facade"]
            p(f"| `run`, idle jobs, after the facade load | {mem['big']['jobs']} | "
              f"{mib(sf['VmHWM']):.1f} | {mib(sf['VmRSS']):.1f} | {sf['cpu_s']:.1f} | < 150 MiB "
              f"{mark(mib(sf['VmHWM']) < 150)} |")
        ex = R.get("exec")
        if ex:
            s_ = ex["proc"]
            p(f"| `run`, single-Pod jobs that ran | {ex['loadgen']['created']} | "
              f"{mib(s_['VmHWM']):.1f} | {mib(s_['VmRSS']):.1f} | {s_['cpu_s']:.1f} | < 150 MiB "
              f"{mark(mib(s_['VmHWM']) < 150)} |")
        p("")
        nb, ns_ = mem["big"]["jobs"], mem["small"]["jobs"]
        cs, cb = mem["small"].get("cache", {}), mem["big"].get("cache", {})
        rss_s, rss_b = ss["VmRSS"] * 1024, sb["VmRSS"] * 1024
        grow = (rss_b - rss_s) / (nb - ns_)
        cpu_s_small = (ss["cpu_s"] - s0["cpu_s"]) / ns_ * 1000
        cpu_s_big = (sb["cpu_s"] - ss["cpu_s"]) / (nb - ns_) * 1000
        p(f"- RSS per job from {ns_} to {nb} idle jobs: **{grow / 1024:.1f} KiB** "
          f"(RSS {mib(ss['VmRSS']):.1f} → {mib(sb['VmRSS']):.1f} MiB for "
          f"{nb / ns_:.0f}× the jobs).")
        if cb.get("objects"):
            obj = cb["heap_bytes_per_object"]
            over_s = rss_s - cs.get("heap_bytes", 0)
            over_b = rss_b - cb["heap_bytes"]
            p(f"- The cached objects themselves (a slimmed CaptureJob in a reflector store, "
              f"measured with a counting allocator by `antenna-bench cachesize`): "
              f"{obj / 1024:.1f} KiB per job on the heap ({cb['json_bytes_per_object'] / 1024:.1f}"
              f" KiB of JSON as stored, with managedFields).")
            p(f"- RSS beyond the cached objects: {over_s / 2**20:.1f} MiB at {ns_} jobs, "
              f"{over_b / 2**20:.1f} MiB at {nb}: ×{over_b / max(1, over_s):.1f} for ×"
              f"{nb / ns_:.0f} jobs, {(over_b - over_s) / (nb - ns_) / 1024:.1f} KiB per extra "
              f"job. Target, less than linear growth beyond the cached objects: "
              f"{mark(over_b / max(1, over_s) < nb / ns_)}.")
        p(f"- Operator CPU per idle job (label patch + status write): {cpu_s_small:.2f} ms for "
          f"the first {ns_}, {cpu_s_big:.2f} ms for the next {nb - ns_}.")
        ob = mem["big"].get("operator")
        if ob:
            per = nb - ns_
            req = ", ".join(f"{k} {v / per:.2f}" for k, v in sorted(ob["api_requests"].items()))
            errs = {k: round(v / per, 2) for k, v in ob["errors"].items()}
            p(f"- Operator work per idle job (the last {per}): {ob['reconciles'] / per:.1f} "
              f"reconciles, requests {req}, reconcile errors {errs or 'none'}; apiserver CPU "
              f"{mem['big']['cpu'].get('kube-apiserver', 0) / per * 1000:.1f} ms per job.")
        p(f"- Creating and processing the {nb} idle jobs took "
          f"{mem['big']['create_and_process_s']:.0f} s (creates at "
          f"{mem['big']['loadgen']['create_per_s']:.0f}/s; the operator done with the last "
          f"{nb - ns_} after {mem['big']['loadgen']['wall_s']:.0f} s, other load "
          f"{mem['big'].get('foreign', [0])[0]:.1f} cores).")
        p("")
        if mem["big"].get("perf_top"):
            p("perf, operator while it processed the last idle jobs (self time, top symbols):")
            p("")
            p("```")
            for line in mem["big"]["perf_top"]:
                p(line[:150])
            p("```")
            p("")
    ex = R.get("exec")
    if ex:
        lg = ex["loadgen"]
        n_ = lg["created"]
        s_ = ex["proc"]
        p(f"## Executed at scale: {n_} single-Pod CaptureJobs that run (`run`)")
        p("")
        p(f"- {lg['wall_s']:.0f} s = **{lg['per_s']:.1f} jobs/s**, job latency p50 "
          f"{f1(lg['latency_p50_s'])} s, p99 {f1(lg['latency_p99_s'])} s; states "
          f"{lg['states']}; creates at {lg['create_per_s']:.0f}/s.")
        p(f"- Operator peak RSS **{mib(s_['VmHWM']):.1f} MiB** (target < 150 MiB: "
          f"{mark(mib(s_['VmHWM']) < 150)}), CPU {s_['cpu_s']:.0f} s = "
          f"{s_['cpu_s'] / n_ * 1000:.1f} ms per job.")
        cj, cp = ex.get("cache_jobs"), ex.get("cache_pods")
        if cj and cp:
            p(f"- What the caches hold at the end (counting allocator): {cj['objects']} jobs × "
              f"{cj['heap_bytes_per_object'] / 1024:.1f} KiB = {cj['heap_bytes'] / 2**20:.1f} MiB, "
              f"{cp['objects']} Pods × {cp['heap_bytes_per_object'] / 1024:.1f} KiB = "
              f"{cp['heap_bytes'] / 2**20:.1f} MiB; the rest of the RSS, "
              f"{(s_['VmRSS'] * 1024 - cj['heap_bytes'] - cp['heap_bytes']) / 2**20:.1f} MiB, is "
              f"the process itself, allocator slack and other state.")
        od = ex["operator"]
        req = ", ".join(f"{k} {v / n_:.2f}" for k, v in sorted(od["api_requests"].items()))
        errs = {k: round(v / n_, 2) for k, v in od["errors"].items()}
        mean = od["duration_sum"] / (od["duration_count"] or 1) * 1000
        cpu = ", ".join(f"{k} {v / n_ * 1000:.1f}" for k, v in sorted(ex["cpu"].items()))
        p(f"- Per job: {od['reconciles'] / n_:.1f} reconciles (mean {mean:.0f} ms), requests "
          f"{req}; reconcile errors {errs or 'none'}; CPU ms per job: {cpu}.")
        if ex.get("perf_top"):
            p("")
            p("perf, operator during the run (self time, top symbols):")
            p("")
            p("```")
            for line in ex["perf_top"]:
                p(line[:150])
            p("```")
        p("")
    return "\n".join(L) + "\n"


# ----------------------------------------------------------------------------------------


def build_info():
    """The commit the operator was built from and the files that differed from it."""
    def git(*a):
        return subprocess.run(["git", "-C", REPO, *a], capture_output=True, text=True).stdout
    head = git("rev-parse", "--short", "HEAD").strip()
    dirty = [line[3:] for line in git("status", "--porcelain", "--", "src", "Cargo.toml",
                                       "Cargo.lock").splitlines()]
    built = os.path.getmtime(OPERATOR) if os.path.exists(OPERATOR) else 0
    return {"commit": head, "dirty": dirty,
            "binary_built": datetime.datetime.fromtimestamp(built).strftime("%Y-%m-%d %H:%M")}


def main():
    if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help"):
        print(usage())
        return 0
    if len(sys.argv) > 2 and sys.argv[1] == "--report":
        # Re-render the report of an earlier run from its raw.json.
        with open(sys.argv[2]) as f:
            R = json.load(f)
        CFG.update(R["config"])
        global T_START
        T_START = R.get("start", T_START)
        print(report(R))
        return 0
    for p_ in CFG["parts"]:
        if p_ not in ALL_PARTS + ["exec"]:
            print(f"unknown part {p_}\n{usage()}", file=sys.stderr)
            return 2
    for b in (OPERATOR, LOADGEN):
        if not os.path.exists(b):
            print(f"{b} missing: build with `make bench` (it builds both)", file=sys.stderr)
            return 2
    os.makedirs(CFG["work"], exist_ok=True)
    cluster = Cluster(CFG["devcluster_dir"])
    R = {"config": CFG, "runs": {}, "start": T_START, "build": build_info()}
    ok = False
    try:
        cluster.up()
        kubectl("apply", "--server-side", "--force-conflicts", "-f", os.path.join(REPO, "crds"))
        t = time.time()
        while kubectl("wait", "--for=condition=Established", "--timeout=10s",
                      "crd/capturejobs.antenna.insectai.org", check=False).returncode != 0:
            if time.time() - t > 60:
                raise RuntimeError("the CaptureJob CRD is not Established after 60 s")
            time.sleep(0.5)
        if kubectl("get", "namespace", "bench-system", check=False).returncode != 0:
            kubectl("create", "namespace", "bench-system")
        n = CFG["n"]
        parts = CFG["parts"]
        first = ["ours", "theirs"] if CFG["order"] == "ours-first" else ["theirs", "ours"]
        for shape, count in (("single", n), ("multi", max(1, n // 4))):
            if shape not in parts:
                continue
            for i in range(CFG["repeat"]):
                # ABBA: alternate which side goes first, so that a drift in the machine's
                # load does not favour one side.
                order = first if i % 2 == 0 else first[::-1]
                for kind in order:
                    R["runs"].setdefault(f"{kind}-{shape}", []).append(
                        run_side(cluster, kind, shape, count, str(i + 1)))
        if "limit" in parts:
            R["runs"]["pods-limit"] = [run_side(cluster, "pods", "limit", n, "1")]
        if "memory" in parts or "facade" in parts:
            R["memory"] = memory_and_facade(cluster, parts)
        if "exec" in parts:
            R["exec"] = exec_at_scale(cluster)
        ok = True
    finally:
        R["total_s"] = time.time() - T_START
        raw = os.path.join(CFG["work"], f"raw-{STAMP}.json")
        with open(raw, "w") as f:
            json.dump(R, f, indent=1, default=lambda o: str(o))
        if not CFG["keep_cluster"]:
            cluster.down()
            if os.path.isdir(cluster.dir):
                shutil.rmtree(cluster.dir, ignore_errors=True)
        log(f"raw data: {raw}; operator logs: {CFG['work']}/operator-*.log")
    if ok:
        md = report(R)
        os.makedirs(os.path.join(REPO, "bench", "results"), exist_ok=True)
        # The full default run is bench/results/<date>.md; other runs get a suffix.
        name = datetime.date.fromtimestamp(T_START).isoformat()
        if CFG["parts"] != ALL_PARTS:
            name += "-" + "-".join(CFG["parts"])
        if CFG["n"] != 1000 or CFG["mem_n"] != 10000:
            name += f"-n{CFG['n']}-mem{CFG['mem_n']}"
        path = os.path.join(REPO, "bench", "results", name + ".md")
        with open(path, "w") as f:
            f.write(md)
        print(md)
        log(f"written to {os.path.relpath(path, REPO)} in {R['total_s'] / 60:.1f} min")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
