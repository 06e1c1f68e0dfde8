"""``s2o-eval capture`` and ``s2o_eval.integration.sliding`` on a tiny random Gemma 3 (sliding + full layers), CPU, no download."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from s2o_eval.bench.capture import FORMAT, capture_layers, capturing, choose_layers, prompt_ids, read_capture
from s2o_eval.cli import app
from s2o_eval.errors import UserError
from s2o_eval.integration.sliding import sliding_window_attention
from s2o_kernels.reference import exact_reference

from tiny_models import TEXT, make_qkv, make_tokenizer, tiny_gemma_config

WINDOW = 8
LAYER_TYPES = ["sliding_attention", "full_attention", "sliding_attention", "sliding_attention", "full_attention"]
FULL_LAYERS = [1, 4]


@pytest.fixture(scope="module")
def tiny_gemma_dir(tmp_path_factory) -> Path:
    """A 5-layer random Gemma3ForCausalLM (sliding window 8; layers 1 and 4 global) with the tiny tokenizer,
    window 128 so that 256 tokens are beyond it."""
    from transformers import Gemma3ForCausalLM

    path = tmp_path_factory.mktemp("tiny-gemma")
    tokenizer = make_tokenizer(path)
    torch.manual_seed(0)
    config = tiny_gemma_config(len(tokenizer), layer_types=LAYER_TYPES, max_positions=128, sliding_window=WINDOW,
                               query_pre_attn_scalar=24)  # a scale other than head_dim ** -0.5
    Gemma3ForCausalLM(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_gemma(tiny_gemma_dir):
    from transformers import Gemma3ForCausalLM

    return Gemma3ForCausalLM.from_pretrained(tiny_gemma_dir, dtype=torch.float32, attn_implementation="sdpa").eval()


def _ids(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, 300, (1, n), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------- s2o_eval.integration.sliding

def _transformers_sliding_mask(n: int, window: int) -> torch.Tensor:
    from transformers.masking_utils import sliding_window_causal_mask_function

    allowed = sliding_window_causal_mask_function(window)
    positions = torch.arange(n)
    return allowed(torch.tensor(0), torch.tensor(0), positions[:, None], positions[None, :]).expand(n, n)


@pytest.mark.parametrize("query_chunk", [1, 7, 64])
def test_sliding_window_matches_transformers_mask(query_chunk):
    q, k, v = make_qkv(2, 50, batch=2, q_heads=6, kv_heads=3)
    mask = _transformers_sliding_mask(50, WINDOW)
    # the off-by-one: query i sees keys i-7 .. i (the window counts the query itself)
    assert mask[20].nonzero().flatten().tolist() == list(range(13, 21))
    scores = q @ k.repeat_interleave(2, dim=1).transpose(-1, -2) * 0.3
    expected = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1) @ v.repeat_interleave(2, dim=1)
    out = sliding_window_attention(q, k, v, WINDOW, 0.3, query_chunk=query_chunk)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)
    # window >= N is plain causal attention
    torch.testing.assert_close(sliding_window_attention(q, k, v, 64, 0.3, query_chunk=query_chunk),
                               exact_reference(q, k, v, 0.3), atol=1e-6, rtol=1e-5)


def test_capturing_model_logits_match_transformers(tiny_gemma, monkeypatch):
    """Sliding layers through s2o_eval.integration.sliding, global layers through causal SDPA, no mask built: the model's
    logits equal transformers' own SDPA path with its materialized sliding mask."""
    ids = _ids(50)
    with torch.no_grad():
        expected = tiny_gemma(ids).logits
        with capturing(tiny_gemma, [], stop_early=False):
            got = tiny_gemma(ids).logits
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)  # bitwise equal here; a hair of slack for other builds
    assert tiny_gemma.config._attn_implementation == "sdpa"  # restored

    import s2o_eval.bench.capture as capture_module

    # the same through several query chunks (128K runs as 128 chunks of 1024)
    monkeypatch.setattr(capture_module, "sliding_window_attention",
                        lambda q, k, v, window, scale: sliding_window_attention(q, k, v, window, scale, query_chunk=16))
    with torch.no_grad(), capturing(tiny_gemma, [], stop_early=False):
        chunked = tiny_gemma(ids).logits
    torch.testing.assert_close(chunked, expected, atol=1e-5, rtol=1e-5)

    # the comparison can fail: a window one key too wide changes the logits
    monkeypatch.setattr(capture_module, "sliding_window_attention",
                        lambda q, k, v, window, scale: sliding_window_attention(q, k, v, window + 1, scale))
    with torch.no_grad(), capturing(tiny_gemma, [], stop_early=False):
        wrong = tiny_gemma(ids).logits
    assert (wrong - expected).abs().max() > 1e-3


# ------------------------------------------------------------------------------ capture

def test_captured_qkv_reproduce_the_layer_attention(tiny_gemma):
    ids = _ids(40, seed=1)
    seen: dict[int, torch.Tensor] = {}  # each global layer's attention output, as o_proj receives it
    hooks = [tiny_gemma.model.layers[i].self_attn.o_proj.register_forward_hook(
        lambda module, args, out, i=i: seen.__setitem__(i, args[0].detach())) for i in FULL_LAYERS]
    with torch.no_grad():
        tiny_gemma(ids)
    for hook in hooks:
        hook.remove()
    captured = capture_layers(tiny_gemma, ids, FULL_LAYERS)
    assert [c.layer for c in captured] == FULL_LAYERS
    for item in captured:
        assert item.q.shape == (1, 4, 40, 32) and item.k.shape == item.v.shape == (1, 2, 40, 32)
        assert item.scaling == pytest.approx(24 ** -0.5)
        out = exact_reference(item.q, item.k, item.v, item.scaling)  # (1, Hq, N, D)
        torch.testing.assert_close(out.transpose(1, 2).reshape(1, 40, -1), seen[item.layer], atol=1e-5, rtol=1e-5)


def test_choose_layers_and_prompt_ids(tiny_gemma, tiny_gemma_dir):
    from transformers import AutoTokenizer

    assert choose_layers(tiny_gemma.config, "auto") == FULL_LAYERS
    assert choose_layers(tiny_gemma.config, "4") == [4]
    with pytest.raises(UserError, match="full-attention layers only"):
        choose_layers(tiny_gemma.config, "1,2")
    tokenizer = AutoTokenizer.from_pretrained(tiny_gemma_dir)
    ids, bos = prompt_ids(tokenizer, ["The sky is blue.", "Here we go."], 300)
    body = tokenizer("The sky is blue.\n\n", add_special_tokens=False)["input_ids"]
    assert bos and len(ids) == 300 and ids[0] == tokenizer.bos_token_id and ids[1:1 + len(body)] == body
    assert ids.count(tokenizer.bos_token_id) == 1  # repeated text, not repeated BOS


def test_capture_cli_writes_the_format(tiny_gemma_dir, tmp_path):
    text = tmp_path / "essay.txt"
    text.write_text(TEXT)
    out = tmp_path / "cap.pt"
    args = ["capture", "--model", str(tiny_gemma_dir), "--text", str(text), "--ctx", "256", "--out", str(out),
            "--device", "cpu"]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 4 and "--allow-beyond-window" in refused.output and not out.exists()
    result = CliRunner().invoke(app, [*args, "--allow-beyond-window"])
    assert result.exit_code == 0, result.output
    payload = read_capture(out)
    meta, layers = payload["meta"], payload["layers"]
    assert meta["format"] == FORMAT and meta["layers"] == FULL_LAYERS and meta["tokens"] == 256
    assert (meta["q_heads"], meta["kv_heads"], meta["head_dim"], meta["dtype"]) == (4, 2, 32, "float32")
    assert meta["beyond_window"] and meta["bos"] and meta["model"]["max_window"] == 128
    assert meta["model"]["name"] == tiny_gemma_dir.name and meta["layer_types"] == LAYER_TYPES
    assert meta["texts"][0]["path"] == str(text) and len(meta["texts"][0]["sha256"]) == 64
    assert [layer["layer"] for layer in layers] == FULL_LAYERS
    assert layers[0]["q"].shape == (1, 4, 256, 32) and layers[1]["v"].shape == (1, 2, 256, 32)
    assert layers[0]["scaling"] == pytest.approx(24 ** -0.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU here")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n,window,d", [(700, 512, 256), (333, 64, 128), (2049, 512, 64)])
def test_sliding_window_on_the_gpu_matches_the_masked_reference(dtype, n, window, d):
    """The chunked path on the GPU: fused SDPA backends with a mask, in fp16 and bf16."""
    gen = torch.Generator(device="cuda").manual_seed(n)
    q, k, v = (torch.randn(1, h, n, d, generator=gen, device="cuda", dtype=dtype) for h in (4, 1, 1))
    mask = _transformers_sliding_mask(n, window).cuda()
    scores = (q.float() @ k.float().repeat_interleave(4, dim=1).transpose(-1, -2)) * d ** -0.5
    expected = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1) @ v.float().repeat_interleave(4, dim=1)
    out = sliding_window_attention(q, k, v, window, d ** -0.5)
    torch.testing.assert_close(out.float(), expected, atol=2e-2, rtol=2e-2)
