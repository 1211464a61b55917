"""Unit tests of the demo's pure parts (scripts/demo_jobs.py): rows, reasons, expectations,
bars, lines, the final table, the facade check. Run: make demo-test."""

import io
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import demo_jobs as d  # noqa: E402


def job(name, state=None, progress=0.0, job_id=None, conditions=(), logs=(), **status):
    obj = {
        "metadata": {"name": name, "creationTimestamp": "2026-12-03T13:14:50Z"},
        "spec": {"name": f"Display {name}", "jobType": "ml"},
    }
    if state is not None:
        obj["status"] = {
            "id": job_id,
            "state": state,
            "progress": {"summary": {"status": state, "progress": progress}, "stages": [{}, {}]},
            "logs": {"stdout": list(logs), "stderr": []},
            "conditions": list(conditions),
            **status,
        }
    return obj


PENDING_TIMEOUT = [
    {"type": "PodsScheduled", "status": "False", "reason": "Unschedulable"},
    {"type": "Failed", "status": "True", "reason": "PendingTimeout"},
]


class Rows(unittest.TestCase):
    def test_row_of_a_finished_job(self):
        r = d.job_row(
            job(
                "a",
                "SUCCESS",
                1,
                7,
                [{"type": "Complete", "status": "True", "reason": "Succeeded"}],
                ["[2026-12-03 13:14:57] INFO Job finished", "[2026-12-03 13:14:51] INFO Job 7 started"],
                startedAt="2026-12-03T13:14:51Z",
                finishedAt="2026-12-03T13:14:57Z",
            )
        )
        self.assertEqual(r["id"], 7)
        self.assertEqual(r["name"], "Display a")
        self.assertEqual(r["state"], "SUCCESS")
        self.assertEqual(r["reason"], "Succeeded")
        self.assertEqual(r["log"], "[2026-12-03 13:14:57] INFO Job finished")  # newest first
        self.assertEqual(r["duration"], 6.0)
        self.assertEqual(r["stages"], 2)

    def test_a_job_without_status_yet(self):
        r = d.job_row(job("new"))
        self.assertEqual((r["id"], r["state"], r["progress"], r["log"], r["reason"]), (None, "-", 0.0, "", ""))
        self.assertFalse(d.is_final(r))

    def test_failure_without_start_counts_from_creation(self):
        r = d.job_row(job("u", "FAILURE", 0, 2, PENDING_TIMEOUT, finishedAt="2026-12-03T13:15:10Z"))
        self.assertEqual(r["reason"], "PendingTimeout")  # the Failed condition, not PodsScheduled
        self.assertEqual(r["duration"], 20.0)

    def test_pending_job_shows_why(self):
        r = d.job_row(job("u", "PENDING", 0, 2, PENDING_TIMEOUT[:1]))
        self.assertEqual(r["reason"], "Unschedulable")

    def test_queued_job_shows_queued(self):
        r = d.job_row(job("q", "PENDING", 0, 3, [{"type": "Queued", "status": "True", "reason": "Queued"}]))
        self.assertEqual(r["reason"], "Queued")

    def test_progress_is_clamped(self):
        self.assertEqual(d.job_row(job("a", "STARTED", 1.7))["progress"], 1.0)
        self.assertEqual(d.job_row(job("a", "STARTED", "x"))["progress"], 0.0)

    def test_rows_sorted_by_id_then_unnumbered(self):
        doc = {"items": [job("c"), job("b", "STARTED", job_id=9), job("a", "STARTED", job_id=3)]}
        self.assertEqual([r["object"] for r in d.rows_from_list(doc)], ["a", "b", "c"])


class Expectations(unittest.TestCase):
    def setUp(self):
        self.rows = [
            d.job_row(job("ok", "SUCCESS", 1, 1)),
            d.job_row(job("late", "FAILURE", 0, 2, PENDING_TIMEOUT)),
        ]

    def test_parse(self):
        self.assertEqual(d.parse_expect("x=success"), ("x", "SUCCESS", None))
        self.assertEqual(d.parse_expect("x=FAILURE/PendingTimeout"), ("x", "FAILURE", "PendingTimeout"))
        with self.assertRaises(ValueError):
            d.parse_expect("x")

    def test_met(self):
        want = {"ok": ("SUCCESS", None), "late": ("FAILURE", "PendingTimeout")}
        self.assertEqual(d.check_expectations(self.rows, want), [])
        self.assertTrue(d.all_done(self.rows, want))

    def test_wrong_state_reason_or_missing(self):
        want = {"ok": ("FAILURE", None), "late": ("FAILURE", "DeadlineExceeded"), "gone": ("SUCCESS", None)}
        problems = d.check_expectations(self.rows, want)
        self.assertEqual(len(problems), 3)
        self.assertIn("ok: ended SUCCESS, expected FAILURE", problems)
        self.assertIn("late: reason PendingTimeout, expected DeadlineExceeded", problems)
        self.assertIn("gone: not found", problems)

    def test_not_done_while_one_runs_or_is_missing(self):
        rows = self.rows + [d.job_row(job("run", "STARTED", 0.5, 3))]
        self.assertFalse(d.all_done(rows, {"run": ("SUCCESS", None)}))
        self.assertEqual(
            d.check_expectations(rows, {"run": ("SUCCESS", None)}),
            ["run: still STARTED (not finished), expected SUCCESS"],
        )
        self.assertFalse(d.all_done(self.rows, {"absent": ("SUCCESS", None)}))


class Rendering(unittest.TestCase):
    def test_bar(self):
        self.assertEqual(d.bar(0.5, 10, unicode=False), "#####.....")
        self.assertEqual(d.bar(0, 4), "░░░░")
        self.assertEqual(d.bar(2, 4), "████")

    def test_fit_counts_visible_characters_only(self):
        colored = "\x1b[32mSUCCESS\x1b[0m and more"
        self.assertEqual(d.fit(colored, 100), colored)
        cut = d.fit(colored, 10)
        self.assertEqual(d.visible_len(cut), 10)
        self.assertTrue(cut.endswith("…\x1b[0m"))
        self.assertEqual(d.fit("abcdef", 4), "abc…")

    def test_line(self):
        r = d.job_row(job("a", "STARTED", 0.25, 12, logs=["[2026-12-03 13:14:52] INFO Stage collect done"]))
        line = d.render_line(r, width=200, unicode=False)
        self.assertIn("#12", line)
        self.assertIn("Display a", line)
        self.assertIn("STARTED", line)
        self.assertIn("#####...............  25%", line)
        self.assertTrue(line.endswith("13:14:52 INFO Stage collect done"))  # date dropped
        self.assertLessEqual(len(d.render_line(r, width=40)), 40)

    def test_line_of_a_pending_job_names_the_reason(self):
        r = d.job_row(job("u", "PENDING", 0, 2, PENDING_TIMEOUT[:1], ["[2026-12-03 13:14:51] WARNING no node"]))
        self.assertIn("(Unschedulable) 13:14:51 WARNING no node", d.render_line(r, 200))

    def test_color_only_when_asked(self):
        r = d.job_row(job("a", "FAILURE", 0, 1))
        self.assertNotIn("\x1b[", d.render_line(r, 200, color=False))
        self.assertIn("\x1b[31m", d.render_line(r, 200, color=True))

    def test_frame(self):
        rows = [d.job_row(job("a", "SUCCESS", 1, 1)), d.job_row(job("b", "STARTED", 0.5, 2))]
        lines = d.render_frame(rows, 3.25, width=80, source="src")
        self.assertEqual(len(lines), 3)
        self.assertIn("2 jobs, 1 finished", lines[0])
        self.assertIn("3.2 s", lines[0])
        self.assertTrue(all(d.visible_len(x) <= 80 for x in lines))
        self.assertIn("no CaptureJobs yet", d.render_frame([], 0)[1])

    def test_final_table(self):
        rows = [
            d.job_row(job("a", "SUCCESS", 1, 1, startedAt="2026-12-03T13:14:51Z", finishedAt="2026-12-03T13:14:54Z")),
            d.job_row(job("u", "FAILURE", 0, 22, PENDING_TIMEOUT, finishedAt="2026-12-03T13:17:00Z")),
        ]
        table = d.final_table(rows)
        self.assertEqual(table[0].split(), ["ID", "NAME", "TYPE", "STATE", "PROGRESS", "DURATION", "REASON"])
        self.assertEqual(table[1].split(), ["#1", "Display", "a", "ml", "SUCCESS", "100%", "3", "s", "-"])
        self.assertEqual(
            table[2].split(), ["#22", "Display", "u", "ml", "FAILURE", "0%", "2", "min", "10", "s", "PendingTimeout"]
        )
        # aligned: every column starts at the same offset on every line
        self.assertEqual(table[0].index("STATE"), table[1].index("SUCCESS"))

    def test_plain_screen_prints_only_changes(self):
        out = io.StringIO()
        screen = d.Screen(out, unicode=False)
        rows = [d.job_row(job("a", "STARTED", 0.5, 1))]
        screen.changes(rows, 1.0)
        screen.changes(rows, 1.5)
        screen.changes([d.job_row(job("a", "SUCCESS", 1, 1))], 2.0)
        self.assertEqual(len(out.getvalue().splitlines()), 2)

    def test_terminal_screen_redraws_in_place(self):
        out = io.StringIO()
        screen = d.Screen(out)
        screen.frame(["h", "a", "b"])
        first = out.getvalue()
        self.assertNotIn("\x1b[3F", first)
        screen.frame(["h", "a"])
        second = out.getvalue()[len(first) :]
        self.assertTrue(second.startswith("\x1b[3F"))  # back to the top of the last frame
        self.assertTrue(second.endswith("\x1b[2K\n\x1b[1F"))  # the dropped line is blanked


class Facade(unittest.TestCase):
    SEED = {"id": 630, "status": "FAILURE", "progress": {"stages": [{"key": "x"}] * 4}, "logs": {}}

    def record(self, status="SUCCESS", stages=("data_storage_sync", "regroup_sessions")):
        return {
            "id": 21,
            "status": status,
            "progress": {"summary": {"status": status}, "stages": [{"key": k} for k in stages]},
            "logs": {},
        }

    def test_good_record(self):
        self.assertEqual(d.check_facade_job(self.record(), "SUCCESS", 2), [])
        self.assertEqual(d.shape_diff(self.record(), self.SEED), ([], []))

    def test_bad_records(self):
        self.assertEqual(len(d.check_facade_job(self.record("FAILURE"), "SUCCESS", 2)), 2)
        self.assertIn("3 stages, expected 2", d.check_facade_job(self.record(stages="abc"), "SUCCESS", 2))
        dup = d.check_facade_job(self.record(stages=("x", "x")), "SUCCESS", 2)
        self.assertTrue(any("duplicate stage keys" in p for p in dup))

    def test_list_against_rows(self):
        rows = [d.job_row(job("a", "SUCCESS", 1, 1)), d.job_row(job("b", "FAILURE", 0, 2))]
        good = {"count": 2, "results": [{"id": 2, "status": "FAILURE"}, {"id": 1, "status": "SUCCESS"}]}
        self.assertEqual(d.compare_list(good, rows), [])
        bad = {"count": 1, "results": [{"id": 1, "status": "STARTED"}]}
        self.assertEqual(len(d.compare_list(bad, rows)), 3)
        self.assertEqual(d.compare_list({"detail": "x"}, rows), ["the list has no results array"])

    def test_shape_diff(self):
        rec = self.record()
        del rec["logs"]
        rec["extra"] = 1
        self.assertEqual(d.shape_diff(rec, self.SEED), (["logs"], ["extra"]))


if __name__ == "__main__":
    unittest.main()
