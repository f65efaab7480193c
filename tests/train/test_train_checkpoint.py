"""Checkpoints: round trip, refusal of mismatched metadata / versions / corrupt files, and no unpickling."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import vbiopsy.train.checkpoint as checkpoint
from vbiopsy import __version__
from vbiopsy.errors import ConfigError, InputError
from vbiopsy.train.checkpoint import checkpoint_metadata, load_checkpoint, save_checkpoint

METADATA = {"task": "grade", "classes": ["grade_2", "grade_3", "grade_4"], "modality": "asl",
            "model": {"base_width": 4, "blocks": [1, 1]}, "spacing_mm": [1.0, 1.0, 1.0],
            "tabular": {"features": ["age"], "fill": {"age": 60.0}, "mean": [60.0], "std": [10.0]}}


class Payload:
    """Unpickling this creates ``marker``: proof that loading executed stored code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


def small_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(1, 2, 3), nn.GroupNorm(1, 2), nn.Flatten(), nn.Linear(2 * 4 * 4 * 4, 3))
    state = dict(model.state_dict())
    state["transposed"] = torch.arange(6.0).reshape(2, 3).t()  # non-contiguous
    state["shared"] = state["0.weight"]  # shares storage with another entry
    state["bf16"] = torch.randn(3).to(torch.bfloat16)
    state["count"] = torch.tensor(7, dtype=torch.int64)
    return state


def test_round_trip(tmp_path: Path) -> None:
    state = small_state()
    path = save_checkpoint(tmp_path / "model.safetensors", state, METADATA)
    loaded, metadata = load_checkpoint(path, expect={"task": "grade", "model": METADATA["model"]})
    assert metadata == METADATA
    assert set(loaded) == set(state)
    for name, tensor in state.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor), name
    assert checkpoint_metadata(path) == METADATA
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temp files left


def test_metadata_mismatch_is_refused_naming_the_key(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.safetensors", small_state(), METADATA)
    with pytest.raises(InputError) as info:
        load_checkpoint(path, expect={"task": "survival"})
    assert str(path) in str(info.value) and "'task'" in str(info.value) and "'grade'" in str(info.value)
    with pytest.raises(InputError, match=r"'model\.base_width': checkpoint has 4, expected 8"):
        load_checkpoint(path, expect={"model": {"base_width": 8, "blocks": [1, 1]}})
    with pytest.raises(InputError, match="'roi'"):
        load_checkpoint(path, expect={"roi": {"side_mm": 70}})
    loaded, _ = load_checkpoint(path, expect={"model": {"base_width": 4, "blocks": (1, 1)}})  # tuple == list
    assert loaded


def test_other_major_version_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_checkpoint(tmp_path / "m.safetensors", small_state(), METADATA)
    major = int(__version__.split(".")[0])
    monkeypatch.setattr(checkpoint, "__version__", f"{major + 1}.0.0")
    with pytest.raises(InputError, match="'vbiopsy_version'.*different major"):
        load_checkpoint(path)
    monkeypatch.setattr(checkpoint, "__version__", f"{major}.99.1")
    assert load_checkpoint(path)[1] == METADATA  # a minor version difference is accepted


def test_malicious_pickle_is_refused_and_never_executed(tmp_path: Path) -> None:
    proof = tmp_path / "proof_marker"
    pickle.loads(pickle.dumps(Payload(proof)))
    assert proof.exists()  # the payload really runs code when unpickled
    marker = tmp_path / "pwned_marker"
    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps({"state_dict": Payload(marker)}))
    with pytest.raises(InputError, match="never unpickles"):
        load_checkpoint(path)
    with pytest.raises(InputError):
        checkpoint_metadata(path)
    assert not marker.exists()
    torch.save({"weights": torch.zeros(2), "payload": Payload(marker)}, path)  # torch.save zip archive
    with pytest.raises(InputError, match=str(path.name)):
        load_checkpoint(path)
    assert not marker.exists()


def test_missing_corrupt_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_checkpoint(tmp_path / "absent.safetensors")
    path = save_checkpoint(tmp_path / "m.safetensors", small_state(), METADATA)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) - 40])
    with pytest.raises(InputError, match="truncated.safetensors"):
        load_checkpoint(truncated)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(InputError, match="corrupt or wrong format"):
        load_checkpoint(garbage)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(InputError, match="'vbiopsy_metadata'"):
        load_checkpoint(foreign)
    bad_json = tmp_path / "bad_json.safetensors"
    header = {"vbiopsy_metadata": "{oops", "vbiopsy_version": __version__}
    save_file({"w": torch.zeros(2)}, str(bad_json), metadata=header)
    with pytest.raises(InputError, match="not valid JSON"):
        load_checkpoint(bad_json)


def test_save_validates_and_writes_nothing_on_error(tmp_path: Path) -> None:
    target = tmp_path / "m.safetensors"
    with pytest.raises(ConfigError, match="'when'"):
        save_checkpoint(target, small_state(), {"when": object()})
    with pytest.raises(ConfigError, match="'x'"):
        save_checkpoint(target, {"x": [1.0, 2.0]}, METADATA)  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match="non-empty"):
        save_checkpoint(target, {}, METADATA)
    assert not any(tmp_path.iterdir())
    json.dumps(METADATA)  # the fixture itself is JSON
