"""BESTOW-GPT on tiny random causal LMs (GPT-2, Llama, Qwen2): loss per modality, freezing, the speech
cross-attention, KV-cache decoding against no-cache references, generation_config EOS ids, local
backbones with their own tokenizers (built offline), export."""

import dataclasses
from pathlib import Path

import pytest
import torch

from nemo_emmett.export import export_model, read_meta, restore_model
from nemo_emmett.models.bestow_gpt import BestowGpt, position_ids
from nemo_emmett.parts.decoding import beam_search
from tests.conftest import LINES, TINY_PERCEPTION
from tests.models.test_salm_t5 import audio_batch, one_step, text_batch

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_GPT2 = {"model_type": "gpt2", "n_embd": 32, "n_layer": 1, "n_head": 4, "n_inner": 64, "n_positions": 64}
TINY_LLAMA = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64}
TINY_QWEN2 = {**TINY_LLAMA, "model_type": "qwen2"}


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NEMO_EMMETT_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def cfg(spm_path) -> dict:
    return {"tokenizer": {"spm_path": spm_path}, "backbone": {"config": dict(TINY_GPT2)},
            "perception": dict(TINY_PERCEPTION), "cross_attention": {"num_layers": 1, "num_heads": 4, "ff_dim": 32},
            "optim": {"optimizer": {"_target_": "torch.optim.AdamW", "lr": 1e-2}, "lr_scheduler": None},
            "decoding": {"max_new_tokens": 12}}


def talkative(model: BestowGpt) -> BestowGpt:
    """Random weights large enough that a tiny model says varied things (and sometimes EOS)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("backbone.") and "norm" not in name and "ln_" not in name:
                p.normal_(0.0, 0.5)
    return model.eval()


def test_defaults_freeze_the_backbone_and_an_audio_step_trains_the_rest(cfg):
    model = BestowGpt({k: v for k, v in cfg.items()}).train()  # typed default: freeze the LLM
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in model.named_parameters() if n.startswith("backbone.")}
    loss, per_task, changed = one_step(model, audio_batch(model))
    assert torch.isfinite(loss) and set(per_task) == {"asr", "st", "ctc"}
    assert not changed & frozen
    assert any(n.startswith("cross_attention.") for n in changed)
    assert any(n.startswith("perception.adapter.") for n in changed)


def test_text_step_skips_the_cross_attention(cfg):
    model = BestowGpt({**cfg, "freeze": [r"backbone\.transformer\.h\.0\.mlp\..*"]}).train()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    model.cross_attention.forward = None  # would raise if called
    loss, per_task, changed = one_step(model, text_batch(model))
    assert torch.isfinite(loss) and set(per_task) == {"mt"}
    assert frozen and not changed & frozen
    assert any(n.startswith("backbone.") for n in changed)
    assert not any(n.startswith(("cross_attention.", "perception.")) for n in changed)


def test_a_frozen_llm_without_lora_refuses_text_batches_clearly(cfg):
    model = BestowGpt(cfg).train()
    with pytest.raises(ValueError, match="text batch.*frozen.*lora"):
        model.training_step(text_batch(model), 0)


def test_loss_covers_the_answer_only_and_the_speech_is_read(cfg):
    model = talkative(BestowGpt(cfg))
    batch = audio_batch(model)
    logits, _ = model.logits(batch)
    assert logits.shape[:2] == batch.target_ids.shape  # scores for the answer tokens, nothing else
    ids, mask = model.context_ids(batch)
    pos = position_ids(mask)
    speech, _ = model.speech(batch)
    x, _ = model.input_embeddings(ids, mask, pos, speech)
    assert x.shape == (*ids.shape, model.backbone_dim)  # the prompt's shape
    other = audio_batch(model, seed=1)
    x_other, _ = model.input_embeddings(ids, mask, pos, model.speech(other)[0])
    assert not torch.allclose(x, x_other)
    assert not torch.allclose(logits, model.logits(other)[0])


def alone(batch, b):
    """Example ``b`` of a batch as a batch of one, without padding."""
    one = batch.take_rows(torch.tensor([b]))
    lens = [f.name for f in dataclasses.fields(one) if f.name.endswith("_lens") and getattr(one, f.name) is not None]
    for key in lens:
        data = "audio" if key == "audio_lens" else key.replace("_lens", "_ids")
        setattr(one, data, getattr(one, data)[:, : int(getattr(one, key)[0])])
    return one


@pytest.mark.parametrize("backbone", [TINY_GPT2, TINY_LLAMA], ids=["gpt2", "llama"])
def test_left_padding_gives_each_example_what_it_gets_alone(cfg, backbone):
    model = talkative(BestowGpt({**cfg, "backbone": {"config": dict(backbone)}}))
    with torch.no_grad():
        for batch in (text_batch(model), audio_batch(model)):
            logits, _ = model.logits(batch)
            for b in range(len(batch)):
                u = int(batch.target_lens[b])
                assert torch.allclose(logits[b, :u], model.logits(alone(batch, b))[0][0], atol=1e-4)


def no_cache_step(model, batch):
    """The decoding step recomputed from scratch through the teacher-forced path (``logits``)."""
    def run(prefixes):
        U = max(len(p) for p in prefixes) + 1
        rows = [batch_index for batch_index, _ in prefixes]
        sub = dataclasses.replace(batch.take_rows(torch.tensor(rows)),
                                  target_ids=torch.tensor([[*p, 0] + [0] * (U - 1 - len(p)) for _, p in prefixes]),
                                  target_lens=torch.tensor([len(p) + 1 for _, p in prefixes]))
        logits, _ = model.logits(sub)
        return torch.stack([logits[i, len(p)] for i, (_, p) in enumerate(prefixes)]).log_softmax(-1)

    def step(tokens, state):
        state = [(i, [*p, int(t)]) for (i, p), t in zip(state, tokens)]
        return run(state), state

    def reorder(state, index):
        return [(state[k][0], list(state[k][1])) for k in index.tolist()]

    start = [(i, []) for i in range(len(batch))]
    return run(start), start, step, reorder


@pytest.mark.parametrize("backbone", [TINY_GPT2, TINY_LLAMA], ids=["gpt2", "llama"])
def test_kv_cache_decoding_matches_a_no_cache_reference(cfg, backbone):
    model = talkative(BestowGpt({**cfg, "backbone": {"config": dict(backbone)}}))
    eos, n = model.text.eos_id, model.cfg.decoding.max_new_tokens
    with torch.no_grad():
        for batch in (text_batch(model), audio_batch(model)):
            greedy = model.generate_ids(batch)
            log_probs, start, step, reorder = no_cache_step(model, batch)
            reference = []
            for b in range(len(batch)):  # greedy by recomputing the whole sequence every step
                seq = []
                lp = log_probs[b]
                for _ in range(n):
                    tok = int(lp.argmax())
                    if tok == eos:
                        break
                    seq.append(tok)
                    lp = step(torch.tensor([tok]), [(b, seq[:-1])])[0][0]
                reference.append(seq)
            assert greedy == reference
            assert any(greedy)

            model.cfg.decoding.beam_size = 1
            assert model.generate_ids(batch) == greedy
            model.cfg.decoding.beam_size = 3
            beam = model.generate_ids(batch)
            model.cfg.decoding.beam_size = 1
            assert beam == beam_search(step, reorder, log_probs, start, beam_size=3, eos_id=eos, max_new_tokens=n,
                                       length_penalty=model.cfg.decoding.length_penalty)


def byte_level_bpe(folder):
    """vocab and merges of a tiny byte-level BPE (GPT-2's and Qwen2's kind) trained on ``LINES``."""
    import json

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(LINES, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|im_end|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    vocab_file, merges_file = (Path(f) for f in tok.model.save(str(folder)))
    merges = [tuple(line.split()) for line in merges_file.read_text().splitlines() if not line.startswith("#")]
    return json.loads(vocab_file.read_text()), merges


def family_tokenizer(family, folder):
    """The family's own tokenizer class, built offline: GPT-2 (EOS = BOS, no pad), Qwen2 (EOS
    <|im_end|>, pad <|endoftext|>, no BOS), Llama (from a SentencePiece BPE model: <s>, </s>, no pad)."""
    from transformers import GPT2Tokenizer, LlamaTokenizer, Qwen2Tokenizer

    if family == "llama":
        import sentencepiece as spm

        spm.SentencePieceTrainer.train(sentence_iterator=iter(LINES * 3), model_prefix=str(folder / "tokenizer"),
                                       vocab_size=80, model_type="bpe", user_defined_symbols=["<de>", "<en>"],
                                       unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
        return LlamaTokenizer.from_pretrained(folder)  # converted from folder/tokenizer.model
    vocab, merges = byte_level_bpe(folder)
    if family == "gpt2":
        return GPT2Tokenizer(vocab=vocab, merges=merges)
    return Qwen2Tokenizer(vocab=vocab, merges=merges, eos_token="<|im_end|>", pad_token="<|endoftext|>")


FAMILIES = {"gpt2": TINY_GPT2, "llama": TINY_LLAMA, "qwen2": TINY_QWEN2}


@pytest.fixture(scope="module")
def family_folders(tmp_path_factory) -> dict[str, str]:
    """{family: a local folder with a tiny random-init LLM and its tokenizer}, as save_pretrained writes.
    Qwen2's generation_config ends at <|im_end|> or <|endoftext|>, as Qwen2 chat models ship."""
    from transformers import AutoConfig, AutoModelForCausalLM

    out = {}
    for family, shape in FAMILIES.items():
        folder = tmp_path_factory.mktemp(family)
        tok = family_tokenizer(family, folder)
        hf_cfg = AutoConfig.for_model(**shape, vocab_size=len(tok), eos_token_id=tok.eos_token_id,
                                      bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id)
        torch.manual_seed(0)
        llm = AutoModelForCausalLM.from_config(hf_cfg)
        if family == "qwen2":
            llm.generation_config.eos_token_id = [tok.eos_token_id, tok.pad_token_id]
        llm.save_pretrained(folder)
        tok.save_pretrained(folder)
        out[family] = str(folder)
    return out


# GPT-2's Conv1D takes no LoRA (parts/lora.py adapts nn.Linear): there the whole LLM trains.
TRAINING = {"gpt2": {"freeze": []},
            "llama": {"lora": {"targets": [r"backbone\..*\.(q_proj|v_proj)"], "r": 2, "alpha": 4.0}},
            "qwen2": {"lora": {"targets": [r"backbone\..*\.(q_proj|v_proj)"], "r": 2, "alpha": 4.0}}}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_local_llm_and_its_tokenizer_train_and_decode(cfg, family_folders, family):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = family_folders[family]
    model = BestowGpt({**cfg, "tokenizer": {}, "backbone": {"pretrained_path": folder}, **TRAINING[family]}).eval()
    reference = AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    assert type(tok).__name__.lower().startswith(family)  # the family's own tokenizer class came back
    ids = torch.tensor([[5, 6, 7, 3]])
    with torch.no_grad():
        assert torch.allclose(model.backbone(input_ids=ids).logits, reference(input_ids=ids).logits, atol=1e-6)
    assert model.text.hf_path == folder and model.text.vocab_size == len(tok)
    assert model.text.pad_id == (tok.pad_token_id if family == "qwen2" else tok.eos_token_id)  # no pad: EOS pads
    if family == "qwen2":
        assert model.eos_ids() == [tok.eos_token_id, tok.pad_token_id]  # <|im_end|>, then generation_config's
    trainable = {n for n, p in model.named_parameters() if p.requires_grad and n.startswith("backbone.")}
    assert trainable and (family == "gpt2" or all("lora_" in n for n in trainable))

    model.train()
    text = text_batch(model)
    assert text.prompt_ids.shape[1] > 1 or family == "llama"  # "<de>" is several BPE tokens (one in Llama's)
    loss, per_task, changed = one_step(model, text)
    assert torch.isfinite(loss) and set(per_task) == {"mt"}
    assert changed and changed <= trainable
    loss, per_task, changed = one_step(model, audio_batch(model))
    assert torch.isfinite(loss) and set(per_task) == {"asr", "st", "ctc"}
    assert any(n.startswith("cross_attention.") for n in changed) and changed & trainable

    model.eval()
    for beam in (1, 2):
        model.cfg.decoding.beam_size = beam
        for batch in (text, audio_batch(model)):
            hyps = model.generate_ids(batch)
            assert len(hyps) == len(batch) and all(0 <= t < len(tok) for h in hyps for t in h)
            assert all(isinstance(h, str) for h in model.translate_batch(batch))


def test_decoding_stops_at_a_generation_config_eos_that_is_not_the_tokenizers(cfg):
    model = talkative(BestowGpt(cfg))
    for batch in (text_batch(model), audio_batch(model)):
        with torch.no_grad():
            free = model.generate_ids(batch)
        stop = next(t for h in free for t in h[1:])  # a token some hypothesis says after its first one
        assert stop != model.text.eos_id
        model.backbone.generation_config.eos_token_id = [model.text.eos_id, stop]
        assert model.eos_ids() == [model.text.eos_id, stop]
        with torch.no_grad():
            assert model.generate_ids(batch) == [h[: h.index(stop)] if stop in h else h for h in free]
            model.cfg.decoding.beam_size = 3
            assert all(stop not in h for h in model.generate_ids(batch))
        model.cfg.decoding.beam_size = 1
        model.backbone.generation_config.eos_token_id = model.text.eos_id  # an int, as GPT-2 ships it
        assert model.eos_ids() == [model.text.eos_id]


def test_encoder_decoder_backbones_are_refused_clearly(cfg):
    with pytest.raises(ValueError, match="decoder-only"):
        BestowGpt({**cfg, "backbone": {"config": {"model_type": "t5", "d_model": 32, "num_layers": 1}}})


@pytest.mark.parametrize("variant", ["gpt2", "llama+lora"])
def test_export_then_restore_gives_the_same_model(cfg, tmp_path, variant):
    if variant == "llama+lora":
        cfg = {**cfg, "backbone": {"config": dict(TINY_LLAMA)},
               "lora": {"targets": [r"backbone\..*\.(q_proj|v_proj)"], "r": 2, "alpha": 4.0}}
    model = talkative(BestowGpt(cfg))
    if variant == "llama+lora":
        assert {n for n, p in model.named_parameters() if p.requires_grad and n.startswith("backbone.")}
        assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad and n.startswith("backbone."))
    path = export_model(model, tmp_path / "m.emmett")
    restored = restore_model(path)
    assert type(restored) is BestowGpt and read_meta(path)["model_class"] == "nemo_emmett.models.bestow_gpt.BestowGpt"
    for batch in (text_batch(model), audio_batch(model)):
        with torch.no_grad():
            assert torch.equal(model.logits(batch)[0], restored.logits(batch)[0])
        hyps = model.translate_batch(batch)
        assert hyps == restored.translate_batch(batch) and any(hyps)


def test_translate_cli_runs_an_exported_bestow_model(cfg, tmp_path, capsys):
    import nemo_emmett.cli.translate as cli
    from nemo_emmett import inference
    model = talkative(BestowGpt(cfg))
    path = export_model(model, tmp_path / "bestow.emmett")
    lines = ["three hundred and nine", "two"]
    assert cli.main(["--model", str(path), "--text", lines[0], "--text", lines[1], "--source-lang", "en",
                     "--target-lang", "de", "--beam-size", "2", "--no-progress"]) == 0
    model.cfg.decoding.beam_size = 2
    assert capsys.readouterr().out.split("\n") == [*inference.translate_texts(model, lines, "en", "de", progress=False), ""]
