#!/usr/bin/env python3
"""make_classifier_golden.py -- golden outputs of Hugging Face transformers' GPT2ForSequenceClassification for llmcgi's classifier tests.

For each model below, tools/gen-gpt2 --classifier writes a deterministic
random-weight GPT2ForSequenceClassification checkpoint (score.weight, id2label,
problem_type, pad_token_id); transformers (float32, eager attention) then runs
the texts below (ids from the real GPT-2 tokenizer) and we keep, per model:
  - singles: each text alone: its ids and the pooled logits (num_labels),
  - batches: groups of texts right-padded with pad_token_id into one batch
    (with the attention mask), as the text-classification pipeline pads
    them: the pooled logits of every row,
  - pipeline: pipeline("text-classification", top_k=None) on each text: the
    labels and scores sorted by score, as POST /classify answers.
Some texts contain the model's pad token (GPT-2's <|endoftext|> for one
model, "!" = id 0 for another), also at their end and as the whole text:
transformers pools at the rightmost token that is not pad_token_id (index 0
when every token is), and llmcgi does the same.

tests/unit/test_classify.c regenerates the same checkpoints with the same
generator and compares (max |ours - theirs| / max |theirs| <= 1e-4 per row);
tests/integration/test_classify.py compares what the server answers with the
pipeline records. Run (needs torch and transformers, e.g. from PyPI):

  python3 tests/golden/make_classifier_golden.py --gen BUILD/tools/gen-gpt2 \\
      --tokenizer ../shared/models/gpt2-tokenizer --out tests/golden/classifier_golden.json
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch
import transformers
from transformers import GPT2ForSequenceClassification, GPT2TokenizerFast, pipeline

# name, layers, heads, embd, positions, seed, std, labels, problem_type, pad_token_id
MODELS = [
    ("single", 2, 4, 64, 128, 21, "0.25", "negative,neutral,positive", "single_label_classification", 50256),
    ("multi", 2, 4, 64, 128, 22, "0.25", "hate,harassment,self-harm,sexual,violence",
     "multi_label_classification", 0),
    ("nopad", 3, 2, 32, 64, 23, "0.3", None, None, None),
]

TEXTS = [
    "I love this!",
    "This is the worst thing I have ever seen.",
    "The meeting is at ten o'clock.",
    "Hello",
    "You people are all idiots and should go away!!!",
    "a",
    "<|endoftext|>",
    "Ends with the end-of-text token<|endoftext|>",
    "Two<|endoftext|> inside<|endoftext|> and at the end<|endoftext|><|endoftext|>",
    "!",
    "!!!",
    "Wow! Great! Amazing!",
    "Ünïcödé and emoji 🙂👍🏽 and CJK 漢字かな",
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was "
    "the age of foolishness, it was the epoch of belief, it was the epoch of incredulity.",
]

# Batches (indices into TEXTS) of different lengths, so rows carry padding.
BATCHES = [
    [0, 1, 2, 3],
    [4, 5, 6, 7, 8, 9, 10, 11],
    list(range(len(TEXTS))),
]


def f9(v):
    """A float32 value in 9 significant digits: exact for float32, short in JSON."""
    return float("%.9g" % float(v))


@torch.no_grad()
def run(model, ids_list, pad):
    """Pooled logits of a right-padded batch (one row per text)."""
    n = max(len(i) for i in ids_list)
    ids = torch.full((len(ids_list), n), pad if pad is not None else 0, dtype=torch.long)
    mask = torch.zeros((len(ids_list), n), dtype=torch.long)
    for r, i in enumerate(ids_list):
        ids[r, : len(i)] = torch.tensor(i)
        mask[r, : len(i)] = 1
    out = model(input_ids=ids, attention_mask=mask)
    return [[f9(v) for v in row] for row in out.logits]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gen", required=True, help="path to the built tools/gen-gpt2")
    ap.add_argument("--tokenizer", required=True, help="directory with GPT-2's vocab.json and merges.txt")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.manual_seed(0)
    tok = GPT2TokenizerFast.from_pretrained(args.tokenizer)
    ids = [tok(t)["input_ids"] for t in TEXTS]
    golden = {
        "made_by": "tests/golden/make_classifier_golden.py",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "texts": TEXTS,
        "models": [],
    }
    for name, layers, heads, embd, positions, seed, std, labels, problem, pad in MODELS:
        with tempfile.TemporaryDirectory() as d:
            nl = len(labels.split(",")) if labels else 2
            cmd = [args.gen, "--out", d, "--layers", str(layers), "--heads", str(heads), "--embd", str(embd),
                   "--positions", str(positions), "--vocab", "50257", "--seed", str(seed), "--std", std,
                   "--classifier", str(nl), "--tokenizer", args.tokenizer]
            if labels:
                cmd += ["--labels", labels]
            if problem:
                cmd += ["--problem-type", problem]
            if pad is not None:
                cmd += ["--pad-token-id", str(pad)]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            model = GPT2ForSequenceClassification.from_pretrained(d, dtype=torch.float32,
                                                                  attn_implementation="eager").eval()
            assert model.config.pad_token_id == pad and model.config.num_labels == nl
            singles = [{"ids": i, "logits": run(model, [i], pad)[0]} for i in ids]
            batches = []
            if pad is not None:         # transformers refuses batches > 1 without a pad token
                for b in BATCHES:
                    batches.append({"texts": b, "logits": run(model, [ids[i] for i in b], pad)})
            ptok = GPT2TokenizerFast.from_pretrained(args.tokenizer)
            if pad is not None:
                ptok.pad_token_id = pad
            clf = pipeline("text-classification", model=model, tokenizer=ptok, device="cpu")
            pipe = [[{"label": r["label"], "score": f9(r["score"])} for r in clf(t, top_k=None)] for t in TEXTS]
            del clf, model
        golden["models"].append({
            "name": name, "layers": layers, "heads": heads, "embd": embd, "positions": positions,
            "vocab": 50257, "seed": seed, "std": float(std), "labels": labels.split(",") if labels else None,
            "num_labels": nl, "problem_type": problem, "pad_token_id": pad,
            "singles": singles, "batches": batches, "pipeline": pipe,
        })
        print(f"{name}: {len(TEXTS)} texts, {len(batches)} batches", file=sys.stderr)
    with open(args.out, "w") as f:
        json.dump(golden, f, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
