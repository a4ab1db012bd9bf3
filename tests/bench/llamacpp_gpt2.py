#!/usr/bin/env python3
"""llamacpp_gpt2 -- llama.cpp (llama-cpp-python) on a GPT-2 safetensors checkpoint: writes it as a GGUF with the `gguf` package, then times batch-1 decode. For tests/bench/cpu_decode; runs in the peer's virtual environment (llama_cpp, gguf, numpy).

Usage: llamacpp_gpt2.py MODEL_DIR GGUF_TYPE THREADS CONTEXT STEPS
  GGUF_TYPE  f32, f16, bf16 or q8_0: the type of the matrices (token_embd
             included, as llama.cpp's converter does); LayerNorms, biases and
             position_embd stay F32.
Prints one JSON line: {"decode1_tok_s", "decode1_cpu_s" (the process's CPU seconds per token, all
threads), "gguf_bytes", "llama_cpp"}.

The tensors follow llama.cpp's convert_hf_to_gguf.py for GPT2LMHeadModel:
Conv1D weights ([in][out]) transposed to [out][in], tied output from
token_embd. The vocabulary is placeholder tokens (the model is random and
is fed token ids, never text); llama.cpp's BPE loader only needs a list of
tokens and merges.
"""
import json
import os
import struct
import sys
import tempfile
import time

import numpy as np
import gguf


def read_safetensors(d):
    """name -> float32 array, from model.safetensors (F32, F16 or BF16)."""
    with open(os.path.join(d, "model.safetensors"), "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
        body = f.read()
    out = {}
    for name, t in head.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        raw = body[a:b]
        if t["dtype"] == "F32":
            x = np.frombuffer(raw, dtype=np.float32)
        elif t["dtype"] == "F16":
            x = np.frombuffer(raw, dtype=np.float16).astype(np.float32)
        elif t["dtype"] == "BF16":
            x = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            raise SystemExit(f"{name}: dtype {t['dtype']} not handled")
        out[name.removeprefix("transformer.")] = x.reshape(t["shape"])
    return out


def write_gguf(d, path, qname):
    cfg = json.load(open(os.path.join(d, "config.json")))
    W = read_safetensors(d)
    C, L, V = cfg["n_embd"], cfg["n_layer"], cfg["vocab_size"]
    F = cfg.get("n_inner") or 4 * C
    qtype = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
             "bf16": gguf.GGMLQuantizationType.BF16, "q8_0": gguf.GGMLQuantizationType.Q8_0}[qname]
    ftype = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
             "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[qname]
    w = gguf.GGUFWriter(path, "gpt2")
    w.add_context_length(cfg["n_positions"])
    w.add_embedding_length(C)
    w.add_feed_forward_length(F)
    w.add_block_count(L)
    w.add_head_count(cfg["n_head"])
    w.add_layer_norm_eps(cfg.get("layer_norm_epsilon", 1e-5))
    w.add_file_type(ftype)
    # placeholder vocabulary: V distinct tokens, the last one <|endoftext|>
    toks = [f"t{i}" for i in range(V - 1)] + ["<|endoftext|>"]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(toks)
    w.add_token_types([gguf.TokenType.NORMAL] * (V - 1) + [gguf.TokenType.CONTROL])
    w.add_token_merges(["t 1"])
    w.add_bos_token_id(V - 1)
    w.add_eos_token_id(V - 1)

    def put(name, x, matrix):
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not matrix or qtype == gguf.GGMLQuantizationType.F32:
            w.add_tensor(name, x)
        elif qtype == gguf.GGMLQuantizationType.F16:
            w.add_tensor(name, x.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(x, qtype), raw_dtype=qtype)

    put("token_embd.weight", W["wte.weight"], True)
    put("position_embd.weight", W["wpe.weight"], False)
    put("output_norm.weight", W["ln_f.weight"], False)
    put("output_norm.bias", W["ln_f.bias"], False)
    if "lm_head.weight" in W and not cfg.get("tie_word_embeddings", True):
        put("output.weight", W["lm_head.weight"], True)
    for l in range(L):
        h = f"h.{l}."
        b = f"blk.{l}."
        put(b + "attn_norm.weight", W[h + "ln_1.weight"], False)
        put(b + "attn_norm.bias", W[h + "ln_1.bias"], False)
        put(b + "attn_qkv.weight", W[h + "attn.c_attn.weight"].T, True)
        put(b + "attn_qkv.bias", W[h + "attn.c_attn.bias"], False)
        put(b + "attn_output.weight", W[h + "attn.c_proj.weight"].T, True)
        put(b + "attn_output.bias", W[h + "attn.c_proj.bias"], False)
        put(b + "ffn_norm.weight", W[h + "ln_2.weight"], False)
        put(b + "ffn_norm.bias", W[h + "ln_2.bias"], False)
        put(b + "ffn_up.weight", W[h + "mlp.c_fc.weight"].T, True)
        put(b + "ffn_up.bias", W[h + "mlp.c_fc.bias"], False)
        put(b + "ffn_down.weight", W[h + "mlp.c_proj.weight"].T, True)
        put(b + "ffn_down.bias", W[h + "mlp.c_proj.bias"], False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return V


def main():
    d, qname, threads, ctx, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    import llama_cpp
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"model-{qname}.gguf")
        V = write_gguf(d, path, qname)
        size = os.path.getsize(path)
        llm = llama_cpp.Llama(model_path=path, n_ctx=ctx + steps + 8, n_batch=max(ctx, 32), n_threads=threads,
                              n_threads_batch=threads, verbose=False)
        llm.eval([(i * 7919 + 13) % V for i in range(ctx)])   # the context cpu_bench decodes from
        t0, c0 = time.perf_counter(), time.process_time()
        for s in range(steps):
            llm.eval([(s * 31) % V])
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({"decode1_tok_s": steps / dt, "decode1_cpu_s": cpu / steps, "gguf_bytes": size,
                      "llama_cpp": llama_cpp.__version__}))


if __name__ == "__main__":
    main()
