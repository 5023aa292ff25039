"""Checks before work (flows/preflight.py): a build that would fail later fails in seconds,
before any request reaches the site."""

from __future__ import annotations

import time

import pytest
import yaml
from builders import recipe_data
from sites.server import FixtureServer, Route

from flows.build import build
from tasks.core.errors import FacesetError
from tasks.finetune import weights


@pytest.fixture
def site():
    server = FixtureServer({"/": Route(b'<h1>A</h1><img src="/a.jpg">')}).start()
    yield server
    server.stop()


def _recipe(tmp_path, server, **sections) -> str:
    path = tmp_path / "pre.yaml"
    data = recipe_data("pre", base=server.base, crosscheck={"autotagger": "none"}, **sections)
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_missing_imagenet_weights_fail_before_the_crawl(site, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty cache
    if weights._reachable(weights.WEIGHTS_HOST):
        pytest.skip(f"{weights.WEIGHTS_HOST} is reachable here: the weights would be downloaded")
    recipe = _recipe(tmp_path, site, finetune={"weights": "imagenet", "model": "resnet18"})
    began = time.monotonic()
    with pytest.raises(FacesetError) as err:
        build(recipe, data_root=tmp_path / "data")
    assert time.monotonic() - began < 5
    assert err.value.message.startswith("the build did not start: finetune needs torchvision's ImageNet weights "
                                        f"for resnet18, which are not in {tmp_path / 'torch' / 'hub' / 'checkpoints'}")
    assert "weights: lite0" in err.value.hint and "--until export" in err.value.hint
    assert site.paths() == [], "the site was asked for something"
    assert not (tmp_path / "data").exists()


def test_every_missing_thing_is_named_at_once(site, tmp_path, monkeypatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    recipe = _recipe(tmp_path, site, finetune={"weights": str(tmp_path / "missing.pt")},
                     crawl={"max_total_bytes": 10**18, "page_budget": 10**9, "max_items_per_source": 10**9})
    text = yaml.safe_load(open(recipe))
    text["crosscheck"] = {"autotagger": "rekognition"}
    open(recipe, "w").write(yaml.safe_dump(text))
    with pytest.raises(FacesetError) as err:
        build(recipe, data_root=tmp_path / "data")
    message = err.value.message
    assert "crosscheck.autotagger is rekognition, but AWS credentials and an AWS region could not be found" in message
    assert f"finetune.weights {str(tmp_path / 'missing.pt')!r} is neither imagenet, lite0, " in message
    assert "but this recipe may download up to about 250000.0 GB of images" in message
    assert "AWS_ACCESS_KEY_ID" in err.value.hint and "crawl.max_total_bytes" in err.value.hint
    assert site.paths() == []



@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_until_crawl_checks_only_what_the_crawl_needs(site, tmp_path) -> None:
    recipe = _recipe(tmp_path, site, finetune={"weights": str(tmp_path / "missing.pt")},
                     crawl={"max_total_bytes": 10**18, "page_budget": 10**9, "max_items_per_source": 10**9})
    build(recipe, data_root=tmp_path / "data", until="crawl")
    assert "/" in site.paths()
