#!/usr/bin/env python3
"""card.py -- writes llmcgi-tiny's model card (README.md) from the training report and fresh samples.

Samples come from transformers on the exported float16 weights (computed in
float32), with fixed seeds, so anyone can regenerate the same card.

  python3 models/train/card.py --work WORK --corpus WORK/corpus --model models/llmcgi-tiny
"""
import argparse
import json
import os

import torch
from transformers import GPT2LMHeadModel, GPT2TokenizerFast

# (prompt, seed): Bible, fortune-style and plain prompts.
SAMPLES = [
    ("In the beginning", 1),
    ("And Jesus said unto them,", 2),
    ("The LORD is my shepherd;", 3),
    ("A computer is", 4),
    ("The secret of a happy life is", 5),
    ("Q: Why did the programmer quit his job?\nA:", 6),
    ("Once upon a time", 7),
]
GREEDY = ["In the beginning God created", "Blessed are the", "Never trust a"]
NEW_TOKENS = 48
TEMPERATURE = 0.8
TOP_P = 0.95

FORTUNE_BSD = """Copyright (c) 1991 The Regents of the University of California.
All rights reserved. (fortune-mod; the collections are reproduced and
modified under its BSD licence: redistribution and use in source and binary
forms, with or without modification, are permitted provided that the
copyright notice, this list of conditions and the disclaimer are retained,
and that neither the name of the University nor the names of its
contributors are used to endorse or promote products derived from this
software without specific prior written permission. THIS SOFTWARE IS
PROVIDED BY THE REGENTS AND CONTRIBUTORS "AS IS" AND ANY EXPRESS OR IMPLIED
WARRANTIES ARE DISCLAIMED.)"""


def generate(model, tok, prompt, seed, sample):
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    torch.manual_seed(seed)
    kw = dict(do_sample=True, temperature=TEMPERATURE, top_p=TOP_P, top_k=0) if sample else dict(do_sample=False)
    out = model.generate(ids, max_new_tokens=NEW_TOKENS, pad_token_id=0, **kw)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=False)


def quote(text):
    return "\n".join("> " + line if line else ">" for line in text.split("\n"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", required=True, help="train.py's --work (report.json)")
    ap.add_argument("--corpus", required=True, help="corpus.py's --out (sources.json)")
    ap.add_argument("--model", required=True, help="the exported directory; README.md is written there")
    ap.add_argument("--note", default="", help="a sentence on the training machine, added after its timings")
    args = ap.parse_args()
    with open(os.path.join(args.work, "report.json")) as f:
        rep = json.load(f)
    with open(os.path.join(args.corpus, "sources.json")) as f:
        src = json.load(f)
    torch.set_num_threads(os.cpu_count() or 1)
    tok = GPT2TokenizerFast.from_pretrained(args.model)
    model = GPT2LMHeadModel.from_pretrained(args.model, dtype=torch.float32, attn_implementation="eager").eval()
    size = sum(os.path.getsize(os.path.join(args.model, f)) for f in os.listdir(args.model)
               if f != "README.md")
    weights = os.path.getsize(os.path.join(args.model, "model.safetensors"))

    sh, tr, m, sec = rep["shape"], rep["training"], rep["machine"], rep["seconds"]
    pk = "\n".join(f"| `{p['package']}` | {p['version']} | `{p['sha256'][:16]}…` |" for p in src["packages"])
    st = src["stats"]
    lines = [
        "---",
        "license: bsd-3-clause",
        "language: en",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        "tags: [gpt2, llmcgi, tiny]",
        "---",
        "",
        "# llmcgi-tiny",
        "",
        "The model that ships with [llmcgi](../../README.md) so that a fresh install answers with real text",
        "and no download: a GPT-2-architecture model of "
        f"{rep['parameters'] / 1e6:.1f}M parameters trained from scratch on the King James Bible and the",
        "Unix `fortune` collections, with a byte-level BPE vocabulary of its own. It writes recognisable",
        "KJV English and fortune-cookie one-liners; it knows nothing else, follows no instructions and",
        "states no facts you should rely on. It is a demonstration and test model.",
        "",
        "## Shape and files",
        "",
        "| | |",
        "|---|---|",
        f"| architecture | `GPT2LMHeadModel` (transformers), tied input/output embeddings |",
        f"| layers / heads / width | {sh['layers']} / {sh['heads']} / {sh['embd']} |",
        f"| context | {sh['positions']} tokens |",
        f"| vocabulary | {sh['vocab']} byte-level BPE tokens, `<|endoftext|>` = 0 (bos, eos) |",
        f"| parameters | {rep['parameters']:,} |",
        f"| weights | float16 safetensors, {weights / 1e6:.1f} MB; the directory is {size / 1e6:.1f} MB |",
        "",
        "`config.json`, `model.safetensors`, `generation_config.json`, `vocab.json` + `merges.txt` (GPT-2's",
        "format, read by llmcgi) and `tokenizer.json` + `tokenizer_config.json` (for transformers). Load it",
        "with `GPT2LMHeadModel.from_pretrained(dir)` and `AutoTokenizer.from_pretrained(dir)`.",
        "",
        "## Corpus",
        "",
        "Built by `models/train/corpus.py` from Debian 12 packages (`apt-get download`, no network",
        "otherwise):",
        "",
        "| package | version | .deb sha256 |",
        "|---|---|---|",
        pk,
        "",
        f"- **King James Bible** (`bible-kjv-text`, read with `bible-kjv`'s reader): {st['kjv']['documents']}",
        f"  chapters, {st['kjv']['characters']:,} characters; one document per chapter, one verse per line, no",
        "  verse numbers. Public domain (the translation is of 1611; the data file's legend allows",
        "  unrestricted use).",
        f"- **fortunes** (`fortunes`, `fortunes-min`): {st['fortunes']['documents']:,} fortunes,",
        f"  {st['fortunes']['characters']:,} characters, from the collections "
        + ", ".join(f"`{c}`" for c in src["fortune_collections"]) + ".",
        "  None of the offensive collections (another package), the ASCII art or the collections of jokes",
        "  at some group's expense. fortune-mod's BSD licence (notice below).",
        "",
        f"Every {src['val_every']}th document of each source is held out for validation. Documents are",
        "separated by `<|endoftext|>`.",
        "",
        "## Training",
        "",
        f"`models/train/run` (corpus → tokenizer → model → export → this card). Tokenizer: BPE trained by",
        f"`tokenizers` {m['tokenizers']} on the training split, GPT-2's pre-tokenizer, "
        f"{rep['corpus_tokens']['characters_per_token']} characters a token;",
        f"{rep['corpus_tokens']['train']:,} training and {rep['corpus_tokens']['val']:,} validation tokens.",
        "",
        f"Model: {tr['steps']} steps of {tr['batch']} random windows of {tr['window']} tokens "
        f"({tr['tokens_seen']:,} tokens, about {tr['tokens_seen'] / rep['corpus_tokens']['train']:.1f} epochs),",
        f"AdamW (betas {tr['betas'][0]}, {tr['betas'][1]}; weight decay {tr['weight_decay']} on matrices), learning rate "
        f"{tr['lr']} after {tr['warmup']} warm-up steps, cosine down to {tr['lr_min']}, gradient clipping "
        f"{tr['clip']}, no dropout, float32, seed {tr['seed']}.",
        "",
        f"Trained on {tr['device']} with {tr['threads']} threads on one {m['cpu']} machine ({m['cores']} cores):",
        f"tokenizer {sec['tokenizer']:.0f} s, training {sec['training'] / 60:.1f} min, everything "
        f"{sec['total'] / 60:.1f} min. Python {m['python']}, torch {m['torch']}, transformers {m['transformers']}.",
        *([args.note] if args.note else []),
        "",
        "## Quality",
        "",
        f"Validation loss of the exported float16 weights over the whole held-out split: "
        f"**{rep['val_loss_nats']} nats a token, perplexity {rep['val_perplexity']}**, "
        f"{rep['val_bits_per_character']} bits a character.",
        "",
        "| step | training loss | validation loss (sample) |",
        "|---|---|---|",
    ]
    lines += [f"| {r['step']} | {r['loss']} | {r['val_loss_sample']} |" for r in rep["log"] if "val_loss_sample" in r]
    lines += [
        "",
        f"### Samples (temperature {TEMPERATURE}, top-p {TOP_P}, {NEW_TOKENS} tokens, transformers, seeds as shown)",
        "",
    ]
    for prompt, seed in SAMPLES:
        lines += [f"**{json.dumps(prompt)}** (seed {seed})", "", quote(prompt + generate(model, tok, prompt, seed, True)), ""]
    lines += ["### Greedy", ""]
    for prompt in GREEDY:
        lines += [f"**{json.dumps(prompt)}**", "", quote(prompt + generate(model, tok, prompt, 0, False)), ""]
    lines += [
        "llmcgi's greedy continuations equal transformers' token for token: `make check` compares them",
        "(`tests/integration/test_shipped_model.py`, goldens from `tests/golden/make_gpt2_golden.py --model`).",
        "",
        "## Limits",
        "",
        "- 256 tokens of context; nothing past it was ever trained.",
        "- Biblical and fortune-file English only; no instructions, no chat, no facts.",
        "- The fortunes are quotations from the 1970s-2000s Unix world; some are dated in tone.",
        "",
        "## Licence",
        "",
        "The King James text is in the public domain. The fortune collections are distributed under",
        "fortune-mod's BSD licence, and so are these weights and this tokenizer:",
        "",
        "```",
        FORTUNE_BSD,
        "```",
        "",
    ]
    with open(os.path.join(args.model, "README.md"), "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
