#!/usr/bin/env python3
"""train.py -- trains llmcgi-tiny (tokenizer and model) and exports a Hugging Face directory.

Steps, each reading the previous one's output from --work:
  1. tokenizer: a byte-level BPE of VOCAB tokens (GPT-2's pre-tokenizer, so
     llmcgi's tokenizer reads it unchanged), trained on the training split,
     with <|endoftext|> as id 0 (bos, eos and the document separator);
  2. model: GPT-2 architecture (transformers' GPT2LMHeadModel), trained from
     a fixed seed on random windows of the token stream, AdamW with warm-up
     and cosine decay, float32 on the CPU (or CUDA with --device cuda);
  3. export: config.json, model.safetensors (float16: half the bytes, and the
     model card measures the float16 weights, not the float32 ones),
     vocab.json, merges.txt, tokenizer files, generation_config.json;
  4. measure: validation loss and perplexity of the exported weights over the
     whole held-out split, and sample texts for the model card (card.py).

  python3 models/train/train.py --corpus WORK/corpus --work WORK --out models/llmcgi-tiny
Versions are pinned in models/train/requirements.txt; models/train/run does
everything from a fresh checkout.
"""
import argparse
import json
import math
import os
import platform
import sys
import time

import numpy as np
import torch
import transformers
import tokenizers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast, GenerationConfig

EOT = "<|endoftext|>"

# The shape: ~5.9M parameters, 11.8 MB in float16 (the limit is 16 MB).
VOCAB = 4096
POSITIONS = 256
EMBD = 256
LAYERS = 6
HEADS = 4

# Training: 16 windows of 256 tokens a step.
BATCH = 16
STEPS = 1000
WARMUP = 60
LR = 2e-3
LR_MIN = 2e-4
WEIGHT_DECAY = 0.1
BETAS = (0.9, 0.95)
CLIP = 1.0
SEED = 1611


def read_docs(path):
    with open(path) as f:
        return [json.loads(line)["text"] for line in f]


def train_tokenizer(docs, out):
    """Byte-level BPE with GPT-2's pre-tokenizer; writes vocab.json and merges.txt into out."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, min_frequency=2, special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(docs, trainer=trainer)
    assert tok.token_to_id(EOT) == 0 and tok.get_vocab_size() == VOCAB
    os.makedirs(out, exist_ok=True)
    tok.model.save(out)
    # transformers' own tokenizer over those two files, as users will load it
    hf = GPT2TokenizerFast.from_pretrained(out, bos_token=EOT, eos_token=EOT, unk_token=EOT)
    hf.model_max_length = POSITIONS
    return hf


def token_stream(hf, docs):
    """All documents as one uint16 stream, each one preceded by <|endoftext|>."""
    ids = []
    for enc in hf(docs, add_special_tokens=False)["input_ids"]:
        ids.append(0)
        ids.extend(enc)
    return np.array(ids, dtype=np.uint16)


def lr_at(step):
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    t = (step - WARMUP) / max(1, STEPS - WARMUP)
    return LR_MIN + 0.5 * (LR - LR_MIN) * (1 + math.cos(math.pi * t))


@torch.no_grad()
def evaluate(model, stream, device, max_windows=None):
    """Mean next-token loss (nats) over consecutive POSITIONS-token windows of stream."""
    model.eval()
    n = (len(stream) - 1) // POSITIONS
    if max_windows:
        n = min(n, max_windows)
    total, count = 0.0, 0
    for i in range(0, n, BATCH):
        rows = range(i, min(n, i + BATCH))
        x = torch.stack([torch.from_numpy(stream[r * POSITIONS:(r + 1) * POSITIONS + 1].astype(np.int64))
                         for r in rows]).to(device)
        out = model(input_ids=x[:, :-1])
        loss = torch.nn.functional.cross_entropy(out.logits.float().reshape(-1, VOCAB),
                                                 x[:, 1:].reshape(-1), reduction="sum")
        total += float(loss)
        count += x[:, 1:].numel()
    model.train()
    return total / count


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", required=True, help="corpus.py's output directory")
    ap.add_argument("--work", required=True, help="scratch directory (checkpoint, logs)")
    ap.add_argument("--out", required=True, help="the Hugging Face directory to write")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=None, help="fewer steps, for a quick trial run")
    args = ap.parse_args()
    global STEPS
    STEPS = args.steps or STEPS

    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    t0 = time.time()
    os.makedirs(args.work, exist_ok=True)

    train_docs = read_docs(os.path.join(args.corpus, "train.jsonl"))
    val_docs = read_docs(os.path.join(args.corpus, "val.jsonl"))
    hf = train_tokenizer(train_docs, args.out)
    train_ids = token_stream(hf, train_docs)
    val_ids = token_stream(hf, val_docs)
    chars = sum(len(d) for d in train_docs)
    t_tok = time.time() - t0
    print(f"tokenizer: {VOCAB} tokens in {t_tok:.0f}s; train {len(train_ids)} tokens "
          f"({chars / len(train_ids):.2f} characters a token), val {len(val_ids)} tokens", file=sys.stderr)

    config = GPT2Config(vocab_size=VOCAB, n_positions=POSITIONS, n_embd=EMBD, n_layer=LAYERS, n_head=HEADS,
                        activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=0, eos_token_id=0, tie_word_embeddings=True)
    model = GPT2LMHeadModel(config).to(args.device)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                             {"params": no_decay, "weight_decay": 0.0}], lr=LR, betas=BETAS)

    log = []
    t1 = time.time()
    for step in range(STEPS):
        starts = rng.integers(0, len(train_ids) - POSITIONS - 1, size=BATCH)
        x = torch.from_numpy(np.stack([train_ids[s:s + POSITIONS + 1] for s in starts]).astype(np.int64))
        x = x.to(args.device)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        out = model(input_ids=x[:, :-1])
        loss = torch.nn.functional.cross_entropy(out.logits.reshape(-1, VOCAB), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        if step % 50 == 0 or step == STEPS - 1:
            rec = {"step": step, "loss": round(loss.item(), 4), "lr": lr_at(step),
                   "elapsed_s": round(time.time() - t1, 1)}
            if step % 200 == 0 or step == STEPS - 1:
                rec["val_loss_sample"] = round(evaluate(model, val_ids, args.device, max_windows=32), 4)
            log.append(rec)
            print(json.dumps(rec), file=sys.stderr, flush=True)
    t_train = time.time() - t1

    # Export in float16, then measure what was exported.
    model = model.to("cpu").to(torch.float16)
    model.generation_config = GenerationConfig(bos_token_id=0, eos_token_id=0)
    model.save_pretrained(args.out, safe_serialization=True)
    hf.save_pretrained(args.out)
    exported = GPT2LMHeadModel.from_pretrained(args.out, dtype=torch.float32, attn_implementation="eager")
    val_loss = evaluate(exported, val_ids, "cpu")
    total = time.time() - t0
    report = {
        "parameters": n_params,
        "shape": {"vocab": VOCAB, "positions": POSITIONS, "embd": EMBD, "layers": LAYERS, "heads": HEADS},
        "training": {"steps": STEPS, "batch": BATCH, "window": POSITIONS, "tokens_seen": STEPS * BATCH * POSITIONS,
                     "optimizer": "AdamW", "lr": LR, "lr_min": LR_MIN, "warmup": WARMUP, "betas": list(BETAS),
                     "weight_decay": WEIGHT_DECAY, "clip": CLIP, "seed": SEED, "dtype": "float32",
                     "device": args.device, "threads": args.threads},
        "corpus_tokens": {"train": int(len(train_ids)), "val": int(len(val_ids)),
                          "characters_per_token": round(chars / len(train_ids), 3)},
        "val_loss_nats": round(val_loss, 4),
        "val_perplexity": round(math.exp(val_loss), 2),
        "val_bits_per_character": round(val_loss * len(val_ids) / math.log(2) /
                                        sum(len(d) + 1 for d in val_docs), 4),
        "seconds": {"tokenizer": round(t_tok, 1), "training": round(t_train, 1), "total": round(total, 1)},
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__, "transformers": transformers.__version__,
                    "tokenizers": tokenizers.__version__},
        "log": log,
    }
    with open(os.path.join(args.work, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    print(f"done: val loss {val_loss:.4f} (perplexity {math.exp(val_loss):.2f}); training {t_train:.0f}s, "
          f"total {total:.0f}s", file=sys.stderr)


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    main()
