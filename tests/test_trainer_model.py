import math

import pytest
import torch

from trainer.model import GPT, PRESETS, GPTConfig, flops_per_token, generate, preset


@pytest.fixture
def tiny() -> GPT:
    torch.manual_seed(0)
    return GPT(preset("tiny", vocab_size=257, seq_len=32))


def test_logits_cover_the_padded_vocabulary_and_the_head_is_the_embedding(tiny):
    logits = tiny(torch.zeros(2, 32, dtype=torch.long))
    assert logits.shape == (2, 32, 320)  # 257 padded up to a multiple of 64
    assert tiny.lm_head.weight is tiny.wte.weight


def test_attention_is_causal_so_later_tokens_do_not_change_earlier_logits(tiny):
    a = torch.randint(0, 257, (1, 32))
    b = a.clone()
    b[0, 20:] = (b[0, 20:] + 1) % 257
    la, lb = tiny(a), tiny(b)
    assert torch.equal(la[0, :20], lb[0, :20])
    assert not torch.allclose(la[0, 20:], lb[0, 20:])


def test_loss_at_initialisation_is_near_uniform_over_the_vocabulary(tiny):
    idx, targets = torch.randint(0, 257, (2, 4, 32))
    loss = tiny(idx, targets).item()
    assert abs(loss - math.log(320)) < 0.1  # GPT-2 init: small logits, so ~ln(padded vocab)


def test_residual_output_projections_start_scaled_down_by_depth():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=8, d_model=256, n_head=4))
    block = model.blocks[0]
    assert block.attn.q.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert block.attn.proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert block.mlp.proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.05)


def test_gpt2_124m_preset_has_gpt2_small_parameter_count():
    with torch.device("meta"):
        model = GPT(preset("gpt2-124m", vocab_size=50257))
    assert model.num_params() == pytest.approx(124.4e6, rel=0.002)


def test_every_preset_builds_with_whole_heads():
    for name, cfg in PRESETS.items():
        assert cfg.d_model % cfg.n_head == 0, name
        with torch.device("meta"):
            GPT(cfg)


@pytest.mark.parametrize("mlp", ["gelu", "swiglu"])
def test_flops_per_token_is_six_per_matmul_weight_plus_attention(mlp):
    cfg = preset("small", vocab_size=257, mlp=mlp)
    model = GPT(cfg)
    matmul_weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    attention = 12 * cfg.n_layer * cfg.d_model * cfg.seq_len
    assert flops_per_token(cfg) == 6 * matmul_weights + attention


def test_swiglu_costs_about_what_gelu_costs():
    gelu, swiglu = (flops_per_token(preset("gpt2-124m", vocab_size=50257, mlp=m)) for m in ("gelu", "swiglu"))
    assert swiglu == pytest.approx(gelu, rel=0.02)


def test_unknown_preset_and_indivisible_heads_are_refused():
    with pytest.raises(KeyError):
        preset("gpt5")
    with pytest.raises(ValueError, match="divisible"):
        preset("tiny", n_head=3)


def test_generation_never_produces_padding_tokens(tiny):
    with torch.no_grad():
        tiny.lm_head.weight[257:] = 10.0  # make the padding rows the most likely by far
    out = generate(tiny, torch.zeros(1, 1, dtype=torch.long), 50, temperature=1.0, top_k=None,
                   generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 51)
    assert out.max().item() < 257


def test_generation_crops_the_context_to_the_models_length(tiny):
    out = generate(tiny, torch.zeros(1, 40, dtype=torch.long), 5, temperature=0)
    assert out.shape == (1, 45)
