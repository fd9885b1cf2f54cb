"""Artifacts load from safetensors and JSON only: pickles are refused, whatever their name."""

import hashlib
import io
import json
import pickle
import shutil

import pytest
import torch

from helpers.corpora import write_text
from sparklm.model.gpt import GPT, GPTConfig
from sparklm.model.memory_estimate import ModelTooLarge
from sparklm.model.weights import (
    Checkpoint,
    UnsafeArtifactError,
    check_weights,
    expected_shapes,
    load_latest_checkpoint,
    load_model,
    model_bytes,
    parse_safetensors,
    read_header,
    save_checkpoint,
)
from sparklm.runtime.errors import PipelineError
from sparklm.runtime.storage import SymlinkRefused

CONFIG = GPTConfig(vocab_size=50, context_len=8, n_layer=1, n_head=2, n_embd=16)


def test_round_trip_keeps_every_weight_and_the_tying():
    torch.manual_seed(0)
    model = GPT(CONFIG)
    loaded = load_model(model_bytes(model), CONFIG.to_dict())
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(),
                                 strict=True):  # fmt: skip
        assert torch.equal(a, b), name
    assert loaded.lm_head.weight is loaded.transformer.wte.weight


def test_round_trip_of_a_qwen3_block_with_a_separate_head():
    config = GPTConfig(vocab_size=50, context_len=8, n_layer=1, n_head=2, n_embd=16,
                       position="rope", norm="rmsnorm", mlp="swiglu", qk_norm=True,
                       tie_embeddings=False)  # fmt: skip
    torch.manual_seed(0)
    model = GPT(config)
    loaded = load_model(model_bytes(model), config.to_dict())
    assert loaded.config == config
    assert loaded.lm_head.weight is not loaded.transformer.wte.weight
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert not [n for n in model.state_dict() if "rotary" in n]  # derived from the config


class Exploit:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.parametrize(
    "payload",
    [pickle.dumps(Exploit(), protocol=2), pickle.dumps(Exploit(), protocol=5), "torch.save"],
)
def test_pickle_bearing_files_are_refused(payload, capsys):
    if payload == "torch.save":
        buffer = io.BytesIO()
        torch.save({"w": torch.zeros(2), "x": Exploit()}, buffer)
        payload = buffer.getvalue()
    with pytest.raises(UnsafeArtifactError, match="only safetensors are loaded"):
        load_model(payload, CONFIG.to_dict())
    assert "pwned" not in capsys.readouterr().out


def test_garbage_is_refused_with_a_clear_error():
    with pytest.raises(UnsafeArtifactError, match="not a valid safetensors file"):
        parse_safetensors(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}", "weights")


def test_the_header_is_checked_against_the_config_without_loading_tensors(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(model_bytes(GPT(CONFIG)))
    check_weights(str(weights), CONFIG.to_dict(), budget_gb=8, what="w")  # agrees: passes
    wider = {**CONFIG.to_dict(), "n_embd": 32}
    with pytest.raises(
        UnsafeArtifactError,
        match=r"do not match config.json .* file has F32 "
        r"\[50, 16\], config implies F32 \[50, 32\]",
    ):
        check_weights(str(weights), wider, budget_gb=8, what="w")
    deeper = {**CONFIG.to_dict(), "n_layer": 2}
    with pytest.raises(UnsafeArtifactError, match="transformer.h.1"):
        check_weights(str(weights), deeper, budget_gb=8, what="w")


def test_a_config_over_the_budget_is_refused_before_the_weights_are_read(tmp_path):
    huge = {"vocab_size": 65536, "context_len": 8192, "n_layer": 96, "n_head": 64,
            "n_embd": 8192, "dropout": 0.0}  # fmt: skip
    with pytest.raises(ModelTooLarge, match="over the memory budget of 8 GB"):
        check_weights(str(tmp_path / "never-read.safetensors"), huge, budget_gb=8, what="w")


@pytest.mark.parametrize("damage", ["truncated", "header-too-long", "pickle"])
def test_headers_that_do_not_describe_the_file_are_refused(tmp_path, damage):
    data = model_bytes(GPT(CONFIG))
    data = {"truncated": data[:-4],
            "header-too-long": (10**12).to_bytes(8, "little") + data[8:],
            "pickle": pickle.dumps({"w": 1}, protocol=4)}[damage]  # fmt: skip
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(data)
    with pytest.raises(UnsafeArtifactError, match="not a valid safetensors file|pickle"):
        read_header(str(weights), "w")


def test_expected_shapes_come_from_the_model_itself():
    shapes = expected_shapes(CONFIG)
    assert shapes == {k: list(v.shape) for k, v in GPT(CONFIG).state_dict().items()}


def checkpoint(round_index: int) -> Checkpoint:
    return Checkpoint(round=round_index, step=round_index, params=torch.zeros(3),
                      optimizer_state={}, outer_momentum=None, metrics=[], fingerprint="f",
                      started_at="t")  # fmt: skip


def test_checkpoint_pointers_and_pruning_never_leave_the_stage(tmp_path):
    stage = tmp_path / "train"
    victim = write_text(tmp_path / "victim" / "state.json", "{}").parent
    save_checkpoint(f"file://{stage}", checkpoint(1))
    pointer = stage / "checkpoints" / "latest.json"
    pointer.write_text(json.dumps({"round": 1, "folder": "../../victim", "fingerprint": "f"}))
    with pytest.raises(PipelineError, match="not a round-NNNNN folder"):
        load_latest_checkpoint(f"file://{stage}", "f")
    pointer.unlink()
    pointer.symlink_to(victim / "state.json")
    with pytest.raises(SymlinkRefused, match="latest.json is a symbolic link"):
        load_latest_checkpoint(f"file://{stage}", "f")
    pointer.unlink()
    shutil.rmtree(stage / "checkpoints" / "round-00001")
    (stage / "checkpoints" / "round-00001").symlink_to(victim, target_is_directory=True)
    save_checkpoint(f"file://{stage}", checkpoint(2))
    with pytest.raises(SymlinkRefused, match="round-00001 is a symbolic link"):
        save_checkpoint(f"file://{stage}", checkpoint(3))  # would prune round 1
    assert (victim / "state.json").read_text() == "{}"


def test_checkpoint_keeps_every_optimizer_state_vector_and_the_outer_momentum(tmp_path):
    state = {"exp_avg": torch.randn(5), "exp_avg_sq": torch.rand(5),
             "momentum_buffer": torch.randn(3)}  # fmt: skip
    ckpt = Checkpoint(round=2, step=50, params=torch.randn(8), optimizer_state=state,
                      outer_momentum=torch.randn(8), metrics=[{"round": 1}, {"round": 2}],
                      fingerprint="abc", started_at="2026-01-01T00:00:00Z")  # fmt: skip
    stage = f"file://{tmp_path}/train"
    save_checkpoint(stage, ckpt)
    loaded = load_latest_checkpoint(stage, "abc")
    assert set(loaded.optimizer_state) == set(state)
    for name, vector in state.items():
        assert torch.equal(loaded.optimizer_state[name], vector), name
    assert torch.equal(loaded.params, ckpt.params)
    assert torch.equal(loaded.outer_momentum, ckpt.outer_momentum)
    assert (loaded.round, loaded.step, loaded.metrics) == (2, 50, ckpt.metrics)
    assert load_latest_checkpoint(stage, "another run") is None


def saved_state(tmp_path, ckpt=None):
    """A stage holding one checkpoint (round 1 unless ``ckpt``), and its round folder."""
    stage = f"file://{tmp_path}/train"
    save_checkpoint(stage, ckpt or checkpoint(1))
    return stage, tmp_path / "train" / "checkpoints" / "round-00001"


def test_a_resumed_checkpoint_is_bit_identical_and_its_files_are_recorded(tmp_path):
    torch.manual_seed(0)
    ckpt = Checkpoint(round=1, step=7, params=torch.randn(6), optimizer_state={"exp_avg":
                      torch.randn(6)}, outer_momentum=torch.randn(6), metrics=[{"round": 1}],
                      fingerprint="f", started_at="t")  # fmt: skip
    stage, folder = saved_state(tmp_path, ckpt)
    loaded = load_latest_checkpoint(stage, "f")
    for a, b in [(loaded.params, ckpt.params), (loaded.outer_momentum, ckpt.outer_momentum),
                 (loaded.optimizer_state["exp_avg"], ckpt.optimizer_state["exp_avg"])]:  # fmt: skip
        assert a.dtype == b.dtype and a.numpy().tobytes() == b.numpy().tobytes()
    files = json.loads((folder.parent / "latest.json").read_text())["files"]
    for name in ("state.json", "state.safetensors"):
        data = (folder / name).read_bytes()
        assert files[name] == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_a_checkpoint_whose_tensors_were_replaced_is_refused(tmp_path):
    stage, folder = saved_state(tmp_path)
    other = Checkpoint(**{**vars(checkpoint(1)), "params": torch.ones(3)})
    save_checkpoint(f"file://{tmp_path}/other", other)
    same_size = tmp_path / "other" / "checkpoints" / "round-00001" / "state.safetensors"
    (folder / "state.safetensors").write_bytes(same_size.read_bytes())
    with pytest.raises(PipelineError, match=r"state.safetensors is damaged: its sha256 is "
                       r"[0-9a-f]{64} .* records [0-9a-f]{64} .*Delete the run's "
                       r"train/checkpoints folder"):  # fmt: skip
        load_latest_checkpoint(stage, "f")
    (folder / "state.safetensors").write_bytes(same_size.read_bytes() + b"x" * 10**6)
    with pytest.raises(PipelineError, match=r"state.safetensors is damaged: it holds "
                       r"1,000,\d+ bytes, the checkpoint pointer records \d+"):  # fmt: skip
        load_latest_checkpoint(stage, "f")  # nothing past the recorded size is read


def test_an_edited_state_json_is_refused(tmp_path):
    stage, folder = saved_state(tmp_path)
    meta = json.loads((folder / "state.json").read_text())
    (folder / "state.json").write_text(json.dumps({**meta, "started_at": "u"}))  # same size
    with pytest.raises(PipelineError, match="state.json is damaged: its sha256"):
        load_latest_checkpoint(stage, "f")
    (folder / "state.json").write_text(json.dumps({**meta, "step": 999}))
    with pytest.raises(PipelineError, match="state.json is damaged: it holds 79 bytes"):
        load_latest_checkpoint(stage, "f")


@pytest.mark.parametrize(("content", "problem"), [
    ("[]", "holds a list, not an object"),
    ('{"round": 1, "folder": "round-00', "not JSON"),
    ('{"round": 1, "folder": "round-00001"}', "lacks 'fingerprint'"),
    ('{"folder": "round-00001", "fingerprint": "f"}', "lacks 'round'"),
    ('{"round": 1, "folder": "round-00001", "fingerprint": "f", "files": []}',
     "records no size and sha256 for state.json"),
    ("x" * (2 * 1024 * 1024), "larger than"),
])  # fmt: skip
def test_a_malformed_pointer_is_a_pipeline_error_with_the_fix(tmp_path, content, problem):
    stage, folder = saved_state(tmp_path)
    (folder.parent / "latest.json").write_text(content)
    with pytest.raises(PipelineError, match=f"latest.json is damaged.*{problem}.*Delete the "
                       "run's train/checkpoints folder to train from scratch"):  # fmt: skip
        load_latest_checkpoint(stage, "f")


@pytest.mark.parametrize("key", ["fingerprint", "round"])
def test_a_state_json_for_another_run_or_round_is_refused(tmp_path, key):
    stage, folder = saved_state(tmp_path)
    pointer_file = folder.parent / "latest.json"
    pointer = json.loads(pointer_file.read_text())
    meta = json.loads((folder / "state.json").read_text())
    data = json.dumps({**meta, key: {"fingerprint": "another run", "round": 2}[key]}).encode()
    (folder / "state.json").write_bytes(data)  # its checksum recorded: only the pairing is off
    pointer["files"]["state.json"] = {"bytes": len(data),
                                      "sha256": hashlib.sha256(data).hexdigest()}  # fmt: skip
    pointer_file.write_text(json.dumps(pointer))
    with pytest.raises(PipelineError, match=f"state.json is for {key} .* the checkpoint "
                       "pointer .*Delete the run's train/checkpoints"):  # fmt: skip
        load_latest_checkpoint(stage, "f")


def test_a_pointer_without_checksums_resumes_but_not_a_mismatched_one(tmp_path, caplog):
    stage, folder = saved_state(tmp_path)  # rewritten as the older code wrote it
    pointer_file = folder.parent / "latest.json"
    pointer = json.loads(pointer_file.read_text())
    del pointer["files"]
    pointer_file.write_text(json.dumps(pointer))
    assert torch.equal(load_latest_checkpoint(stage, "f").params, torch.zeros(3))
    assert "records no checksums" in caplog.text
    pointer_file.write_text(json.dumps({**pointer, "round": 2, "folder": "round-00001"}))
    with pytest.raises(PipelineError, match="state.json is for round 1"):
        load_latest_checkpoint(stage, "f")
    (folder / "state.json").unlink()
    with pytest.raises(PipelineError, match="state.json is missing.*train from scratch"):
        load_latest_checkpoint(stage, "f")
