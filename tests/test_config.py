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


@pytest.mark.parametrize("override, message", [
    ("extract.scales=[-160]", r"extract.scales\[0\]: -160 is out of range; it must be >= 16"),
    ("extract.scales=[0]", r"extract.scales\[0\]: 0 is out of range"),
    ("extract.scales=[]", r"extract.scales: needs at least one value"),
    ("spp.levels=[0, -1]", r"spp.levels\[0\]: 0 is out of range"),
    ('extract.projection="exact"', r"extract.projection: unknown value 'exact'; use one of paper, released"),
    ("detect.nms_iou=7.0", r"detect.nms_iou: 7.0 is out of range; it must be <= 1.0"),
    ("svm.C=0", r"svm.C: 0.0 is out of range; it must be > 0.0"),
    ('finetune.device="gpu"', r"finetune.device: unknown value 'gpu'; use one of auto, cpu, cuda"),
    ('pretrain.device="cuda:x"', r"pretrain.device: unknown value 'cuda:x'; use auto, cpu, cuda or cuda:N"),
    ('backbone.name="vgg19"', r"backbone.name: unknown value 'vgg19'"),
    ("finetune.dropout=1.0", r"finetune.dropout: 1.0 is out of range; it must be < 1.0"),
    ('eval.metric="map"', r"eval.metric: unknown value 'map'; use one of voc07, voc10, coco"),
])
def test_values_are_checked_when_loaded(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_a_bad_value_in_a_pipeline_file_names_the_file(tmp_path):
    p = tmp_path / "p.toml"
    p.write_text("[extract]\nscales = [0]\n")
    with pytest.raises(ConfigError, match=r"p.toml: extract.scales\[0\]: 0 is out of range"):
        load_config(p)


def test_accepted_values_pass_and_every_default_is_valid():
    from dataclasses import fields, is_dataclass

    from spp_detect.config import check_value

    cfg = load_config(None, ['pretrain.device="cuda:1"', "extract.scales=[688]", "detect.nms_iou=1.0",
                             "finetune.memory_mb=0", "backbone.channels=[]"])
    assert cfg.pretrain.device == "cuda:1" and cfg.detect.nms_iou == 1.0
    for section in fields(PipelineConfig()):
        value = getattr(PipelineConfig(), section.name)
        if is_dataclass(value):
            for f in fields(value):
                if f.metadata:
                    check_value(f"{section.name}.{f.name}", getattr(value, f.name), f.metadata)

