"""docs/make_images.py redraws the images in docs/; its functions run here into a temporary
folder (the demo's quick run, the simulator on two scenarios and two seeds), so a change that
breaks either plot fails here instead of leaving a stale image in the docs."""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("matplotlib", reason="the images need matplotlib (the demo/simulate extras)")
pytest.importorskip("scipy", reason="the simulator needs scipy (the simulate extra)")
pytest.importorskip("langchain.agents", reason="the demo's agents need langchain (the demo extra)")

DOCS = Path(__file__).parents[2] / "docs"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def make_images() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_images", DOCS / "make_images.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_png(path: Path, min_width: int) -> None:
    """A valid PNG of a plausible size: its signature, its header's width and height, bytes."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= min_width, (width, height)
    assert 200 <= height <= width
    assert 20_000 < len(data) < 2_000_000


def test_every_image_in_docs_is_made_by_the_script(make_images: ModuleType) -> None:
    assert {path.name for path in DOCS.glob("*.png")} == set(make_images.IMAGES)


def test_demo_image_is_a_png(make_images: ModuleType, tmp_path: Path) -> None:
    path = make_images.demo_image(tmp_path / "demo_rollout.png")
    assert_png(path, min_width=1200)


def test_simulate_image_is_a_png(make_images: ModuleType, tmp_path: Path) -> None:
    path = make_images.simulate_image(tmp_path / "simulate.png", seeds=2, scenarios=("S0", "S2-25"))
    assert_png(path, min_width=1200)
