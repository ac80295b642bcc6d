"""The study's config fields for calibration and fine-tuning (issue 16): their checks, the fine-tuning rate's rule,
the old spelling ``"truncate"``, and what changes a fingerprint, for a new folder and for one written before."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("torch")

from tnlib_torch.study.config import ADDED, StudyConfig, upgraded  # noqa: E402
from tnlib_torch.study.decomposition import DECOMPOSITION_METHODS  # noqa: E402
from tnlib_torch.study.store import MANIFEST, ResultStore  # noqa: E402

#: A complete config of the version before issue 16 (as its manifest holds it), and its fingerprint then.
EARLIER = {
    "model": "vanilla_cnn", "checkpoint": None, "dataset": "digits", "data_root": None, "include": [],
    "cuts": ["o|ihw"], "levels": [0.1, 0.3], "train_epochs": 10, "retrain_epochs": 2, "recovery_levels": 1,
    "decompositions": ["truncate", "cp", "tucker2", "mps"], "eval_samples": None, "train_samples": None,
    "batch_size": 128, "lr": 0.05, "seed": 0, "device": "cpu",
}
EARLIER_FINGERPRINT = "1a149eaa942c1ef7"  # also that of StudyConfig() before issue 16
#: The default config's fingerprint, the same in every process and on every machine.
DEFAULT_FINGERPRINT = "54a4f763a708791e"


def test_defaults_calibrate_on_512_images_and_fine_tune_at_a_tenth_of_lr():
    config = StudyConfig()
    assert config.calibration_samples == 512 and config.retrain_lr is None
    assert config.lr == 0.05 and config.fine_tune_lr == pytest.approx(0.005)
    assert config.decompositions == ("svd", "cp", "tucker2", "mps") and set(config.decompositions) == set(
        DECOMPOSITION_METHODS)
    assert config.fingerprint() == DEFAULT_FINGERPRINT
    assert StudyConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.parametrize(("lr", "retrain_lr", "rate"), [(0.05, None, 0.005), (0.1, None, 0.01), (0.05, 0.02, 0.02),
                                                         (0.01, 0.05, 0.05)])
def test_fine_tune_lr_is_retrain_lr_else_a_tenth_of_lr(lr, retrain_lr, rate):
    assert StudyConfig(lr=lr, retrain_lr=retrain_lr).fine_tune_lr == pytest.approx(rate, rel=1e-12)


@pytest.mark.parametrize(("field", "value", "error"), [
    ("calibration_samples", -1, ValueError),
    ("calibration_samples", 2.5, TypeError),
    ("calibration_samples", None, TypeError),
    ("retrain_lr", 0.0, ValueError),
    ("retrain_lr", -0.01, ValueError),
    ("retrain_lr", math.nan, ValueError),
    ("retrain_lr", math.inf, ValueError),
    ("retrain_lr", "0.01", TypeError),
    ("retrain_lr", True, TypeError),
    ("decompositions", ("truncate", "svd"), ValueError),  # one method under two spellings
    ("decompositions", ("tt",), ValueError),
    ("decompositions", (3,), TypeError),
])
def test_a_bad_value_is_refused_naming_the_field(field, value, error):
    with pytest.raises(error, match=field):
        StudyConfig(**{field: value})


def test_truncate_is_read_as_svd_and_written_as_svd():
    config = StudyConfig(decompositions=["truncate", "cp"])
    assert config.decompositions == ("svd", "cp") and config.to_dict()["decompositions"] == ["svd", "cp"]
    assert StudyConfig.from_dict({"decompositions": ["mps", "truncate"]}).decompositions == ("mps", "svd")


def test_calibration_and_the_fine_tuning_rate_change_the_fingerprint_as_they_change_records():
    config = StudyConfig()
    for changed in (config.replace(calibration_samples=0), config.replace(calibration_samples=256),
                    config.replace(retrain_lr=0.01), config.replace(lr=0.1)):
        assert changed.fingerprint() != config.fingerprint(), changed
    # the rate is hashed as it is used: the rule's rate given explicitly is the same study
    assert config.replace(retrain_lr=0.005).fingerprint() == config.fingerprint()
    # a fine-tuning rate equal to lr and no calibration are what a study did before the fields existed
    assert config.replace(calibration_samples=0, retrain_lr=0.05).fingerprint() == EARLIER_FINGERPRINT
    # the grid's spelling changes nothing
    assert config.replace(decompositions=("truncate",)).fingerprint() == config.fingerprint()


def test_a_complete_earlier_config_reads_the_added_fields_as_what_it_did():
    config = StudyConfig.from_dict(EARLIER)
    assert (config.calibration_samples, config.retrain_lr, config.fine_tune_lr) == (0, 0.05, 0.05)
    assert config.decompositions == ("svd", "cp", "tucker2", "mps")
    assert config.fingerprint() == EARLIER_FINGERPRINT
    assert set(upgraded(EARLIER)) == set(EARLIER) | set(ADDED)


def test_a_partial_config_takes_the_defaults_of_the_added_fields():
    assert StudyConfig.from_dict({"seed": 4}) == StudyConfig(seed=4)
    without_lr = {name: value for name, value in EARLIER.items() if name != "lr"}
    assert StudyConfig.from_dict(without_lr).fine_tune_lr == pytest.approx(0.005)
    one_added = {**EARLIER, "calibration_samples": 64}  # not an earlier config: the other added field defaults
    assert StudyConfig.from_dict(one_added).retrain_lr is None


def test_a_folder_written_before_resumes_only_with_the_config_that_makes_its_records(tmp_path):
    with ResultStore.open(tmp_path, StudyConfig.from_dict(EARLIER)) as store:
        store.append({"key": ["a"]})
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    (tmp_path / MANIFEST).write_text(json.dumps({**manifest, "config": EARLIER, "fingerprint": EARLIER_FINGERPRINT}))
    with pytest.raises(ValueError, match=r"calibration_samples = 0 recorded, 512 now; .*retrain_lr = 0\.05 recorded, "
                                         r"None now"):
        ResultStore.open(tmp_path, StudyConfig(cuts=("o|ihw",), levels=(0.1, 0.3)))
    same = StudyConfig(cuts=("o|ihw",), levels=(0.1, 0.3), calibration_samples=0, retrain_lr=0.05)
    with ResultStore.open(tmp_path, same) as store:
        assert store.done(["a"]) and store.manifest()["fingerprint"] == EARLIER_FINGERPRINT
