"""Pure parts of the doctor: /proc/net/tcp parsing and report rendering."""

from __future__ import annotations

from semantik_infra.doctor import FAIL, OK, WARN, DoctorReport, listening_inodes, render_findings

TABLE = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1538 00000000:0000 0A 00000000:00000000 00:00000000 00000000   101        0 4242 1 0
   1: 0100007F:1538 0100007F:9C40 01 00000000:00000000 00:00000000 00000000   101        0 4343 1 0
   2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 99 1 0
"""


def test_listening_inodes_picks_listeners_on_the_port_only():
    assert listening_inodes(TABLE, 0x1538) == {4242}  # 5432; the ESTABLISHED row (01) is ignored
    assert listening_inodes(TABLE, 22) == {99}
    assert listening_inodes(TABLE, 1) == set()


def test_report_fails_only_on_fail_and_renders_hints_for_problems():
    report = DoctorReport()
    report.add("env", OK, "fine", "unused hint")
    report.add("port", WARN, "odd", "look")
    assert not report.failed
    report.add("backups", FAIL, "broken", "fix it")
    assert report.failed
    assert report.to_dict()["counts"] == {"ok": 1, "warn": 1, "fail": 1}
    lines = render_findings(report.findings)
    assert "unused hint" not in "\n".join(lines)
    assert "    fix: fix it" in lines
    assert len(render_findings(report.findings, problems_only=True)) == 4
