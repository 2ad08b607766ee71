"""Command-line contract: bad input gives one clear line and a non-zero exit, before any work starts."""
import pytest

from socialrec.cli import main


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_unknown_option_is_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--no-such-flag"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --no-such-flag" in _error_line(capsys)


def test_missing_source_folder_is_reported(capsys, tmp_path):
    assert main(["run", "--source", str(tmp_path / "nowhere"), "--lake", str(tmp_path / "lake")]) == 2
    assert "--source folder not found" in _error_line(capsys)


def test_unknown_config_key_is_refused(capsys, tmp_path):
    assert main(["run", "--set", "train.epochz=3", "--lake", str(tmp_path / "lake")]) == 2
    assert "unknown config key: train.epochz" in _error_line(capsys)


def test_missing_config_file_is_reported(capsys, tmp_path):
    assert main(["run", "--conf", str(tmp_path / "nope.yml")]) == 2
    assert "config file not found" in _error_line(capsys)


def test_unknown_stage_is_refused(capsys, tmp_path, spark):
    assert main(["run", "--stages", "ingest,bake", "--lake", str(tmp_path / "lake")]) == 2
    assert "unknown stage(s) ['bake']" in _error_line(capsys)


def test_source_without_events_is_reported(capsys, tmp_path, spark):
    source = tmp_path / "source"
    source.mkdir()
    (source / "items.csv").write_text("item_id\ni1\n")
    assert main(["run", "--source", str(source), "--lake", str(tmp_path / "lake"), "--stages", "ingest"]) == 2
    line = _error_line(capsys)
    assert "not a source the pipeline can read" in line and "events" in line and "filmtrust" in line


@pytest.mark.parametrize("command", [[], ["run"], ["generate"]])
def test_help_is_complete(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: socialrec" in capsys.readouterr().out
