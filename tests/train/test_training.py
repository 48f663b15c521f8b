import importlib.metadata
import json
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from loravc.base.model import materialize
from loravc.base.params import BaseParams
from loravc.core.base_files import read_identity
from loravc.core.devices import cpu_bf16
from loravc.core.errors import UserError
from loravc.core.metadata import SCHEMA_VERSION, VERSION_ID_RE, environment_lock
from loravc.core.params import MAX_LENGTH
from loravc.core.quantization import QuantizationParams
from loravc.data import records as data
from loravc.evaluate.evaluation import load_base_and_adapter, perplexity
from loravc.params import Params
from loravc.prepare.params import DataParams, PrepareInputs, PrepareParams
from loravc.prepare.preparation import prepare
from loravc.train.config import sft_config
from loravc.train.lora import LoraParams, lora_config
from loravc.train.params import EarlyStoppingParams, TrainParams
from loravc.train.training import train
from loravc.versions.inspection import lora_facts
from tests.conftest import lora_rank_from_weights, needs_bitsandbytes


def test_lora_config_from_params() -> None:
    config = lora_config(LoraParams(r=4, alpha=8, dropout=0.1, target_modules=["q_proj"]))
    assert (config.r, config.lora_alpha, config.lora_dropout) == (4, 8, 0.1)
    assert set(config.target_modules) == {"q_proj"} and config.task_type == "CAUSAL_LM"


def test_cpu_defaults_autocast_bf16_only_where_native_and_have_no_checkpointing(
    tmp_path: Path, cpu_kind: str | None
) -> None:
    config = sft_config(TrainParams(seed=3, max_length=64), "cpu", tmp_path)
    assert config.bf16 is (cpu_kind is not None) and config.use_cpu is True
    assert config.gradient_checkpointing is False
    assert sft_config(TrainParams(trainer={"bf16": False}), "cpu", tmp_path).bf16 is False  # the user's word wins
    assert (config.seed, config.max_length, config.output_dir) == (3, 64, str(tmp_path))


def test_checkpointing_can_be_turned_on_by_either_name(tmp_path: Path) -> None:
    for key in ("gradient_checkpointing", "activation_checkpointing"):
        assert sft_config(TrainParams(trainer={key: True}), "cpu", tmp_path).gradient_checkpointing is True


def test_trainer_block_overrides_defaults(tmp_path: Path) -> None:
    config = sft_config(TrainParams(trainer={"learning_rate": 1.0e-3, "num_train_epochs": 2}), "cpu", tmp_path)
    assert config.learning_rate == 1.0e-3 and config.num_train_epochs == 2


def test_unknown_trainer_key_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"train\.trainer.*learnin_rate"):
        sft_config(TrainParams(trainer={"learnin_rate": 1.0}), "cpu", tmp_path)


@pytest.fixture
def prepared(tmp_path: Path, tiny_model_dir: Path) -> tuple[Path, Path]:
    base = tmp_path / "base"
    materialize(BaseParams(source=str(tiny_model_dir)), base)
    rows = [{"text": f"The statement number {i} is evaluated from left to right."} for i in range(20)]
    return base, prepare_dir(tmp_path, rows, base)


def prepare_dir(tmp_path: Path, rows: list[dict], base: Path) -> Path:
    """What the prepare stage makes of `rows` (a JSONL file): splits of 2 test, 2 validation, the rest train."""
    from transformers import AutoTokenizer

    source = tmp_path / "raw.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    split = PrepareParams(test_records=2, validation_records=2, train_records=None)
    prepared = prepare(source, PrepareInputs(DataParams(), split, MAX_LENGTH), AutoTokenizer.from_pretrained(base))
    data.write_splits(prepared.splits, tmp_path / "prepared")
    data.write_info(tmp_path / "prepared", prepared.info)
    return tmp_path / "prepared"


def test_train_keeps_freed_memory_only_when_training_in_fp32(
    tmp_path: Path, prepared: tuple[Path, Path], cpu_kind: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """glibc keeps freed memory for fp32 steps; under bf16 autocast it fragments the heap (loravc.core.devices)."""

    from loravc.train import attention, training

    calls: list[bool] = []
    monkeypatch.setattr(training, "keep_freed_memory", lambda: calls.append(True) or True)
    spans: list[int] = []  # the packed rows' example counts the cpu profile's attention saw
    varlen = attention.varlen_sdpa

    def spy(module: Any, query: Any, *args: Any, cu_seq_lens_q: Any = None, **kwargs: Any) -> Any:
        if cu_seq_lens_q is not None and module.layer_idx == 0:
            spans.append(len(cu_seq_lens_q) - 1)
        return varlen(module, query, *args, cu_seq_lens_q=cu_seq_lens_q, **kwargs)

    monkeypatch.setattr(attention, "varlen_sdpa", spy)  # register() installs the module's function
    base, prepared_dir = prepared
    params = Params(train=TrainParams(device="cpu", max_length=32, trainer={"max_steps": 1}))
    meta = train(params.train, base, prepared_dir, tmp_path / "adapter", tmp_path / "live")
    assert meta.training.trainer["bf16"] is (cpu_kind is not None)
    assert calls == ([] if cpu_kind else [True])
    # a training step's packed row reached it with its spans (TRL's cu_seq_lens): 4 examples or more
    assert spans and spans[0] >= meta.training.trainer["per_device_train_batch_size"]


def test_train_writes_a_pickle_free_version_with_metadata(tmp_path: Path, prepared: tuple[Path, Path]) -> None:
    base, prepared_dir = prepared
    params = Params(train=TrainParams(device="cpu", max_length=32, lora=LoraParams(r=4), trainer={"max_steps": 2}))
    out = tmp_path / "adapter"
    meta = train(params.train, base, prepared_dir, out, tmp_path / "live")

    names = {p.name for p in out.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "metadata.json", "tokenizer.json"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl"))]
    assert lora_rank_from_weights(out) == {4}
    assert "local_files_only" not in json.loads((out / "tokenizer_config.json").read_text())  # not env-dependent
    saved = json.loads((out / "metadata.json").read_text())
    assert saved == meta.to_dict() and saved["schema_version"] == SCHEMA_VERSION
    created = datetime.fromisoformat(meta.created).strftime("%Y%m%d_%H%M%S")
    assert VERSION_ID_RE.fullmatch(meta.version_id) and meta.version_id.startswith(f"v_{created}")
    assert meta.lora.r == 4 and meta.lora.dtype == "float32"
    assert meta.data.train_records == 16
    assert meta.data.sha256 == data.files_sha256(prepared_dir / f"{s}.jsonl" for s in ("train", "validation"))
    assert meta.base_model == read_identity(base) and meta.training.seed == 42
    # the cpu profile: varlen attention, bf16 autocast where this CPU has native bf16 (fp32 weights either way)
    native = cpu_bf16()
    assert meta.training.attention == "sdpa_varlen" and meta.training.trainer["bf16"] is (native is not None)
    assert meta.training.precision == (f"bf16 autocast ({native})" if native else "fp32")
    assert meta.libraries["trl"] == importlib.metadata.version("trl")
    assert meta.lock == environment_lock()  # the locks scripts/setup.sh recorded in this environment (None: none)
    live = json.loads((tmp_path / "live" / "metrics.json").read_text())
    assert live.pop("step") == 2  # dvclive's last step
    assert live == {key: value for key, value in vars(meta.metrics).items() if key != "extra"}
    assert meta.metrics.steps == 2
    # the recorded validation loss is the adapter's mean loss on the validation split, recomputed here
    model, tokenizer = load_base_and_adapter(base, out, "cpu")
    records = data.read_split(prepared_dir, "validation")
    recomputed = perplexity(model, tokenizer, records, max_length=32, batch_size=8)["loss"]
    assert meta.metrics.validation_loss == pytest.approx(recomputed, rel=0.05)


def test_bfloat16_lora_weights_are_saved_as_such_and_load_on_a_float32_base(
    tmp_path: Path, prepared: tuple[Path, Path]
) -> None:
    import torch

    base, prepared_dir = prepared
    lora = LoraParams(r=4, dtype="bfloat16")
    params = Params(train=TrainParams(device="cpu", max_length=32, lora=lora, trainer={"max_steps": 2}))
    meta = train(params.train, base, prepared_dir, tmp_path / "adapter", tmp_path / "live")

    assert meta.lora.dtype == "bfloat16" and lora_facts(tmp_path / "adapter")["dtypes"] == ["BF16"]
    from safetensors.torch import load_file

    from loravc.versions.inspection import _float_values

    weights = tmp_path / "adapter" / "adapter_model.safetensors"
    for key, tensor in load_file(weights).items():  # bf16 read by numpy, as `show` reads DoRA magnitudes
        assert _float_values(weights, key).tolist() == tensor.float().flatten().tolist()
    model, _ = load_base_and_adapter(base, tmp_path / "adapter", "cpu")
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # evaluation runs in fp32
    assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()


def test_lora_config_passes_all_linear_as_peft_s_shorthand() -> None:
    assert lora_config(LoraParams(target_modules=["all-linear"])).target_modules == "all-linear"


@pytest.mark.parametrize(
    ("train_params", "message"),
    [
        ({"trainer": {"learning_rate": "fast"}}, r"train\.trainer\.learning_rate must be a number, got 'fast'"),
        ({"trainer": {"num_train_epochs": 0}}, r"train\.trainer\.num_train_epochs is 0 and train\.trainer\.max_steps"),
        ({"lora": LoraParams(target_modules=["nonexistent_proj"])}, r"nonexistent_proj is not a module of the base"),
        (
            {"lora": LoraParams(target_modules="attn_q|attn_k")},
            r"target_modules 'attn_q\|attn_k' \(a regular expression",
        ),
        (
            {"lora": LoraParams(options={"modules_to_save": ["score"]})},
            r"train\.lora\.modules_to_save: score is not a module of the base \(LlamaForCausalLM\)",
        ),
    ],
    ids=["type", "zero steps", "target module", "target pattern", "module to save"],
)
def test_bad_train_params_stop_before_any_model_loads_or_checkpoint_is_discarded(
    tmp_path: Path, prepared: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, train_params: dict, message: str
) -> None:
    import transformers

    base, prepared_dir = prepared
    for auto in (transformers.AutoTokenizer, transformers.AutoModelForCausalLM):
        monkeypatch.setattr(
            auto, "from_pretrained", lambda *a, **k: pytest.fail("loaded before the params were checked")
        )
    other_run = tmp_path / "checkpoints" / "checkpoint-2"  # not this run's: would be discarded on the way to training
    other_run.mkdir(parents=True)
    params = Params(train=TrainParams(device="cpu", **train_params))
    with pytest.raises(UserError, match=message):
        train(params.train, base, prepared_dir, tmp_path / "adapter", tmp_path / "live", tmp_path / "checkpoints")
    assert other_run.is_dir() and not (tmp_path / "adapter").exists() and not (tmp_path / "live").exists()


def test_a_resumed_run_counts_the_training_time_before_the_resume(
    tmp_path: Path, prepared: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from loravc.train import checkpoints

    base, prepared_dir = prepared
    trainer = {"num_train_epochs": 2, "per_device_train_batch_size": 16}  # one step an epoch, a checkpoint each
    params = Params(train=TrainParams(device="cpu", max_length=32, trainer=trainer))
    run_dir, out, live = tmp_path / "checkpoints", tmp_path / "adapter", tmp_path / "live"
    with monkeypatch.context() as keep:
        keep.setattr(checkpoints, "clear", lambda directory: 0)  # leave both epochs' checkpoints behind
        whole = train(params.train, base, prepared_dir, out, live, run_dir)
    first, last = checkpoints.list_checkpoints(run_dir)
    assert 0 < first.train_seconds <= last.train_seconds <= whole.metrics.train_seconds + 0.01
    # As if killed in epoch 2 after an epoch 1 that took 1000 s: the resumed run adds its own time to those
    shutil.rmtree(last.path)
    marker = first.path / checkpoints.FINGERPRINT_FILE
    marker.write_text(json.dumps(json.loads(marker.read_text()) | {checkpoints.TRAIN_SECONDS: 1000.0}))

    with monkeypatch.context() as keep:
        keep.setattr(checkpoints, "clear", lambda directory: 0)
        resumed = train(params.train, base, prepared_dir, out, live, run_dir)
    assert resumed.training.resumed_from_step == first.step and resumed.metrics.steps == 2
    assert 1000.0 < resumed.metrics.train_seconds < 1000.0 + whole.metrics.train_seconds + 30
    # and the checkpoint the resumed run saves carries it on, for a second resume
    assert 1000.0 < checkpoints.list_checkpoints(run_dir)[-1].train_seconds <= resumed.metrics.train_seconds + 0.01


def test_peft_options_train_and_load_end_to_end(tmp_path: Path, prepared: tuple[Path, Path]) -> None:
    """DoRA, rsLoRA, all-linear targets and a whole saved module: trained, recorded, read from the weights,
    loaded on the base and merged with the logits check `loravc merge` applies."""
    import torch

    from loravc.export.merged import MERGE_TOLERANCE

    base, prepared_dir = prepared
    options = {"use_dora": True, "use_rslora": True, "modules_to_save": ["lm_head"]}
    lora = LoraParams(r=4, target_modules="all-linear", options=options)
    params = Params(train=TrainParams(device="cpu", max_length=32, lora=lora, trainer={"max_steps": 2}))
    with pytest.warns(UserWarning, match=r"modules_to_save stores a whole trained copy of lm_head"):
        meta = train(params.train, base, prepared_dir, tmp_path / "adapter", tmp_path / "live")
    assert meta.lora.options == options and meta.lora.target_modules == ["all-linear"]

    facts = lora_facts(tmp_path / "adapter")
    assert facts["modules"] == 14 and facts["ranks"] == [4]  # 7 linear layers x 2 blocks, not the lm_head
    assert facts["use_rslora"] and facts["scaling"] == [16 / 2]  # alpha / sqrt(r)
    assert facts["dora"]["modules"] == 14 and facts["dora"]["magnitude_min"] > 0
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    magnitudes = torch.cat([t.flatten() for k, t in saved.items() if k.endswith("lora_magnitude_vector")])
    assert facts["dora"]["magnitude_mean"] == pytest.approx(float(magnitudes.mean()), abs=1e-6)
    assert facts["dora"]["magnitude_max"] == pytest.approx(float(magnitudes.max()), abs=1e-6)
    assert list(facts["modules_to_save"]) == ["lm_head"]
    config = json.loads((base / "config.json").read_text())
    assert facts["modules_to_save"] == {"lm_head": config["vocab_size"] * config["hidden_size"] * 4}  # whole, fp32
    model, tokenizer = load_base_and_adapter(base, tmp_path / "adapter", "cpu")
    inputs = tokenizer("The statement number 3 is evaluated", return_tensors="pt")
    with torch.no_grad():
        tuned = model(**inputs).logits
        with model.disable_adapter():
            plain = model(**inputs).logits
        merged = model.merge_and_unload()(**inputs).logits
    assert (tuned - plain).abs().max() > 1e-3  # the adapter, DoRA and the saved head act
    assert (merged - tuned).abs().max() < MERGE_TOLERANCE


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_pissa_and_olora_save_an_adapter_for_the_unchanged_base(
    tmp_path: Path, tiny_model_dir: Path, init: str
) -> None:
    """PiSSA/OLoRA move part of the base into the adapter while training: the saved adapter, converted, applied
    to the base as shipped gives the trained model's logits (without the conversion it would not)."""
    import torch
    from peft import PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    from loravc.train.training import save_adapter, save_initial_adapter

    lora = LoraParams(r=4, target_modules=["q_proj", "v_proj"], options={"init_lora_weights": init})
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), lora_config(lora))
    save_initial_adapter(model, tmp_path / "initial_adapter")
    torch.manual_seed(1)
    with torch.no_grad():  # "training": every adapter weight moves
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.add_(torch.randn_like(param) * 0.05)
    inputs = torch.tensor([[5, 17, 42, 99, 3]])
    model.eval()  # no adapter dropout
    with torch.no_grad():
        trained = model(inputs).logits
    save_adapter(model, tmp_path / "adapter", None, tmp_path / "initial_adapter")
    save_adapter(model, tmp_path / "unconverted", None, None)  # PEFT would decompose the base again on load:
    config_file = tmp_path / "unconverted" / "adapter_config.json"  # as a plain LoRA pair, it is not the model
    config_file.write_text(json.dumps(json.loads(config_file.read_text()) | {"init_lora_weights": True}))

    def on_the_base(adapter: Path) -> Any:
        fresh = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter)
        with torch.no_grad():
            return fresh(inputs).logits

    assert lora_rank_from_weights(tmp_path / "adapter") == {8}  # [A | A0], [B | -B0]: twice the rank
    assert (on_the_base(tmp_path / "adapter") - trained).abs().max() < 1e-4
    assert (on_the_base(tmp_path / "unconverted") - trained).abs().max() > 1e-2


def validation_losses(model: Any, tokenizer: Any, prepared_dir: Path) -> tuple[float, float]:
    """(tuned, base) mean loss on the validation split: the loaded version, and with its adapter turned off."""
    records = data.read_split(prepared_dir, "validation")
    tuned = perplexity(model, tokenizer, records, max_length=32, batch_size=8)["loss"]
    with model.disable_adapter():
        base = perplexity(model, tokenizer, records, max_length=32, batch_size=8)["loss"]
    return tuned, base


def test_a_pissa_run_records_its_options_and_its_version_loads_on_the_base(
    tmp_path: Path, prepared: tuple[Path, Path]
) -> None:
    base, prepared_dir = prepared
    lora = LoraParams(r=4, options={"init_lora_weights": "pissa_niter_2"})
    params = Params(
        train=TrainParams(device="cpu", max_length=32, lora=lora, trainer={"max_steps": 2, "learning_rate": 1.0e-2})
    )
    meta = train(params.train, base, prepared_dir, tmp_path / "adapter", tmp_path / "live")
    assert meta.lora.options == {"init_lora_weights": "pissa_niter_2"} and meta.lora.r == 4
    assert lora_rank_from_weights(tmp_path / "adapter") == {8}
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["init_lora_weights"] is True and config["r"] == 8 and config["lora_alpha"] == 32
    # the trained model's validation loss, recomputed from the unchanged base + the saved adapter
    tuned, untuned = validation_losses(*load_base_and_adapter(base, tmp_path / "adapter", "cpu"), prepared_dir)
    assert meta.metrics.validation_loss == pytest.approx(tuned, rel=1e-4) and tuned != pytest.approx(untuned, rel=1e-4)


def early_stopping_params(**trainer: Any) -> Params:
    # A learning rate far too high: validation loss improves at first, then gets worse, and training stops
    es = EarlyStoppingParams(patience=2, eval_steps=1)
    settings = {"num_train_epochs": 4, "per_device_train_batch_size": 2, "learning_rate": 0.3, **trainer}
    return Params(train=TrainParams(device="cpu", max_length=32, early_stopping=es, trainer=settings))


def test_early_stopping_stops_and_keeps_the_best_evaluation(tmp_path: Path, prepared: tuple[Path, Path]) -> None:
    base, prepared_dir = prepared
    meta = train(early_stopping_params().train, base, prepared_dir, tmp_path / "adapter", tmp_path / "live")
    record = meta.training.early_stopping
    assert record["stopped_early"] and record["stopped_at_step"] == meta.metrics.steps < record["planned_steps"]
    assert record["best_step"] + 2 == record["stopped_at_step"]  # patience 2, an evaluation every step
    assert meta.training.trainer["load_best_model_at_end"] is True
    curve = (tmp_path / "live" / "plots" / "metrics" / "eval" / "loss.tsv").read_text().splitlines()
    assert len(curve) == record["stopped_at_step"] + 1  # a header line, an evaluation per step
    # the version holds the best evaluation's weights, not the last step's
    assert meta.metrics.validation_loss == pytest.approx(record["best_value"])
    tuned, _ = validation_losses(*load_base_and_adapter(base, tmp_path / "adapter", "cpu"), prepared_dir)
    assert tuned == pytest.approx(record["best_value"], rel=1e-4)
    last = float(curve[-1].split("\t")[-1])  # the last evaluation, worse than the best
    assert abs(tuned - record["best_value"]) < abs(tuned - last)


def test_early_stopping_resumes_after_a_kill_with_its_count(
    tmp_path: Path, prepared: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from loravc.train import checkpoints

    base, prepared_dir = prepared
    params = early_stopping_params(save_total_limit=5)  # keep every step's checkpoint, not only the best and last
    run_dir = tmp_path / "checkpoints"
    with monkeypatch.context() as keep:
        keep.setattr(checkpoints, "clear", lambda directory: 0)
        whole = train(params.train, base, prepared_dir, tmp_path / "whole", tmp_path / "live", run_dir)
    record = whole.training.early_stopping
    # killed one step before it stopped: one evaluation without improvement already counted in the checkpoint
    for checkpoint in checkpoints.list_checkpoints(run_dir):
        if checkpoint.step >= record["stopped_at_step"]:
            shutil.rmtree(checkpoint.path)
    resumed = train(params.train, base, prepared_dir, tmp_path / "resumed", tmp_path / "live", run_dir)
    assert resumed.training.resumed_from_step == record["stopped_at_step"] - 1
    assert resumed.training.early_stopping == record
    assert resumed.metrics.validation_loss == pytest.approx(whole.metrics.validation_loss, rel=1e-4)


@pytest.mark.parametrize(
    ("es", "trainer", "message"),
    [
        (
            {"eval_steps": 500},
            {},
            r"train\.early_stopping\.eval_steps is 500 but the run has at most \d+ optimizer steps",
        ),
        ({}, {"eval_strategy": "epoch"}, r"train\.trainer\.eval_strategy is set by train\.early_stopping"),
        ({"metric": "eval_bleu"}, {}, r"train\.early_stopping\.metric must be one of eval_loss"),
    ],
)
def test_bad_early_stopping_stops_before_any_model_loads(
    tmp_path: Path, prepared: tuple[Path, Path], es: dict, trainer: dict, message: str
) -> None:
    base, prepared_dir = prepared
    with pytest.raises(UserError, match=message):
        settings = EarlyStoppingParams(**{"patience": 2} | es)
        train(
            TrainParams(device="cpu", early_stopping=settings, trainer=trainer),
            base,
            prepared_dir,
            tmp_path / "adapter",
            tmp_path / "live",
        )
    assert not (tmp_path / "adapter").exists() and not (tmp_path / "live").exists()


def test_early_stopping_needs_validation_records(tmp_path: Path, prepared: tuple[Path, Path]) -> None:
    base, prepared_dir = prepared
    (prepared_dir / "validation.jsonl").write_text("")
    params = Params(train=TrainParams(device="cpu", early_stopping=EarlyStoppingParams(patience=1)))
    with pytest.raises(UserError, match=r"train\.early_stopping is on \(patience 1\) but .*validation\.jsonl holds no"):
        train(params.train, base, prepared_dir, tmp_path / "adapter", tmp_path / "live")


@pytest.mark.parametrize("bits", [4, 8])
def test_qlora_trains_on_a_quantized_base_and_loads_it_the_same_way(
    tmp_path: Path, prepared: tuple[Path, Path], bits: int
) -> None:
    """Trained on the k-bit base, evaluated and loaded on it again; merged into the full-precision one. Two epochs
    with an evaluation between them (tests/train/test_quantization.py: what an evaluation must not change)."""
    import torch

    bnb = needs_bitsandbytes()

    from loravc.export.merged import MERGE_TOLERANCE

    base, prepared_dir = prepared
    trainer = {"num_train_epochs": 2, "per_device_train_batch_size": 8, "learning_rate": 1.0e-2}
    quant = QuantizationParams(bits=bits)
    params = Params(train=TrainParams(device="cpu", max_length=32, quantization=quant, trainer=trainer))
    meta = train(params.train, base, prepared_dir, tmp_path / "adapter", tmp_path / "live")
    record = meta.training.quantization
    assert record["bits"] == bits and record["bitsandbytes"] == importlib.metadata.version("bitsandbytes")
    if bits == 4:
        assert (record["quant_type"], record["double_quant"]) == ("nf4", True)
        assert record["compute_dtype"] == ("bfloat16" if cpu_bf16() else "float32")
    model, tokenizer = load_base_and_adapter(base, tmp_path / "adapter", "cpu")  # quantized as it trained
    layer = bnb.nn.Linear4bit if bits == 4 else bnb.nn.Linear8bitLt
    assert any(isinstance(module, layer) for module in model.modules())
    tuned, untuned = validation_losses(model, tokenizer, prepared_dir)
    assert meta.metrics.validation_loss == pytest.approx(tuned, rel=1e-3) and tuned != pytest.approx(untuned, rel=1e-3)
    # merged into the full-precision base: exact against that base + adapter
    full, _ = load_base_and_adapter(base, tmp_path / "adapter", "cpu", quantized=False)
    assert not any(isinstance(module, layer) for module in full.modules())
    inputs = tokenizer("The statement number 3 is evaluated", return_tensors="pt")
    with torch.no_grad():
        expected = full(**inputs).logits
        assert (full.merge_and_unload()(**inputs).logits - expected).abs().max() < MERGE_TOLERANCE


def test_quantization_without_bitsandbytes_is_a_clear_error_before_any_model_loads(
    tmp_path: Path, prepared: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    import transformers

    base, prepared_dir = prepared
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else find_spec(name, *a)
    )
    for auto in (transformers.AutoTokenizer, transformers.AutoModelForCausalLM):
        monkeypatch.setattr(auto, "from_pretrained", lambda *a, **k: pytest.fail("loaded before the check"))
    params = Params(train=TrainParams(device="cpu", quantization=QuantizationParams(bits=4)))
    message = r"train\.quantization\.bits is 4: 4-bit bases need bitsandbytes, which is not installed: run `QLORA=1"
    with pytest.raises(UserError, match=message):
        train(params.train, base, prepared_dir, tmp_path / "adapter", tmp_path / "live")
    assert not (tmp_path / "adapter").exists() and not (tmp_path / "live").exists()


@pytest.mark.parametrize("options", [{"init_lora_weights": "pissa"}, {"use_dora": True}], ids=["pissa", "dora"])
def test_a_run_with_peft_options_resumes_after_a_kill_to_the_same_adapter(
    tmp_path: Path, prepared: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, options: dict
) -> None:
    """PiSSA decomposes the base again on the resumed run; the checkpoint's adapter must land on that, not twice."""
    from safetensors.torch import load_file

    from loravc.train import checkpoints

    base, prepared_dir = prepared
    trainer = {"num_train_epochs": 2, "per_device_train_batch_size": 16, "learning_rate": 1.0e-2}
    lora = LoraParams(r=4, dropout=0.0, options=options)
    params = Params(train=TrainParams(device="cpu", max_length=32, lora=lora, trainer={**trainer, "bf16": False}))
    run_dir = tmp_path / "checkpoints"
    with monkeypatch.context() as keep:
        keep.setattr(checkpoints, "clear", lambda directory: 0)
        whole = train(params.train, base, prepared_dir, tmp_path / "whole", tmp_path / "live", run_dir)
    shutil.rmtree(checkpoints.list_checkpoints(run_dir)[-1].path)  # killed in epoch 2
    resumed = train(params.train, base, prepared_dir, tmp_path / "resumed", tmp_path / "live", run_dir)
    assert resumed.training.resumed_from_step == 1
    a, b = (load_file(tmp_path / name / "adapter_model.safetensors") for name in ("whole", "resumed"))
    assert a.keys() == b.keys()
    assert max(float((a[key] - b[key]).abs().max()) for key in a) < 1e-5
    assert resumed.metrics.validation_loss == pytest.approx(whole.metrics.validation_loss, rel=1e-5)
