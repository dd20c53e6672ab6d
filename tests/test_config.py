from pathlib import Path

import pytest

from fastscore.config import (
    ReportConfig,
    RunConfig,
    ScoreConfig,
    SelectConfig,
    TrainConfig,
    from_dict,
    load_yaml,
)
from fastscore.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_nested_dict_maps_onto_dataclasses():
    cfg = from_dict(
        RunConfig,
        {"output_dir": "o", "score": {"engine": {"dtype": "float32"}}, "select": {"fraction": 0.1}},
    )
    assert cfg.score.engine.dtype == "float32" and cfg.select.fraction == 0.1
    assert cfg.score.engine.kind == "auto" and cfg.score.ray.shards is None  # defaults kept


def test_unknown_keys_are_refused_with_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['dtpye'\].*valid keys.*dtype"):
        from_dict(RunConfig, {"score": {"engine": {"dtpye": "float32"}}})
    with pytest.raises(ConfigError, match="expected a mapping"):
        from_dict(ScoreConfig, {"engine": "vllm"})


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    cls = {
        "run": RunConfig,
        "score": ScoreConfig,
        "select": SelectConfig,
        "train": TrainConfig,
        "report": ReportConfig,
    }[path.stem.split("-")[0]]
    cfg = load_yaml(cls, path)  # raises on unknown keys or bad YAML
    assert isinstance(cfg, cls)


def test_shipped_configs_exist():
    assert len(list(CONFIGS.glob("*.yaml"))) >= 2
