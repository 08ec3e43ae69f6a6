"""``bench.trees``: another revision's ``sidecar`` beside the working tree's, for side-by-side runs."""

from __future__ import annotations

from pathlib import Path

from bench import redaction_throughput
from bench.trees import archive_sidecar


def test_a_revision_is_written_as_a_package(tmp_path: Path) -> None:
    assert archive_sidecar("HEAD", tmp_path / "rev") is None
    assert (tmp_path / "rev" / "sidecar" / "redaction" / "detectors.py").is_file()
    assert not (tmp_path / "rev" / "tests").exists()


def test_an_unknown_revision_is_refused_with_exit_code_2(tmp_path: Path, capsys) -> None:
    complaint = archive_sidecar("no-such-revision", tmp_path / "rev")
    assert complaint and "no-such-revision" in complaint
    args = ["--mb", "0.01", "--repeat", "1", "--against", "no-such-revision"]
    assert redaction_throughput.main(args) == 2
    assert "--against no-such-revision:" in capsys.readouterr().err
