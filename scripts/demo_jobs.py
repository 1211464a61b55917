#!/usr/bin/env python3
"""Live view, final table and facade check of the demo (scripts/demo.sh). Stdlib only.

    demo_jobs.py watch  --namespace NS --expect NAME=STATE[/REASON] ... [--timeout S]
        Polls the CaptureJobs of NS (kubectl get -o json, every --interval seconds) and
        draws one progress bar per job: id, name, state, progress %, newest log line.
        On a terminal the bars are redrawn in place; otherwise a plain line is printed
        whenever a job changes. When every expected job has reached a final state (or at
        the timeout) it prints the final table and exits 0 if every job ended as
        expected, 1 otherwise. --summary FILE writes the final rows as JSON.

    demo_jobs.py facade --url URL [--seed FILE] [--expect-status S] [--expect-stages N]
        GETs one job from the REST facade, prints its JSON and compares its top-level
        shape with the old system's record (--seed). Exits 0 when it matches the
        expectations, 1 when it does not, 3 when the facade does not serve the route yet.

Everything above `main` is pure (no I/O) and tested by scripts/test_demo_jobs.py.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import datetime

FINAL_STATES = ("SUCCESS", "FAILURE", "REVOKED")
# Condition type that carries the reason of each final state (src/controller/plan.rs, mod cond).
FINAL_CONDITION = {"SUCCESS": "Complete", "FAILURE": "Failed", "REVOKED": "Canceled"}
STATE_COLOR = {
    "SUCCESS": "32",  # green
    "FAILURE": "31",  # red
    "REVOKED": "35",  # magenta
    "STARTED": "36",  # cyan
    "PENDING": "33",  # yellow
    "RETRY": "33",
    "CANCELING": "35",
}
ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# "[2026-12-03 13:14:57] INFO message" -> "13:14:57 INFO message"
LOG_PREFIX_RE = re.compile(r"^\[\d{4}-\d{2}-\d{2} (\d{2}:\d{2}:\d{2})\] ")


# --------------------------------------------------------------------------------------
# Pure: from CaptureJob objects to rows
# --------------------------------------------------------------------------------------


def parse_time(value):
    """RFC 3339 timestamp (as the API server writes it) -> aware datetime, or None."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def job_reason(status):
    """The reason worth showing: that of the final state's condition, else the reason of
    the first condition that is False (e.g. PodsScheduled=False Unschedulable) or of a
    Queued=True condition; "" when there is none."""
    state = status.get("state") or ""
    conditions = status.get("conditions") or []
    wanted = FINAL_CONDITION.get(state)
    if wanted:
        for c in conditions:
            if c.get("type") == wanted and c.get("status") == "True":
                return c.get("reason") or ""
    for c in conditions:
        if c.get("status") == "False" and c.get("type") not in ("Queued",):
            return c.get("reason") or ""
        if c.get("type") == "Queued" and c.get("status") == "True":
            return c.get("reason") or ""
    return ""


def job_row(obj):
    """One CaptureJob object (as kubectl -o json gives it) -> a flat dict for display."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    summary = (status.get("progress") or {}).get("summary") or {}
    stdout = (status.get("logs") or {}).get("stdout") or []
    created = parse_time(meta.get("creationTimestamp"))
    started = parse_time(status.get("startedAt"))
    finished = parse_time(status.get("finishedAt"))
    duration = None
    if finished is not None and (started or created) is not None:
        duration = max(0.0, (finished - (started or created)).total_seconds())
    try:
        progress = float(summary.get("progress") or 0.0)
    except (TypeError, ValueError):
        progress = 0.0
    return {
        "object": meta.get("name", ""),
        "id": status.get("id"),
        "name": spec.get("name", ""),
        "type": spec.get("jobType", ""),
        # A job the controller has not seen yet has no status: show it as "-".
        "state": status.get("state") or "-",
        "progress": min(1.0, max(0.0, progress)),
        "stages": len((status.get("progress") or {}).get("stages") or []),
        "reason": job_reason(status),
        "log": stdout[0] if stdout else "",
        "started": bool(started),
        "duration": duration,
    }


def rows_from_list(doc):
    """A kubectl `-o json` List -> rows sorted by id (jobs without an id last, by name)."""
    rows = [job_row(o) for o in doc.get("items") or []]
    rows.sort(key=lambda r: (r["id"] is None, r["id"] or 0, r["object"]))
    return rows


def is_final(row):
    return row["state"] in FINAL_STATES


def parse_expect(spec):
    """"name=STATE" or "name=STATE/Reason" -> (name, state, reason or None)."""
    name, sep, want = spec.partition("=")
    if not sep or not name or not want:
        raise ValueError(f"--expect wants NAME=STATE[/REASON], got {spec!r}")
    state, _, reason = want.partition("/")
    return name, state.upper(), (reason or None)


def check_expectations(rows, expected):
    """expected: {object name: (state, reason or None)} -> list of problems ("" none)."""
    by_name = {r["object"]: r for r in rows}
    problems = []
    for name, (state, reason) in expected.items():
        row = by_name.get(name)
        if row is None:
            problems.append(f"{name}: not found")
            continue
        if not is_final(row):
            problems.append(f"{name}: still {row['state']} (not finished), expected {state}")
        elif row["state"] != state:
            problems.append(f"{name}: ended {row['state']}, expected {state}")
        elif reason is not None and row["reason"] != reason:
            problems.append(f"{name}: reason {row['reason'] or '(none)'}, expected {reason}")
    return problems


def all_done(rows, expected):
    """True when every expected job exists and has reached a final state."""
    by_name = {r["object"]: r for r in rows}
    return all(n in by_name and is_final(by_name[n]) for n in expected)


# --------------------------------------------------------------------------------------
# Pure: rendering
# --------------------------------------------------------------------------------------


def visible_len(text):
    return len(ANSI_RE.sub("", text))


def fit(text, width):
    """Cut `text` to `width` visible characters (ending in "…" when cut); keeps ANSI codes
    and closes them with a reset when anything was cut."""
    if width <= 0:
        return ""
    if visible_len(text) <= width:
        return text
    out, seen, i = [], 0, 0
    while i < len(text) and seen < width - 1:
        m = ANSI_RE.match(text, i)
        if m:
            out.append(m.group(0))
            i = m.end()
            continue
        out.append(text[i])
        seen += 1
        i += 1
    has_ansi = ANSI_RE.search(text) is not None
    return "".join(out) + "…" + ("\x1b[0m" if has_ansi else "")


def bar(fraction, width=20, unicode=True):
    """A progress bar of `width` cells for fraction 0..1."""
    fraction = min(1.0, max(0.0, fraction))
    full = int(round(fraction * width))
    fill, empty = ("█", "░") if unicode else ("#", ".")
    return fill * full + empty * (width - full)


def short_log(line):
    return LOG_PREFIX_RE.sub(r"\1 ", line)


def paint(text, state, color):
    code = STATE_COLOR.get(state)
    if not color or not code:
        return text
    return f"\x1b[{code}m{text}\x1b[0m"


def format_id(value):
    return "-" if value is None else f"#{value}"


def render_line(row, width=120, unicode=True, color=False, name_width=34):
    """One job as one line: id, name, state, bar, percent, newest log line."""
    name = row["name"]
    if len(name) > name_width:
        name = name[: name_width - 1] + "…"
    state = row["state"]
    head = (
        f"{format_id(row['id']):>4}  {name:<{name_width}}  "
        f"{paint(f'{state:<9}', state, color)} "
        f"{bar(row['progress'], 20, unicode)} {row['progress'] * 100:3.0f}%"
    )
    tail = short_log(row["log"])
    if row["reason"] and not is_final(row):
        tail = f"({row['reason']}) {tail}"
    return fit(f"{head}  {tail}" if tail else head, width)


def render_frame(rows, elapsed, width=120, unicode=True, color=False, source="kubectl"):
    """The live view: a header line and one line per job."""
    done = sum(1 for r in rows if is_final(r))
    header = f"{len(rows)} jobs, {done} finished · {elapsed:5.1f} s · {source}"
    lines = [fit(header, width)]
    lines += [render_line(r, width, unicode, color) for r in rows]
    if not rows:
        lines.append(fit("  (no CaptureJobs yet)", width))
    return lines


def change_key(row):
    """What makes a plain (non-TTY) line worth printing again."""
    return (row["id"], row["state"], round(row["progress"] * 100), row["log"], row["reason"])


def format_duration(seconds):
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{int(seconds // 60)} min {int(seconds % 60)} s"


TABLE_COLUMNS = ("id", "name", "type", "state", "progress", "duration", "reason")


def final_table(rows):
    """The final table as lines of text (plain, aligned columns)."""
    body = []
    for r in rows:
        body.append(
            (
                format_id(r["id"]),
                r["name"],
                r["type"],
                r["state"],
                f"{r['progress'] * 100:.0f}%",
                format_duration(r["duration"]),
                r["reason"] or "-",
            )
        )
    head = tuple(c.upper() for c in TABLE_COLUMNS)
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return [fmt(head)] + [fmt(b) for b in body]


# Pure: the facade's JSON against the old system's record


def shape_diff(record, seed):
    """Top-level keys missing from `record` and keys it has that `seed` has not."""
    return sorted(set(seed) - set(record)), sorted(set(record) - set(seed))


def check_facade_job(record, expect_status=None, expect_stages=None):
    """Problems with one /api/v2/jobs/<id>/ record ("" none)."""
    problems = []
    status = record.get("status")
    summary = ((record.get("progress") or {}).get("summary") or {}).get("status")
    stages = (record.get("progress") or {}).get("stages") or []
    if expect_status and status != expect_status:
        problems.append(f"status is {status}, expected {expect_status}")
    if expect_status and summary != expect_status:
        problems.append(f"progress.summary.status is {summary}, expected {expect_status}")
    if expect_stages is not None and len(stages) != expect_stages:
        problems.append(f"{len(stages)} stages, expected {expect_stages}")
    keys = [s.get("key") for s in stages]
    if len(keys) != len(set(keys)):
        problems.append(f"duplicate stage keys: {keys}")
    return problems


def compare_list(listing, rows):
    """The facade's list envelope against the CaptureJobs' rows: problems ("" none)."""
    results = listing.get("results")
    if not isinstance(results, list):
        return ["the list has no results array"]
    by_id = {r.get("id"): r for r in results}
    problems = []
    for row in rows:
        if row["id"] is None:
            continue
        item = by_id.get(row["id"])
        if item is None:
            problems.append(f"job {row['id']} ({row['object']}) is not in the list")
        elif item.get("status") != row["state"]:
            problems.append(f"job {row['id']}: the list says {item.get('status')}, the CaptureJob {row['state']}")
    if listing.get("count") is not None and listing["count"] < len(rows):
        problems.append(f"count {listing['count']} < {len(rows)} CaptureJobs")
    return problems


# --------------------------------------------------------------------------------------
# I/O
# --------------------------------------------------------------------------------------


JOBS_PATH = "/apis/antenna.insectai.org/v1alpha1/namespaces/{ns}/capturejobs"


class KubectlSource:
    """Lists CaptureJobs with `kubectl get -o json` (a process per poll: slow but general)."""

    def __init__(self, namespace, kubectl):
        self.namespace, self.kubectl = namespace, kubectl
        self.label = f"kubectl get capturejobs -n {namespace}"

    def rows(self):
        out = subprocess.run(
            [self.kubectl, "get", "capturejobs.antenna.insectai.org", "-n", self.namespace, "-o", "json"],
            capture_output=True,
            text=True,
            timeout=15,
        )
        if out.returncode != 0:
            raise RuntimeError(out.stderr.strip() or f"kubectl exited {out.returncode}")
        return rows_from_list(json.loads(out.stdout))


class ApiSource:
    """Lists CaptureJobs with one HTTPS GET to the API server, using the current kubeconfig
    context (`kubectl config view --raw --minify -o json`): CA, and a client certificate or
    a bearer token. Raises ValueError for anything else (exec plugins...): use kubectl."""

    def __init__(self, namespace, kubectl):
        out = subprocess.run(
            [kubectl, "config", "view", "--raw", "--minify", "-o", "json"],
            capture_output=True,
            text=True,
            timeout=15,
            check=True,
        )
        cfg = json.loads(out.stdout)
        cluster = cfg["clusters"][0]["cluster"]
        user = cfg["users"][0].get("user") or {}
        self.url = cluster["server"].rstrip("/") + JOBS_PATH.format(ns=namespace)
        self.label = f"GET {JOBS_PATH.format(ns=namespace)}"
        self.headers = {"Accept": "application/json"}
        if "certificate-authority-data" in cluster:
            ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
            self.ctx = ssl.create_default_context(cadata=ca)
        else:
            self.ctx = ssl.create_default_context(cafile=cluster.get("certificate-authority"))
        if "token" in user:
            self.headers["Authorization"] = f"Bearer {user['token']}"
        elif "client-certificate-data" in user and "client-key-data" in user:
            # ssl wants files: write them private, load them, remove them at once.
            with tempfile.TemporaryDirectory(prefix="demo-jobs-") as d:
                cert, key = os.path.join(d, "c"), os.path.join(d, "k")
                for path, field in ((cert, "client-certificate-data"), (key, "client-key-data")):
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
                    with os.fdopen(fd, "wb") as f:
                        f.write(base64.b64decode(user[field]))
                self.ctx.load_cert_chain(cert, key)
        elif "client-certificate" in user and "client-key" in user:
            self.ctx.load_cert_chain(user["client-certificate"], user["client-key"])
        else:
            raise ValueError("the kubeconfig user has neither a token nor a client certificate")

    def rows(self):
        req = urllib.request.Request(self.url, headers=self.headers)
        try:
            with urllib.request.urlopen(req, timeout=10, context=self.ctx) as resp:
                return rows_from_list(json.load(resp))
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError) as e:
            raise RuntimeError(str(e)) from None


def job_source(namespace, kubectl):
    try:
        return ApiSource(namespace, kubectl)
    except (ValueError, KeyError, IndexError, OSError, ssl.SSLError, subprocess.SubprocessError):
        return KubectlSource(namespace, kubectl)


class Screen:
    """Redraws a block of lines in place (terminal) or prints a line per change (plain)."""

    def __init__(self, stream, unicode=True):
        self.out = stream
        self.unicode = unicode
        self.drawn = 0  # lines of the last frame (terminal)
        self.last = {}  # object name -> change_key (plain)

    def frame(self, lines):
        """Terminal: replace the last frame with `lines`."""
        buf = [f"\x1b[{self.drawn}F"] if self.drawn else []  # to the first line drawn
        buf += [f"\x1b[2K{line}\n" for line in lines]
        extra = self.drawn - len(lines)
        if extra > 0:  # the last frame was longer: blank its tail, come back up
            buf += ["\x1b[2K\n"] * extra + [f"\x1b[{extra}F"]
        self.out.write("".join(buf))
        self.out.flush()
        self.drawn = len(lines)

    def changes(self, rows, elapsed):
        """Plain: one line per job whose state, progress, reason or newest log changed."""
        for row in rows:
            key = change_key(row)
            if self.last.get(row["object"]) != key:
                self.last[row["object"]] = key
                self.out.write(f"[{elapsed:6.1f}s] {render_line(row, 400, self.unicode)}\n")
        self.out.flush()


def cmd_watch(args):
    expected = dict((n, (s, r)) for n, s, r in map(parse_expect, args.expect))
    tty = sys.stdout.isatty() and os.environ.get("TERM") != "dumb"
    color = tty and "NO_COLOR" not in os.environ
    unicode = (sys.stdout.encoding or "").lower().replace("-", "") == "utf8"
    screen = Screen(sys.stdout, unicode)
    source = job_source(args.namespace, args.kubectl)
    t0 = time.monotonic()
    rows, error = [], ""
    if tty:
        sys.stdout.write("\x1b[?25l")  # hide the cursor while redrawing
    try:
        while True:
            polled = time.monotonic()
            try:
                rows, error = source.rows(), ""
            except (RuntimeError, subprocess.SubprocessError, ValueError) as e:
                error = str(e).splitlines()[0] if str(e) else type(e).__name__
            elapsed = time.monotonic() - t0
            label = f"{source.label} every {args.interval:g} s"
            if error:
                label += f" · last poll failed: {error}"
            if tty:
                width = max(40, shutil.get_terminal_size((120, 24)).columns - 1)
                screen.frame(render_frame(rows, elapsed, width, unicode, color, label))
            else:
                screen.changes(rows, elapsed)
                if error:
                    print(f"[{elapsed:6.1f}s] poll failed: {error}", flush=True)
            if rows and all_done(rows, expected):
                break
            if elapsed > args.timeout:
                print(f"timed out after {args.timeout:g} s with jobs still running", flush=True)
                break
            time.sleep(max(0.0, args.interval - (time.monotonic() - polled)))
    finally:
        if tty:
            sys.stdout.write("\x1b[?25h")
            sys.stdout.flush()
    print()
    print("\n".join(final_table(rows)))
    if args.summary:
        with open(args.summary, "w") as f:
            json.dump(rows, f, indent=1)
    problems = check_expectations(rows, expected)
    print()
    if problems:
        for p in problems:
            print(f"UNEXPECTED: {p}")
        return 1
    print(f"All {len(expected)} jobs ended as expected.")
    return 0


class Pending(Exception):
    """The facade does not serve the route (404)."""


def get_json(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = resp.read().decode()
    except urllib.error.HTTPError as e:
        if e.code == 404:
            raise Pending(f"{url} answers 404: the REST facade does not serve it yet") from None
        raise RuntimeError(f"GET {url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise RuntimeError(f"GET {url}: {e}") from None
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        raise RuntimeError(f"GET {url} did not answer JSON: {body[:200]!r}") from None


def cmd_facade(args):
    try:
        record = get_json(args.url)
        listing = get_json(args.list_url) if args.list_url else None
    except Pending as e:
        print(f"PENDING: {e}.")
        return 3
    except RuntimeError as e:
        print(f"FAILED: {e}")
        return 1
    print(json.dumps(record, indent=2))
    problems = check_facade_job(record, args.expect_status, args.expect_stages)
    if listing is not None and args.summary:
        with open(args.summary) as f:
            rows = json.load(f)
        trouble = compare_list(listing, rows)
        print()
        print(
            f"GET {args.list_url}: count {listing.get('count')}; "
            + ("every CaptureJob is listed with its state." if not trouble else "")
        )
        problems += trouble
    if args.seed and os.path.exists(args.seed):
        with open(args.seed) as f:
            seed = json.load(f)
        missing, extra = shape_diff(record, seed)
        print()
        print(
            f"Shape against the old record {seed.get('id')} ({os.path.relpath(args.seed)}): "
            f"{len(seed)} top-level keys there, {len(record)} here"
            + ("; same keys." if not (missing or extra) else "")
        )
        if missing:
            print(f"  missing here: {', '.join(missing)}")
            problems.append(f"keys of the old record missing: {', '.join(missing)}")
        if extra:
            print(f"  only here:    {', '.join(extra)}")
        old = seed.get("progress", {}).get("stages", [])
        new = (record.get("progress") or {}).get("stages", [])
        print(
            f"  old: {seed.get('status')}, {len(old)} stages ({', '.join(s.get('key', '?') for s in old)})"
        )
        print(
            f"  now: {record.get('status')}, {len(new)} stages ({', '.join(s.get('key', '?') for s in new)})"
        )
    if problems:
        for p in problems:
            print(f"UNEXPECTED: {p}")
        return 1
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("watch", help="live progress bars, then the final table")
    w.add_argument("--namespace", required=True)
    w.add_argument("--expect", action="append", default=[], metavar="NAME=STATE[/REASON]")
    w.add_argument("--timeout", type=float, default=300)
    w.add_argument("--interval", type=float, default=0.5)
    w.add_argument("--kubectl", default="kubectl")
    w.add_argument("--summary", help="write the final rows as JSON to this file")
    f = sub.add_parser("facade", help="print and check one job from the REST facade")
    f.add_argument("--url", required=True)
    f.add_argument("--seed", help="the old system's record to compare the shape with")
    f.add_argument("--list-url", help="the facade's list, checked against --summary")
    f.add_argument("--summary", help="rows written by `watch --summary`")
    f.add_argument("--expect-status")
    f.add_argument("--expect-stages", type=int)
    args = p.parse_args(argv)
    return cmd_watch(args) if args.cmd == "watch" else cmd_facade(args)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
