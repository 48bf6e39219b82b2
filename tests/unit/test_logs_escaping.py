"""`stardock logs` shows a job's output with its terminal control sequences escaped (the job wrote
it; the user's terminal must not obey it), newlines and tabs kept; --raw gives the bytes as they
are (issue 23, item 6)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from stardock_hpc.commands import jobs

HOSTILE = ("result 1\tok\n"
           "\x1b]0;pwned title\x07\x1b[2J\x1b[1;1H\x1b]52;c;ZWNobyBwd25lZA==\x07"   # title, clear, clipboard
           "\rline rewritten\x08\x7f \x9b31m 8-bit CSI \u202egnp.exe\n"
           "caf\u00e9 \u2603 done\n")


def test_every_control_sequence_is_shown_escaped_but_newlines_and_tabs():
    shown = jobs.terminal_text(HOSTILE)
    assert not any(ord(c) < 0x20 and c not in "\n\t" or 0x7F <= ord(c) < 0xA0 for c in shown), repr(shown)
    assert "\u202e" not in shown and "\\u202e" in shown
    assert shown.count("\n") == 3 and "result 1\tok" in shown
    assert "\\x1b]0;pwned title\\x07" in shown and "\\x0dline rewritten\\x08\\x7f" in shown and "\\x9b31m" in shown
    assert "caf\u00e9 \u2603 done" in shown  # text is text


@pytest.fixture
def job_output(tmp_path, monkeypatch):
    out = tmp_path / "slurm-42.out"
    out.write_bytes(HOSTILE.encode())
    monkeypatch.setattr(jobs, "scheduler_for", lambda job, site: SimpleNamespace(stdout_path=lambda j: str(out)))
    monkeypatch.setattr(jobs, "job_report", lambda job, site: [{"state": "COMPLETED"}])
    monkeypatch.setenv("STARDOCK_SITE_CONFIG", "")
    return out


@pytest.mark.parametrize("follow", [[], ["--follow"]])
def test_logs_escapes_and_raw_does_not(job_output, follow):
    shown = CliRunner().invoke(jobs.logs, ["42", *follow])
    assert shown.exit_code == 0, shown.output
    assert shown.output == jobs.terminal_text(HOSTILE) and "\x1b" not in shown.output
    raw = CliRunner().invoke(jobs.logs, ["42", "--raw", *follow])
    assert raw.exit_code == 0 and raw.stdout_bytes == HOSTILE.encode()


def test_a_character_split_between_two_reads_stays_whole():
    written = []
    write = jobs._writer(False)
    jobs.click.echo, echo = (lambda text, nl=True: written.append(text)), jobs.click.echo
    try:
        data = "\u00e9\u2603".encode()
        for i in range(len(data)):
            write(data[i:i + 1], False)
        write(b"\xe2", False)
        write(b"", True)  # the end: half a character is a replacement character, not lost bytes
    finally:
        jobs.click.echo = echo
    assert "".join(written) == "\u00e9\u2603\ufffd"
