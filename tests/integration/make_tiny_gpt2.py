#!/usr/bin/env python3
"""Write a tiny GPT-2 model directory (Hugging Face layout) with random weights.

    python3 make_tiny_gpt2.py OUTDIR --tokenizer DIR [--seed N]

DIR holds the real GPT-2 tokenizer (vocab.json, merges.txt), normally
../shared/models/gpt2-tokenizer/. OUTDIR receives:

    config.json              GPT2LMHeadModel, n_layer=2 n_head=2 n_embd=64
                             n_positions=128 vocab_size=50257
    generation_config.json   bos/eos/pad = 50256 (<|endoftext|>)
    model.safetensors        float32 weights drawn from torch.manual_seed(seed)
    vocab.json, merges.txt   copied byte for byte from DIR
    tokenizer_config.json    GPT2Tokenizer + a minimal chat template
    special_tokens_map.json

The output is deterministic: the same seed gives byte-identical files (the
JSON is written by this script with sorted keys, the weights by
safetensors with fixed metadata), so tests and golden outputs can rely on it.

GPT-2 has no chat template; the one written here concatenates the message
contents (one per line) so that `transformers serve` can answer
/v1/chat/completions. Needs torch and safetensors (what `transformers serve`
needs anyway); transformers itself is not imported.
"""

import argparse
import json
import os
import shutil
import sys

# Plain Jinja, as transformers' apply_chat_template renders it (trim_blocks is
# on there, hence the explicit '\n'): each message's content followed by a
# newline, no role markers, nothing for the generation prompt (the model
# simply continues the text).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '\\n' }}"
    "{% endfor %}"
)

EOS_ID = 50256
EOS = "<|endoftext|>"


def config(args):
    return {
        "activation_function": "gelu_new",
        "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.0,
        "bos_token_id": EOS_ID,
        "embd_pdrop": 0.0,
        "eos_token_id": EOS_ID,
        "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05,
        "model_type": "gpt2",
        "n_ctx": args.n_positions,
        "n_embd": args.n_embd,
        "n_head": args.n_head,
        "n_inner": None,
        "n_layer": args.n_layer,
        "n_positions": args.n_positions,
        "reorder_and_upcast_attn": False,
        "resid_pdrop": 0.0,
        "scale_attn_by_inverse_layer_idx": False,
        "scale_attn_weights": True,
        "summary_activation": None,
        "summary_first_dropout": 0.0,
        "summary_proj_to_labels": True,
        "summary_type": "cls_index",
        "summary_use_proj": True,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "use_cache": True,
        "vocab_size": args.vocab_size,
    }


def weights(args):
    """GPT-2 parameters in GPT2LMHeadModel naming (Conv1D: [in, out]).

    lm_head.weight is tied to transformer.wte.weight and therefore not stored,
    as in the original GPT-2 checkpoints.
    """
    import torch

    torch.manual_seed(args.seed)
    d, v, p = args.n_embd, args.vocab_size, args.n_positions
    std = 0.02

    def normal(*shape, s=std):
        return (torch.randn(*shape, dtype=torch.float32) * s).contiguous()

    def ln(n):
        # Slightly perturbed around (1, 0) so the layer norms are not trivial.
        return (1.0 + normal(n, s=0.1)), normal(n, s=0.1)

    t = {}
    t["transformer.wte.weight"] = normal(v, d)
    t["transformer.wpe.weight"] = normal(p, d, s=0.01)
    for i in range(args.n_layer):
        h = "transformer.h.%d." % i
        t[h + "ln_1.weight"], t[h + "ln_1.bias"] = ln(d)
        t[h + "attn.c_attn.weight"] = normal(d, 3 * d)
        t[h + "attn.c_attn.bias"] = normal(3 * d)
        t[h + "attn.c_proj.weight"] = normal(d, d, s=std / (2 * args.n_layer) ** 0.5)
        t[h + "attn.c_proj.bias"] = normal(d)
        t[h + "ln_2.weight"], t[h + "ln_2.bias"] = ln(d)
        t[h + "mlp.c_fc.weight"] = normal(d, 4 * d)
        t[h + "mlp.c_fc.bias"] = normal(4 * d)
        t[h + "mlp.c_proj.weight"] = normal(4 * d, d, s=std / (2 * args.n_layer) ** 0.5)
        t[h + "mlp.c_proj.bias"] = normal(d)
    t["transformer.ln_f.weight"], t["transformer.ln_f.bias"] = ln(d)
    return t


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True, ensure_ascii=False)
        f.write("\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--tokenizer", required=True,
                    help="directory with GPT-2 vocab.json and merges.txt")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--n-layer", type=int, default=2)
    ap.add_argument("--n-head", type=int, default=2)
    ap.add_argument("--n-embd", type=int, default=64)
    ap.add_argument("--n-positions", type=int, default=128)
    ap.add_argument("--vocab-size", type=int, default=50257)
    args = ap.parse_args(argv)

    if args.n_embd % args.n_head:
        ap.error("--n-embd must be a multiple of --n-head")
    for name in ("vocab.json", "merges.txt"):
        if not os.path.isfile(os.path.join(args.tokenizer, name)):
            ap.error("%s not found in %s" % (name, args.tokenizer))

    try:
        import torch  # noqa: F401  (used by weights())
        from safetensors.torch import save_file
    except ImportError as e:
        sys.stderr.write("make_tiny_gpt2.py: needs torch and safetensors: %s\n" % e)
        return 2

    os.makedirs(args.outdir, exist_ok=True)
    out = lambda name: os.path.join(args.outdir, name)

    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(os.path.join(args.tokenizer, name), out(name))

    write_json(out("config.json"), config(args))
    write_json(out("generation_config.json"), {
        "bos_token_id": EOS_ID,
        "eos_token_id": EOS_ID,
        "pad_token_id": EOS_ID,
    })
    write_json(out("special_tokens_map.json"), {
        "bos_token": EOS, "eos_token": EOS, "pad_token": EOS, "unk_token": EOS,
    })
    write_json(out("tokenizer_config.json"), {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(EOS_ID): {
                "content": EOS, "lstrip": False, "normalized": True,
                "rstrip": False, "single_word": False, "special": True,
            },
        },
        "bos_token": EOS,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": EOS,
        "errors": "replace",
        "model_max_length": args.n_positions,
        "pad_token": EOS,
        "tokenizer_class": "GPT2Tokenizer",
        "unk_token": EOS,
    })

    tensors = weights(args)
    save_file(dict(sorted(tensors.items())), out("model.safetensors"),
              metadata={"format": "pt"})
    os.chmod(out("model.safetensors"), 0o644)
    return 0


if __name__ == "__main__":
    sys.exit(main())
