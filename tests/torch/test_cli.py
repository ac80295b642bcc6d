"""The ``tnlib`` command: options map onto StudyConfig fields; errors end with one line and status 2."""

from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("torch")

from tnlib_torch.cli import build_parser, main  # noqa: E402
from tnlib_torch.study.config import StudyConfig  # noqa: E402


def test_every_config_field_is_an_option_with_the_config_default():
    args = build_parser().parse_args(["study"])
    for field in dataclasses.fields(StudyConfig):
        assert getattr(args, field.name) == field.default, field.name


def test_several_values_parse_to_the_field_type():
    args = build_parser().parse_args(["study", "--levels", "0.2", "0.4", "--cuts", "ihw|o", "oh|iw",
                                      "--eval-samples", "50", "--train-samples", "500", "--train-epochs", "3",
                                      "--workers", "2"])
    assert args.levels == [0.2, 0.4] and args.cuts == ["ihw|o", "oh|iw"]
    assert (args.eval_samples, args.train_samples, args.train_epochs, args.workers) == (50, 500, 3, 2)


def test_help_states_each_default_once_in_words():
    study = build_parser()._subparsers._group_actions[0].choices["study"]
    text = " ".join(study.format_help().split())
    assert "(default: every conv)" in text and "(default: 0.1 0.2 0.3 0.4 0.5 0.6)" in text
    assert "(default: truncate cp tucker2 mps)" in text and "(default: 10)" in text
    assert "(default: ())" not in text and "(default: None)" not in text and "('" not in text


def test_workers_and_scheduler_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["study", "--workers", "2", "--scheduler", "tcp://127.0.0.1:8786"])
    assert exit_info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    (["study", "--levels", "1.5"], "levels"),
    (["study", "--cuts", "x|oih"], "cut"),
    (["study", "--model", "no_such_model"], "model"),
])
def test_bad_options_end_with_one_line_and_status_2(argv, message, capsys, tmp_path):
    assert main([*argv, "--output", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tnlib study: error: ") and message in err and err.count("\n") == 1


def test_spectra_runs_the_core_demo(capsys):
    assert main(["spectra"]) == 0
    assert "o|ihw" in capsys.readouterr().out
