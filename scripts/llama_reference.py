"""A tiny, randomly initialised Llama checkpoint and its reference logits,
computed by Hugging Face transformers (an implementation independent of
gent's), for checking gent's safetensors loader.

    python llama_reference.py make OUT_DIR --corpus FILE [--variant gqa|tied]
        writes OUT_DIR/{config.json, model.safetensors, tokenizer.json,
        expected.json}: the checkpoint, a byte-level BPE tokenizer trained on
        FILE, and for each prompt its token ids and logits at every position.
    python llama_reference.py compare OUT_DIR GENT_JSON...
        checks each `gent llm checkpoint --logits --json` line (one per prompt)
        against OUT_DIR/expected.json: same ids, logits within 1e-4.

Variants: `gqa` has 4 query heads over 2 key/value heads, a rotary base of
500,000, an RMSNorm epsilon of 1e-6 and an untied output head, stored as f32
(the committed fixture); `tied` has one key/value head per query head, tied
embeddings and f16 storage. `llama3` is `gqa` (the same weights) with Llama
3.1's rotary scaling, over a pre-training context of 256 so that its head
width of 8 has frequencies kept, blended and slowed; `linear` is `gqa` with
linear rotary scaling written the way configs before transformers 5 write it
(`rope_theta` beside `rope_scaling`, whose type is under `type`); `mistral` is
`gqa` as a `MistralForCausalLM` with an attention window of 64 positions;
`qwen2` is `gqa`'s sizes as a `Qwen2ForCausalLM`, whose query, key and value
projections have biases (drawn like the weights, so they show in the logits),
stored as bf16.
"""
import argparse
import json
import sys

PROMPTS = [
    "[GENERATE GRAPH] service: S_000034483",
    "MS_57649 | MS_27421 | rpc",
    "zebra quantum",
]


def make(out, corpus, variant, seed):
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM,
                              Qwen2Config, Qwen2ForCausalLM)

    torch.manual_seed(seed)
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    with open(corpus, encoding="utf-8") as f:
        lines = [next(f) for _ in range(2000)]
    tok.train_from_iterator(lines, trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    tok.save(f"{out}/tokenizer.json")

    gqa = variant != "tied"
    mistral = variant == "mistral"
    extra = {"sliding_window": 64} if mistral else {}
    config_class, causal_lm = {
        "mistral": (MistralConfig, MistralForCausalLM),
        "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    }.get(variant, (LlamaConfig, LlamaForCausalLM))
    config = config_class(
        vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2 if gqa else 4,
        max_position_embeddings=1024 if variant == "llama3" else 256,
        rms_norm_eps=1e-6 if gqa else 1e-5, tie_word_embeddings=not gqa, bos_token_id=bos,
        eos_token_id=tok.token_to_id("</s>"), **extra)
    config.rope_parameters = {"rope_type": "default", "rope_theta": 500000.0 if gqa else 10000.0}
    if variant == "llama3":
        config.rope_parameters = {
            "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 256}
    model = causal_lm(config).eval()
    with torch.no_grad():
        # Weights far from the default init (std 0.02 gives near-uniform
        # logits), and norm weights that are not all ones, so every mapping
        # shows in the logits.
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p))
    # f32, but f16 for `tied` and bf16 (as Qwen2 and Llama 3 ship) for `qwen2`.
    stored = {"tied": torch.float16, "qwen2": torch.bfloat16}.get(variant, torch.float32)
    model.to(stored).save_pretrained(out, safe_serialization=True)
    if variant == "linear":
        with open(f"{out}/config.json") as f:
            saved = json.load(f)
        del saved["rope_parameters"]
        saved["rope_theta"] = 500000.0
        saved["rope_scaling"] = {"type": "linear", "factor": 4.0}
        with open(f"{out}/config.json", "w") as f:
            json.dump(saved, f, indent=2)
    # The reference is what transformers reads back from the files, in f32.
    model = causal_lm.from_pretrained(out, dtype=torch.float32).eval()
    expected = {"prompts": [], "ids": [], "logits": []}
    with torch.no_grad():
        for prompt in PROMPTS:
            ids = tok.encode(prompt).ids
            logits = model(torch.tensor([ids])).logits[0].float()
            expected["prompts"].append(prompt)
            expected["ids"].append(ids)
            expected["logits"].append([float(f"{x:.7g}") for x in logits.flatten().tolist()])
    with open(f"{out}/expected.json", "w") as f:
        json.dump(expected, f, separators=(",", ":"))


def compare(out, reports):
    with open(f"{out}/expected.json") as f:
        expected = json.load(f)
    worst = 0.0
    for prompt, ids, logits, path in zip(expected["prompts"], expected["ids"], expected["logits"], reports):
        with open(path) as f:
            got = json.loads(f.read().strip().splitlines()[-1])
        if got["prompt_ids"] != ids:
            sys.exit(f"{prompt!r}: gent's ids {got['prompt_ids']} are not the tokenizer's {ids}")
        if len(got["logits"]) != len(logits):
            sys.exit(f"{prompt!r}: {len(got['logits'])} logits, expected {len(logits)}")
        diff = max(abs(a - b) for a, b in zip(got["logits"], logits))
        worst = max(worst, diff)
        print(f"{prompt!r}: {len(ids)} tokens, max |logit difference| {diff:.2e}")
    print(f"worst {worst:.2e}")
    if worst > 1e-4:
        sys.exit("logits differ by more than 1e-4")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("out")
    m.add_argument("--corpus", required=True)
    m.add_argument("--variant", choices=["gqa", "tied", "llama3", "linear", "mistral", "qwen2"], default="gqa")
    m.add_argument("--seed", type=int, default=0)
    c = sub.add_parser("compare")
    c.add_argument("out")
    c.add_argument("reports", nargs="+")
    a = ap.parse_args()
    if a.cmd == "make":
        make(a.out, a.corpus, a.variant, a.seed)
    else:
        compare(a.out, a.reports)


if __name__ == "__main__":
    main()
