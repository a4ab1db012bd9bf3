#!/usr/bin/env python3
"""Write a GGUF file of a GPT-2 model directory (tools/gen-gpt2's output), for llama.cpp.

    python make_gguf_gpt2.py MODEL_DIR OUT.gguf

MODEL_DIR holds config.json, model.safetensors (one file, float32) and the
GPT-2 tokenizer (vocab.json, merges.txt). Needs numpy and the `gguf` package
(tests/peers/llamacpp.txt); the safetensors file is read with numpy alone.
Tensors are named and laid out as llama.cpp's convert_hf_to_gguf.py does for
GPT-2 (its Conv1D weights transposed); the metadata adds a chat template that
joins the messages' contents, one per line, so that llama.cpp's server can
answer /v1/chat/completions with a model that has none.
"""

import json
import struct
import sys
from pathlib import Path

import gguf
import numpy as np

CHAT_TEMPLATE = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
TRANSPOSED = (".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight")
NAMES = {
    "wte.weight": "token_embd.weight", "wpe.weight": "position_embd.weight",
    "ln_f.weight": "output_norm.weight", "ln_f.bias": "output_norm.bias",
}
BLOCK = {
    "ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output",
    "ln_2": "ffn_norm", "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down",
}


def read_safetensors(path):
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    for name, t in header.items():
        if name == "__metadata__":
            continue
        if t["dtype"] != "F32":
            raise SystemExit(f"{name}: only F32 tensors are converted, not {t['dtype']}")
        lo, hi = t["data_offsets"]
        yield name, np.frombuffer(data, dtype="<f4", count=(hi - lo) // 4, offset=base + lo).reshape(t["shape"])


def gguf_name(name):
    name = name.removeprefix("transformer.")
    if name in NAMES:
        return NAMES[name]
    if name.startswith("h."):
        _, layer, rest = name.split(".", 2)
        part, kind = rest.rsplit(".", 1)
        if part in BLOCK:
            return f"blk.{layer}.{BLOCK[part]}.{kind}"
    if name == "lm_head.weight":
        return "output.weight"
    return None                         # attn.bias / masked_bias buffers


def main():
    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    cfg = json.loads((src / "config.json").read_text())
    vocab = json.loads((src / "vocab.json").read_text(encoding="utf-8"))
    merges = [line for line in (src / "merges.txt").read_text(encoding="utf-8").split("\n")
              if line and not line.startswith("#version")]
    tokens = [None] * cfg["vocab_size"]
    for tok, i in vocab.items():
        if i < len(tokens):
            tokens[i] = tok
    tokens = [t if t is not None else f"[PAD{i}]" for i, t in enumerate(tokens)]
    eos = cfg.get("eos_token_id", 50256)

    w = gguf.GGUFWriter(str(out), "gpt2")
    w.add_name("llmcgi-test-gpt2")
    w.add_context_length(cfg["n_positions"])
    w.add_embedding_length(cfg["n_embd"])
    w.add_feed_forward_length(cfg.get("n_inner") or 4 * cfg["n_embd"])
    w.add_block_count(cfg["n_layer"])
    w.add_head_count(cfg["n_head"])
    w.add_layer_norm_eps(cfg["layer_norm_epsilon"])
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if i == eos else gguf.TokenType.NORMAL for i in range(len(tokens))])
    w.add_token_merges(merges)
    w.add_bos_token_id(cfg.get("bos_token_id", eos))
    w.add_eos_token_id(eos)
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)
    for name, t in read_safetensors(src / "model.safetensors"):
        new = gguf_name(name)
        if new is None:
            continue
        if name.endswith(TRANSPOSED):
            t = t.T
        w.add_tensor(new, np.ascontiguousarray(t, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
