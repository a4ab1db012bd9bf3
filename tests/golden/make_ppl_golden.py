#!/usr/bin/env python3
"""make_ppl_golden.py -- the shipped model's perplexity on held-out text, by Hugging Face transformers (float32).

The held-out text is part of llmcgi-tiny's own validation split: corpus.py
holds out every 50th document of each source (models/train/README.md), and
training never reads that split. Of those documents we keep every KEEP-th
(a mix of Bible chapters and fortunes, about a quarter of the split, so the
golden file stays small) and make them one token stream the way train.py
does (each document preceded by <|endoftext|>, the model's own tokenizer).
The loss is train.py's evaluate(): consecutive 256-token windows, each
predicting its next 256 tokens (the window's 2nd..257th), mean over all.

The golden file holds the documents, the ids, the windows' mean loss and
perplexity; tests/bench/cpu_bench --ppl reads it (no torch needed) and runs
the same windows through llmcgi's CPU engine in F32, F16, BF16 and Q8_0.
As a check that the corpus is the one the model card measured, the whole
split's loss is printed too (the card: 4.1433 nats a token). Run with torch
and transformers (e.g. tools/peer-env ts):

  python3 models/train/corpus.py --debs DEBS --out WORK/corpus
  PY tests/golden/make_ppl_golden.py --corpus WORK/corpus --model models/llmcgi-tiny \
      --out tests/golden/llmcgi_tiny_ppl.json
"""
import argparse
import json
import math

import torch
import transformers
from transformers import GPT2LMHeadModel, GPT2TokenizerFast

KEEP = 4
WINDOW = 256


def stream(tok, docs):
    ids = []
    for enc in tok(docs, add_special_tokens=False)["input_ids"]:
        ids.append(0)
        ids.extend(enc)
    return ids


@torch.no_grad()
def loss(model, ids):
    n = (len(ids) - 1) // WINDOW
    total, count = 0.0, 0
    for r in range(n):
        x = torch.tensor([ids[r * WINDOW:(r + 1) * WINDOW + 1]])
        z = model(input_ids=x[:, :-1]).logits.float()
        total += float(torch.nn.functional.cross_entropy(z.reshape(-1, z.shape[-1]), x[:, 1:].reshape(-1),
                                                         reduction="sum"))
        count += WINDOW
    return total / count, n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", required=True, help="corpus.py's output directory (val.jsonl)")
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.manual_seed(0)
    with open(f"{args.corpus}/val.jsonl") as f:
        val = [json.loads(line) for line in f]
    tok = GPT2TokenizerFast.from_pretrained(args.model)
    model = GPT2LMHeadModel.from_pretrained(args.model, dtype=torch.float32, attn_implementation="eager").eval()
    full, _ = loss(model, stream(tok, [d["text"] for d in val]))
    print(f"whole held-out split ({len(val)} documents): {full:.4f} nats a token (model card: 4.1433)")
    docs = [d for i, d in enumerate(val) if i % KEEP == 0]
    ids = stream(tok, [d["text"] for d in docs])
    nll, n = loss(model, ids)
    ids = ids[:n * WINDOW + 1]
    print(f"golden: {len(docs)} documents, {n} windows of {WINDOW}: {nll:.6f} nats a token, "
          f"perplexity {math.exp(nll):.4f}")
    with open(args.out, "w") as f:
        json.dump({"made_by": "tests/golden/make_ppl_golden.py", "torch": torch.__version__,
                   "transformers": transformers.__version__, "model": "llmcgi-tiny",
                   "held_out": f"every {KEEP}th document of corpus.py's validation split (every 50th of each source)",
                   "whole_split_nll": round(full, 6), "window": WINDOW, "windows": n, "nll": nll,
                   "perplexity": math.exp(nll), "ids": ids, "documents": docs}, f, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
