#!/usr/bin/env python3
"""gpu_torch.py -- the peer of gpu_bench: transformers' GPT2LMHeadModel on the same model directory, same dtype,
same batches, contexts, steps and prompts, on torch's own device; prints one JSON object (tests/bench/gpu_decode).

  python3 gpu_torch.py --model DIR [--device cuda] [--batches 1,8,64,256] [--contexts 128,1024] [--steps 16]
                       [--warmup 2] [--prompt 512] [--prefill-batches 1,8] [--reps 3] [--compile]
                       [--budget SECONDS]

Decode at batch B and context c, as gpu_bench does it: a prefill of c - warmup - steps random tokens per
sequence through model.transformer (the KV cache, no logits), then warmup + steps single-token steps through
the whole model with that cache (transformers' DynamicCache), each step's last logits copied to the host as
F32 (what llmcgi's step returns), the median of the timed steps reported. --compile runs the same decode
steps through torch.compile(model) too (each entry gets compile_us, or compile_error); --budget stops
starting new measurements after that many seconds (the rest are left out, and "truncated" says so)."""
import argparse
import json
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batches", default="1,8,64,256")
    ap.add_argument("--contexts", default="128,1024")
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--prefill-batches", default="1,8")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--budget", type=float, default=1e9)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    t_start = time.time()
    out = {"decode": [], "prefill": [], "truncated": False}
    try:
        import torch
        import transformers
        from transformers import GPT2LMHeadModel
    except Exception as e:  # noqa: BLE001
        out["error"] = f"torch/transformers not importable: {e}"
        print(json.dumps(out))
        return 0
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    cfg = json.load(open(f"{a.model}/config.json"))
    dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[
        cfg.get("torch_dtype") or cfg.get("dtype") or "float32"]
    try:
        model = GPT2LMHeadModel.from_pretrained(a.model, dtype=dtype, attn_implementation="sdpa")
    except TypeError:
        model = GPT2LMHeadModel.from_pretrained(a.model, torch_dtype=dtype, attn_implementation="sdpa")
    model = model.to(dev).eval()
    out.update(torch=torch.__version__, transformers=transformers.__version__, dtype=str(dtype).replace("torch.", ""),
               device=torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
               attn_implementation=getattr(model.config, "_attn_implementation", None))
    V = model.config.vocab_size
    gen = torch.Generator(device="cpu").manual_seed(1234)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def rand_ids(*shape):
        return torch.randint(0, V, shape, generator=gen).to(dev)

    def decode(fwd, B, ctx):
        pre = ctx - a.warmup - a.steps
        with torch.inference_mode():
            pkv = model.transformer(rand_ids(B, pre), use_cache=True).past_key_values
            times = []
            for k in range(a.warmup + a.steps):
                tok = rand_ids(B, 1)
                sync()
                t = time.perf_counter()
                o = fwd(input_ids=tok, past_key_values=pkv, use_cache=True)
                pkv = o.past_key_values
                o.logits[:, -1].float().cpu()
                sync()
                if k >= a.warmup:
                    times.append(time.perf_counter() - t)
        del pkv
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        return statistics.median(times) * 1e6

    batches = [int(x) for x in a.batches.split(",")]
    contexts = [int(x) for x in a.contexts.split(",")]
    compiled, compile_error = None, None
    if a.compile:
        try:
            compiled = torch.compile(model, dynamic=True)
        except Exception as e:  # noqa: BLE001
            compile_error = str(e)[:300]
    for ctx in contexts:
        for B in batches:
            if time.time() - t_start > a.budget:
                out["truncated"] = True
                break
            e = {"batch": B, "context": ctx}
            try:
                e["us_per_step"] = round(decode(model, B, ctx), 1)
            except Exception as ex:  # noqa: BLE001 (out of memory, say): recorded, the rest goes on
                e["error"] = str(ex)[:300]
            if a.compile and compiled is not None and time.time() - t_start < a.budget:
                try:
                    e["compile_us"] = round(decode(compiled, B, ctx), 1)
                except Exception as ex:  # noqa: BLE001
                    compile_error = str(ex)[:300]
                    compiled = None
            if compile_error:
                e["compile_error"] = compile_error
            out["decode"].append(e)
            print(json.dumps(e), file=sys.stderr, flush=True)
    for pb in [int(x) for x in a.prefill_batches.split(",")]:
        if time.time() - t_start > a.budget:
            out["truncated"] = True
            break
        times = []
        with torch.inference_mode():
            for r in range(a.reps + 1):
                ids = rand_ids(pb, a.prompt)
                sync()
                t = time.perf_counter()
                h = model.transformer(ids, use_cache=True).last_hidden_state
                model.lm_head(h[:, -1]).float().cpu()
                sync()
                if r:
                    times.append(time.perf_counter() - t)
        us = statistics.median(times) * 1e6
        out["prefill"].append({"batch": pb, "prompt": a.prompt, "us_per_step": round(us, 1),
                               "tokens_per_s": round(pb * a.prompt / (us * 1e-6), 1)})
    out["seconds"] = round(time.time() - t_start, 1)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
