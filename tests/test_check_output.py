"""``redraft run CONFIG --check`` proves the output location can be written (and leaves nothing there): local
folders and S3 prefixes on the session's moto server. No Ray here."""

from __future__ import annotations

import os

import pytest
import yaml

from pipelines.cli import main
from pipelines.storage import Location, StorageError
from tests.pipeline_fixtures import job_config, make_bucket, s3_server, s3_storage, write_jsonl  # noqa: F401


def _check(tmp_path, checkpoint, output_path, **sections) -> int:
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": "hello"}])
    cfg_path = tmp_path / "job.yaml"
    cfg_path.write_text(yaml.safe_dump(job_config(checkpoint, src, output_path, **sections)))
    return main(["run", str(cfg_path), "--check"])


def test_check_passes_on_a_writable_new_folder_and_leaves_nothing(tmp_path, tiny_checkpoint, capsys):
    out = tmp_path / "results" / "nightly"
    assert _check(tmp_path, tiny_checkpoint, out) == 0
    assert "config ok" in capsys.readouterr().out
    assert not out.exists()  # the job creates its folders; --check only probes the nearest existing one
    assert not [p for p in tmp_path.rglob("*") if "probe" in p.name]


def test_check_fails_when_a_parent_of_the_output_is_a_file(tmp_path, tiny_checkpoint, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a regular file")
    assert _check(tmp_path, tiny_checkpoint, blocker / "out") == 1
    err = capsys.readouterr().err
    assert f"output.path: cannot write to {blocker / 'out'}: {blocker} is a file, not a directory" in err
    assert "Traceback" not in err


def test_check_fails_on_a_read_only_folder(tmp_path, tiny_checkpoint, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root: a mode-0500 folder stays writable (the file case above covers this)")
        assert _check(tmp_path, tiny_checkpoint, locked / "out") == 1
        err = capsys.readouterr().err
        assert f"output.path: cannot write to {locked / 'out'} (its nearest existing folder {locked})" in err
        assert "Permission denied" in err
    finally:
        locked.chmod(0o700)


def test_check_fails_on_a_missing_bucket(tmp_path, tiny_checkpoint, s3_server, capsys):
    out = "s3://no-such-bucket-for-check/out"
    assert _check(tmp_path, tiny_checkpoint, out, output={"storage": s3_storage(s3_server)}) == 1
    err = capsys.readouterr().err
    assert f"output.path: cannot write to {out}" in err and "check that the bucket exists" in err
    assert "Traceback" not in err


def test_check_passes_on_a_bucket_and_deletes_its_probe(tmp_path, tiny_checkpoint, s3_server, capsys):
    from pipelines.config import StorageConfig

    bucket = make_bucket(s3_server, "check-probe-ok")
    assert _check(tmp_path, tiny_checkpoint, f"s3://{bucket}/out", output={"storage": s3_storage(s3_server)}) == 0
    loc = Location.of(f"s3://{bucket}/out", StorageConfig(**s3_storage(s3_server)))
    assert loc.list_files(bucket) == []

