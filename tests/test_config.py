import pytest

from spp_detect.config import PipelineConfig, dump_toml, load_config, merge, parse_override
from spp_detect.errors import ConfigError


def test_defaults_are_the_paper():
    cfg = PipelineConfig()
    assert cfg.extract.scales == (480, 576, 688, 864, 1200)
    assert cfg.spp.levels == (6, 3, 2, 1)
    assert cfg.svm.C == 0.001 and cfg.svm.positive_weight == 2.0 and cfg.svm.bias_feature == 10.0
    assert cfg.detect.nms_iou == 0.3


def test_file_and_overrides(tmp_path):
    p = tmp_path / "p.toml"
    p.write_text('run = "runs/x"\n[extract]\nscales = [688]\n[svm]\nC = 1\n')
    cfg = load_config(p, ["extract.target_size=208", "svm.features=pool", "extract.scales=480,576"])
    assert cfg.run == "runs/x"
    assert cfg.svm.C == 1.0 and isinstance(cfg.svm.C, float)
    assert cfg.extract.target_size == 208
    assert cfg.svm.features == "pool"
    assert cfg.extract.scales == (480, 576)


def test_unknown_key_lists_valid_keys(tmp_path):
    p = tmp_path / "p.toml"
    p.write_text("[extract]\nscale = [688]\n")
    with pytest.raises(ConfigError, match=r"unknown key 'extract.scale'.*scales"):
        load_config(p)
    with pytest.raises(ConfigError, match="unknown key 'nosuch'"):
        merge(PipelineConfig(), {"nosuch": {}})


def test_wrong_type_names_key():
    with pytest.raises(ConfigError, match="svm.C: expected a number"):
        merge(PipelineConfig(), {"svm": {"C": "big"}})
    with pytest.raises(ConfigError, match="extract.flip: expected true or false"):
        merge(PipelineConfig(), {"extract": {"flip": 1}})
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("svm.C")


def test_dump_round_trip(tmp_path):
    cfg = load_config(None, ["extract.scales=688", "detect.bbox_regression=false", "data.dataset=voc2007"])
    p = tmp_path / "c.toml"
    p.write_text(dump_toml(cfg))
    assert load_config(p) == cfg


def test_every_pipeline_file_loads():
    from pathlib import Path

    files = sorted((Path(__file__).resolve().parents[1] / "pipelines").glob("*.toml"))
    for f in files:
        load_config(f)
