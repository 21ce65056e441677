import json

import pytest
import torch

from assistant.config import ModelSettings
from assistant.model.loading import load_model, pick_dtype, resolve_model
from tiny_model import TINY


def test_tiny_model_uses_the_real_tokenizer_and_chat_template():
    model, tok = load_model(ModelSettings(name=TINY))
    assert len(tok) == 49152 and model.config.vocab_size == len(tok)
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert text.endswith("<|im_start|>assistant\n")
    assert tok.pad_token is not None


def test_dtype_choice():
    from assistant.model import loading as models

    cpu = torch.device("cpu")
    assert pick_dtype("float32", cpu) == torch.float32
    assert pick_dtype("bfloat16", cpu) == torch.bfloat16
    # On a CPU without native bf16 matmul, fp32 was measured ~3x faster for generation.
    assert pick_dtype("auto", cpu) == (torch.bfloat16 if models.cpu_supports_bf16() else torch.float32)


def test_evaluation_runs_in_eval_dtype_training_and_chat_in_dtype():
    from assistant.model.loading import numerics

    settings = ModelSettings(device="cpu", dtype="bfloat16")
    assert numerics(settings, evaluation=True) == (torch.device("cpu"), torch.float32)  # the default eval_dtype
    assert numerics(settings) == (torch.device("cpu"), torch.bfloat16)
    assert numerics(ModelSettings(device="cpu", eval_dtype="auto"), evaluation=True)[1] == pick_dtype("auto", torch.device("cpu"))
    model, _ = load_model(ModelSettings(name=TINY, dtype="bfloat16"), evaluation=True)
    assert model.dtype == torch.float32


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_min_rows_is_the_row_count_from_which_linear_layers_stop_depending_on_the_batch(dtype, packed):
    from assistant.model import kernels
    from assistant.model.invariance import min_rows

    if packed and not kernels.available(dtype, "cpu"):
        pytest.skip(f"no oneDNN {dtype} linear kernel here")
    shapes = ((64, 128, packed), (128, 64, packed))
    need = min_rows(shapes, dtype, "cpu", 16)
    assert need is not None, f"{dtype} linear layers depend on the batch at every row count on this CPU"
    g = torch.Generator().manual_seed(1)
    w, x = torch.randn(128, 64, generator=g).to(dtype), torch.randn(48, 64, generator=g).to(dtype)
    linear = kernels.linear(w, packed)
    ref = linear(x)
    for m in range(need, 17):  # every row, computed m rows at a time, is the row of one big batch
        full = 48 // m * m
        assert torch.equal(torch.cat([linear(x[i:i + m]) for i in range(0, full, m)]), ref[:full])
    # Capped: from `capped` rows up to 8, every row is the row of batches of 8 (what a step capped
    # at 8 rows computes); never more rows needed than without the cap.
    capped = min_rows(shapes, dtype, "cpu", 8, most=8)
    assert capped is not None and capped <= max(need, 1)
    ref = torch.cat([linear(x[i:i + 8]) for i in range(0, 48, 8)])
    for m in range(capped, 9):
        full = 48 // m * m
        assert torch.equal(torch.cat([linear(x[i:i + m]) for i in range(0, full, m)]), ref[:full])


def test_row_blocks_make_a_packed_layer_compute_small_batches():
    """kernels.row_blocks: a packed layer's input of more rows computes in blocks of at most that
    many, each the bits of that block computed on its own, whatever its leading dimensions."""
    from assistant.model import kernels

    if not kernels.available(torch.float32, "cpu"):
        pytest.skip("no oneDNN fp32 linear kernel here")
    g = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(64, 32)
    kernels.pack_linears(torch.nn.ModuleDict({"layer": layer}))
    x = torch.randn(3, 7, 64, generator=g)
    with torch.inference_mode(), kernels.row_blocks(8):
        blocked = layer(x)
    flat = x.reshape(21, 64)
    with torch.inference_mode():
        alone = torch.cat([layer(flat[i:i + 8]) for i in (0, 8, 16)])
        assert blocked.shape == (3, 7, 32) and torch.equal(blocked, alone.view(3, 7, 32))


def test_packed_linear_layers_compute_what_the_dense_ones_do_and_free_their_weights():
    """pack_linears: every plain linear layer runs oneDNN on its packed weight, the numbers agree with
    the dense layer to rounding, a weight tied to the input embedding stays, and training is refused."""
    from assistant.model import kernels

    if not kernels.available(torch.float32, "cpu"):
        pytest.skip("no oneDNN fp32 linear kernel here")
    g = torch.Generator().manual_seed(0)
    embed = torch.nn.Embedding(50, 16)
    model = torch.nn.ModuleDict({"embed": embed, "up": torch.nn.Linear(16, 24), "head": torch.nn.Linear(16, 50, bias=False)})
    model["head"].weight = embed.weight  # tied, as in the default model
    x = torch.randn(3, 5, 16, generator=g)
    with torch.no_grad():
        before = [model["up"](x), model["head"](x)]
    assert kernels.pack_linears(model) == 2
    assert isinstance(model["up"], kernels.PackedLinear) and isinstance(model["up"], torch.nn.Linear)
    assert model["up"].weight.numel() == 0 and model["head"].weight is embed.weight  # freed, and kept
    with torch.no_grad():
        after = [model["up"](x), model["head"](x)]
    for a, b in zip(before, after):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)
    with pytest.raises(RuntimeError, match="inference only"):
        model["up"](x.requires_grad_())


def test_report_card_says_where_it_ran(tmp_path):
    from assistant import runtime

    card = runtime.report_card(generation=(torch.device("cpu"), torch.float32), training={"sft": ("cpu", "bfloat16")})
    assert card["generation"] == {"device": "cpu", "dtype": "float32"}
    assert card["training"] == {"sft": {"device": "cpu", "dtype": "bfloat16"}}
    assert card["torch"].startswith("2.") and card["transformers"] and card["peft"] and card["trl"]
    assert card["sentence_transformers"] and card["faiss"] and card["python"].count(".") == 2
    assert card["cpu"] and card["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert card["threads"] == torch.get_num_threads()
    json.dumps(card)  # plain data, ready for metrics.json
    assert runtime.git_state(tmp_path) is None  # not a checkout: absent, no error
    if (runtime.PROJECT_ROOT / ".git").exists():
        assert len(card["git"]["commit"]) == 40 and isinstance(card["git"]["dirty"], bool)


def test_unknown_model_is_a_clear_error():
    from assistant.model.loading import ModelError
    with pytest.raises(ModelError, match="'/nonexistent/folder-xyz': no such folder"):
        load_model(ModelSettings(name="/nonexistent/folder-xyz"))
    with pytest.raises(ModelError, match="cannot load model 'no-org/no-such-model'.*nothing is downloaded"):
        load_model(ModelSettings(name="no-org/no-such-model"))  # a hub id that is not in the cache


@pytest.mark.smoke
@pytest.mark.slow
def test_default_model_is_a_plain_checkpoint_that_knows_paris():
    path = resolve_model("smollm2-135m-instruct")
    config = json.loads(open(f"{path}/config.json").read())
    assert "quantization_config" not in config  # trainable and savable
    model, tok = load_model(ModelSettings())
    from assistant.model.engine import Engine
    [gen] = Engine(model, tok, max_new_tokens=16).generate([[{"role": "user", "content": "What is the capital of France?"}]])
    assert "Paris" in gen.text


def test_a_model_folder_is_built_once_when_processes_start_together(tmp_path):
    """The evaluation's workers start together on a fresh machine, each needing the converted default
    model: one converts, the others wait for it and reuse its folder (not one conversion each)."""
    import threading
    import time

    from assistant.model.loading import _build_once

    builds = []

    def build(tmp):
        builds.append(tmp)
        time.sleep(0.5)  # long enough for every other caller to arrive while it runs
        (tmp / "config.json").write_text("{}")

    target = tmp_path / "models" / "some-model"
    results = []
    threads = [threading.Thread(target=lambda: results.append(_build_once(target, build))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and results == [target] * 3 and (target / "config.json").exists()
