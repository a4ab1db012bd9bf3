#!/usr/bin/env python3
"""make_embeddings_golden.py -- golden outputs of Hugging Face transformers' GPT2Model for llmcgi's embeddings (POST /v1/embeddings).

tools/gen-gpt2 writes a deterministic random-weight GPT-2 checkpoint (the
MODEL below); transformers' GPT2Model (float32, eager attention) runs each
text below alone (ids from the real GPT-2 tokenizer) and we keep its
last_hidden_state (after ln_f) pooled over the text's tokens:
  - mean: the average of every token's row (sentence-transformers' default),
  - last: the last token's row,
each as it is and L2-normalised (torch.nn.functional.normalize), in 9
significant digits (exact for float32).

tests/unit/test_classify.c regenerates the same checkpoint with the same
generator and compares the engine's pooled vectors (relative 1e-4:
max |ours - theirs| / max |theirs|); tests/integration/test_embeddings.py
compares what the server answers, through nginx and the official openai
client. Run (needs torch and transformers, e.g. from PyPI, in a venv):

  python3 tests/golden/make_embeddings_golden.py --gen BUILD/tools/gen-gpt2 \\
      --tokenizer tests/fixtures/gpt2-tokenizer --out tests/golden/embeddings_golden.json
"""
import argparse
import json
import subprocess
import sys
import tempfile

import torch
import transformers
from transformers import GPT2Model, GPT2TokenizerFast

MODEL = {"layers": 2, "heads": 4, "embd": 64, "positions": 128, "vocab": 50257, "seed": 31, "std": "0.25"}

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello",
    "a",
    "<|endoftext|>",
    "Embeddings pool the final hidden state over every token of the input.",
    "Ünïcödé and emoji 🙂👍🏽 and CJK 漢字かな",
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was "
    "the age of foolishness, it was the epoch of belief, it was the epoch of incredulity.",
]


def f9(v):
    """A float32 value in 9 significant digits: exact for float32, short in JSON."""
    return float("%.9g" % float(v))


def vec(t):
    return [f9(v) for v in t]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gen", required=True, help="path to the built tools/gen-gpt2")
    ap.add_argument("--tokenizer", required=True, help="directory with GPT-2's vocab.json and merges.txt")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    tok = GPT2TokenizerFast.from_pretrained(args.tokenizer)
    m = MODEL
    records = []
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([args.gen, "--out", d, "--layers", str(m["layers"]), "--heads", str(m["heads"]),
                        "--embd", str(m["embd"]), "--positions", str(m["positions"]), "--vocab", str(m["vocab"]),
                        "--seed", str(m["seed"]), "--std", m["std"], "--tokenizer", args.tokenizer],
                       check=True, stdout=subprocess.DEVNULL)
        model = GPT2Model.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
        with torch.no_grad():
            for t in TEXTS:
                ids = tok(t)["input_ids"]
                h = model(input_ids=torch.tensor([ids])).last_hidden_state[0]      # [n, C], after ln_f
                mean, last = h.mean(dim=0), h[-1]
                norm = torch.nn.functional.normalize
                records.append({"text": t, "ids": ids, "mean": vec(mean), "last": vec(last),
                                "mean_normalized": vec(norm(mean, dim=0)), "last_normalized": vec(norm(last, dim=0))})
    golden = {"made_by": "tests/golden/make_embeddings_golden.py", "torch": torch.__version__,
              "transformers": transformers.__version__, "model": dict(m, std=float(m["std"])), "texts": records}
    with open(args.out, "w") as f:
        json.dump(golden, f, separators=(",", ":"))
        f.write("\n")
    print(f"{len(records)} texts, width {m['embd']}", file=sys.stderr)


if __name__ == "__main__":
    main()
