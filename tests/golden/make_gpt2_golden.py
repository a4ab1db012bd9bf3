#!/usr/bin/env python3
"""make_gpt2_golden.py -- golden outputs of Hugging Face transformers for llmcgi's CPU engine tests.

For each model shape and dtype below, tools/gen-gpt2 writes a deterministic
random-weight GPT-2 checkpoint; transformers' GPT2LMHeadModel (float32, eager
attention) then runs 20 prompts (ids from the real GPT-2 tokenizer) and we
keep, per prompt:
  - the last position's logits at 256 fixed vocabulary indices and the top 16,
  - statistics over the whole vocabulary row (max |z|, mean, RMS, logsumexp),
  - 64 greedy tokens (argmax, no EOS stop) and the smallest top-1/top-2 margin
    seen along the way (a near-tie would make token identity meaningless).
tests/unit/test_gpt2_cpu.c regenerates the same checkpoints with the same
generator and compares. Run (needs torch and transformers, e.g. from PyPI):

  python3 tests/golden/make_gpt2_golden.py --gen BUILD/tools/gen-gpt2 \
      --tokenizer ../shared/models/gpt2-tokenizer --out tests/golden/gpt2_golden.json

With --model DIR it records a trained model instead (the shipped one, with its
own tokenizer; tests/integration/test_shipped_model.py checks it):

  python3 tests/golden/make_gpt2_golden.py --model models/llmcgi-tiny \
      --out tests/golden/llmcgi_tiny_golden.json
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

import torch
import transformers
from transformers import GPT2LMHeadModel, GPT2TokenizerFast

SHAPES = [
    # name, layers, heads, embd, positions, seed, std (of the weights; a
    # narrow model needs a larger one for its logits to spread as widely)
    ("tiny", 2, 4, 64, 256, 11, "0.25"),
    ("124M", 12, 12, 768, 1024, 7, "0.08"),
]
DTYPES = ["f32", "f16", "bf16"]
NEW_TOKENS = 64
N_IDX = 256
# Greedy identity only means something when transformers' own top two logits
# are further apart than float noise: a model whose greedy paths come closer
# than this anywhere is regenerated with the next seed (the seed used is
# recorded). Our logits differ from transformers' by ~5e-5 at most (124M).
MIN_MARGIN = 2e-4
SEED_TRIES = 10

PROMPTS = [
    "Hello",
    "The quick brown fox jumps over the lazy dog.",
    "In the beginning God created the heaven and the earth.",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "Once upon a time, in a land far, far away, there lived a",
    "   leading spaces and\ttabs\n\nand blank lines",
    "Numbers: 3.14159, 2.71828, 1,000,000 and 42!",
    "Ünïcödé and emoji 🙂👍🏽 and CJK 漢字かな",
    "<|endoftext|>A new document starts here",
    "Q: What is the capital of France?\nA:",
    "I'm sure they'll say it's fine, but we'd better check.",
    "SELECT name, email FROM users WHERE id = 7 ORDER BY name;",
    "a",
    "\n",
    "The the the the the the the the the the",
    "To be, or not to be, that is the question: Whether 'tis nobler in the mind to suffer "
    "the slings and arrows of outrageous fortune, or to take arms against a sea of troubles "
    "and by opposing end them. To die: to sleep; no more; and by a sleep to say we end the "
    "heart-ache and the thousand natural shocks that flesh is heir to.",
    "{\"model\": \"gpt2\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}",
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was "
    "the age of foolishness, it was the epoch of belief, it was the epoch of incredulity, it "
    "was the season of Light, it was the season of Darkness, it was the spring of hope, it "
    "was the winter of despair, we had everything before us, we had nothing before us, we "
    "were all going direct to Heaven, we were all going direct the other way",
    "#include <stdio.h>\nint main(void) { printf(\"hello\\n\"); return 0; }",
    "Ask not what your country can do for you",
]


def fixed_indices(vocab, n, seed=2024):
    """n distinct vocabulary indices from a small LCG, so C can check the same ones."""
    out, seen, x = [], set(), seed
    while len(out) < n:
        x = (x * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        i = (x >> 33) % vocab
        if i not in seen:
            seen.add(i)
            out.append(int(i))
    return out


def f9(v):
    """A float32 value in 9 significant digits: exact for float32, short in JSON."""
    return float("%.9g" % float(v))


@torch.no_grad()
def run_model(model, ids, idx):
    out = model(torch.tensor([ids]), use_cache=True)
    z = out.logits[0, -1].double()
    rec = {
        "ids": ids,
        "at_idx": [f9(z[i]) for i in idx],
        "top": [[int(i), f9(z[i])] for i in torch.topk(z, 16).indices],
        "absmax": f9(z.abs().max()),
        "mean": f9(z.mean()),
        "rms": f9(torch.sqrt((z * z).mean())),
        "lse": f9(torch.logsumexp(z, 0)),
    }
    # Greedy, no EOS stop: argmax (first index on ties), one token at a time with the KV cache.
    past, greedy, margins = out.past_key_values, [], []
    logits = out.logits[0, -1]
    for _ in range(NEW_TOKENS):
        top2 = torch.topk(logits, 2)
        margins.append(float(top2.values[0] - top2.values[1]))
        nxt = int(torch.argmax(logits))
        greedy.append(nxt)
        out = model(torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
        past, logits = out.past_key_values, out.logits[0, -1]
    rec["greedy"] = greedy
    rec["margin_min"] = f9(min(margins))
    # How many leading greedy tokens are certain: a trained model's path may
    # pass a near-tie, after which float noise may pick either token.
    rec["stable"] = next((i for i, m in enumerate(margins) if m < MIN_MARGIN), len(margins))
    return rec


def trained_model(path, out):
    """The same records for a trained model directory (its own tokenizer), e.g. models/llmcgi-tiny."""
    tok = GPT2TokenizerFast.from_pretrained(path)
    model = GPT2LMHeadModel.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
    cfg = model.config
    idx = fixed_indices(cfg.vocab_size, N_IDX)
    recs = [run_model(model, tok(p)["input_ids"], idx) for p in PROMPTS]
    for p, r in zip(PROMPTS, recs):
        r["prompt"] = p
        r["text"] = tok.decode(r["greedy"])
        print(f"{r['stable']:2d}/{NEW_TOKENS} certain: {p[:30]!r} -> {r['text'][:50]!r}", file=sys.stderr)
    golden = {
        "made_by": "tests/golden/make_gpt2_golden.py --model",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "new_tokens": NEW_TOKENS,
        "min_margin": MIN_MARGIN,
        "indices": idx,
        "models": [{"name": os.path.basename(os.path.normpath(path)), "layers": cfg.n_layer, "heads": cfg.n_head,
                    "embd": cfg.n_embd, "positions": cfg.n_positions, "vocab": cfg.vocab_size,
                    "dtype": str(cfg.dtype).replace("torch.", ""), "prompts": recs}],
    }
    with open(out, "w") as f:
        json.dump(golden, f, separators=(",", ":"))
        f.write("\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", help="a trained model directory: its records instead of the generated shapes")
    ap.add_argument("--gen", help="path to the built tools/gen-gpt2")
    ap.add_argument("--tokenizer", help="directory with GPT-2's vocab.json and merges.txt")
    ap.add_argument("--out", required=True)
    ap.add_argument("--shapes", default=",".join(s[0] for s in SHAPES))
    ap.add_argument("--dtypes", default=",".join(DTYPES))
    ap.add_argument("--update", action="store_true",
                    help="keep the other models already in --out; replace only those made now")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    if args.model:
        return trained_model(args.model, args.out)
    if not args.gen or not args.tokenizer:
        ap.error("--gen and --tokenizer are needed unless --model is given")
    tok = GPT2TokenizerFast.from_pretrained(args.tokenizer)
    prompt_ids = [tok(p)["input_ids"] for p in PROMPTS]
    idx = fixed_indices(50257, N_IDX)
    golden = {
        "made_by": "tests/golden/make_gpt2_golden.py",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "new_tokens": NEW_TOKENS,
        "indices": idx,
        "models": [],
    }
    wanted, wanted_dt = args.shapes.split(","), args.dtypes.split(",")
    if args.update and os.path.exists(args.out):
        with open(args.out) as f:
            old = json.load(f)
        golden["models"] = [m for m in old["models"] if not (m["name"] in wanted and m["dtype"] in wanted_dt)]
    for name, layers, heads, embd, positions, seed0, std in SHAPES:
        if name not in wanted:
            continue
        for dtype in DTYPES:
            if dtype not in wanted_dt:
                continue
            for seed in range(seed0, seed0 + SEED_TRIES):
                with tempfile.TemporaryDirectory() as d:
                    cmd = [args.gen, "--out", d, "--layers", str(layers), "--heads", str(heads),
                           "--embd", str(embd), "--positions", str(positions), "--vocab", "50257",
                           "--dtype", dtype, "--seed", str(seed), "--std", std]
                    subprocess.run(cmd, check=True)
                    model = GPT2LMHeadModel.from_pretrained(d, torch_dtype=torch.float32,
                                                            attn_implementation="eager")
                    model.eval()
                    recs = [run_model(model, ids, idx) for ids in prompt_ids]
                    del model
                worst = min(r["margin_min"] for r in recs)
                print(f"{name} {dtype} seed {seed}: {len(recs)} prompts, smallest greedy margin {worst:.4g}",
                      file=sys.stderr)
                if worst >= MIN_MARGIN:
                    break
            else:
                sys.exit(f"{name} {dtype}: no seed in {seed0}..{seed} keeps greedy margins >= {MIN_MARGIN}")
            golden["models"].append({
                "name": name, "layers": layers, "heads": heads, "embd": embd, "positions": positions,
                "vocab": 50257, "dtype": dtype, "seed": seed, "std": float(std), "prompts": recs,
            })
    order = {(n[0], d): i for i, (n, d) in enumerate((s, d) for s in SHAPES for d in DTYPES)}
    golden["models"].sort(key=lambda m: order[(m["name"], m["dtype"])])
    with open(args.out, "w") as f:
        json.dump(golden, f, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
