#!/usr/bin/python3
"""Summarise JUnit XML files from every test suite into one closing line.

Usage: tests/summarize.py [--error MSG]... JUNIT.xml...

Counts individual test cases (a <testcase> with a <failure> or <error> child is
failed, with a <skipped> child skipped, otherwise passed) across all files, prints the
failing cases, and ends with exactly one line as the very last line of output:

    N passed, N failed            (", N skipped" is appended when N > 0)

A JUnit file that is missing or unreadable counts as one failure (its suite could not
run), and so does each --error MSG (a step that could not run, given by test.sh).

For meson's testlog.junit.xml, the sibling testlog.json (one JSON line per test
executable) is cross-checked: an executable that meson judged FAIL/ERROR/TIMEOUT but
whose own JUnit cases all passed (e.g. it crashed or a sanitizer reported at exit,
after GoogleTest had written its XML) counts as one more failure.

Exit status: 0 if nothing failed, 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import xml.etree.ElementTree as ET

BAD_MESON_RESULTS = {"FAIL", "ERROR", "TIMEOUT", "INTERRUPT", "UNEXPECTEDPASS"}


class Tally:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0
        self.skipped = 0
        self.failures: list[str] = []

    def fail(self, what: str) -> None:
        self.failed += 1
        self.failures.append(what)


def case_name(case: ET.Element, suite: ET.Element) -> str:
    cls = case.get("classname") or suite.get("name") or ""
    name = case.get("name") or "?"
    return f"{cls}::{name}" if cls else name


def first_line(el: ET.Element) -> str:
    text = (el.get("message") or el.text or "").strip()
    return text.splitlines()[0][:200] if text else ""


def iter_suites(root: ET.Element):
    if root.tag == "testsuite":
        yield root
    # nested suites are possible; only suites that directly hold test cases matter
    for suite in root.iter("testsuite"):
        if suite is not root:
            yield suite


def summarize_file(path: str, tally: Tally) -> dict[str, int] | None:
    """Adds the file's cases to tally. Returns {suite name: failing cases} or None."""
    if not os.path.exists(path):
        tally.fail(f"{path}: missing (the suite did not run or did not finish)")
        return None
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        tally.fail(f"{path}: unreadable JUnit XML ({e})")
        return None
    per_suite: dict[str, int] = {}
    for suite in iter_suites(root):
        sname = suite.get("name") or ""
        bad = 0
        for case in suite.findall("testcase"):
            failure = case.find("failure")
            error = case.find("error")
            if failure is not None or error is not None:
                el = failure if failure is not None else error
                kind = "FAILED" if failure is not None else "ERROR"
                msg = first_line(el)
                tally.fail(f"{kind} {case_name(case, suite)}" + (f": {msg}" if msg else ""))
                bad += 1
            elif case.find("skipped") is not None:
                tally.skipped += 1
            else:
                tally.passed += 1
        per_suite[sname] = per_suite.get(sname, 0) + bad
        # A suite that reports errors/failures without any test case (some runners do
        # this when an executable cannot start) would otherwise vanish.
        if not suite.findall("testcase"):
            declared = int(suite.get("errors") or 0) + int(suite.get("failures") or 0)
            if declared:
                tally.fail(f"{path}: suite {sname} reports {declared} failure(s) without test cases")
    return per_suite


def cross_check_meson(junit_path: str, per_suite: dict[str, int], junit_root_cases: dict[str, bool],
                      tally: Tally) -> None:
    json_path = os.path.join(os.path.dirname(junit_path), "testlog.json")
    if not os.path.exists(json_path):
        return
    try:
        with open(json_path, encoding="utf-8", errors="replace") as f:
            lines = [json.loads(l) for l in f if l.strip()]
    except (OSError, ValueError):
        return
    for t in lines:
        name, result = t.get("name", ""), t.get("result", "")
        if result not in BAD_MESON_RESULTS:
            continue
        # gtest: suites named "<project>.<name>.<gtest suite>"; TAP: "<project>.<name>";
        # exit-code tests: a test case named <name> (already counted if it failed).
        bad = sum(n for s, n in per_suite.items()
                  if s.endswith("." + name) or ("." + name + ".") in s)
        if bad == 0 and not junit_root_cases.get(name, False):
            tally.fail(f"meson: {name} {result} (exit code {t.get('returncode')}) although its "
                       f"JUnit cases passed (crash or sanitizer report at exit?)")


def exitcode_cases(path: str) -> dict[str, bool]:
    """{test case name: failed} for every case, used to spot exit-code tests."""
    out: dict[str, bool] = {}
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError):
        return out
    for case in root.iter("testcase"):
        failed = case.find("failure") is not None or case.find("error") is not None
        out[case.get("name") or ""] = failed
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--error", action="append", default=[],
                    help="a step that could not run (counts as one failure)")
    ap.add_argument("junit", nargs="*")
    args = ap.parse_args(argv)

    tally = Tally()
    for e in args.error:
        tally.fail(f"could not run: {e}")
    for path in args.junit:
        per_suite = summarize_file(path, tally)
        if per_suite is not None and os.path.basename(path) == "testlog.junit.xml":
            cross_check_meson(path, per_suite, exitcode_cases(path), tally)

    if tally.failures:
        print(f"Failures ({len(tally.failures)}):")
        for f in tally.failures:
            print(f"  {f}")
    line = f"{tally.passed} passed, {tally.failed} failed"
    if tally.skipped:
        line += f", {tally.skipped} skipped"
    sys.stdout.flush()
    print(line, flush=True)
    return 1 if tally.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
