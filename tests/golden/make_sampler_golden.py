#!/usr/bin/env python3
"""make_sampler_golden.py -- reference distributions for fcgi_app/engine/sampler.c from transformers' own processors.

Run with the transformers venv (torch + transformers, no network needed):
    /work/ts-venv/bin/python tests/golden/make_sampler_golden.py > tests/golden/sampler_golden.json

Logit rows are not stored: C and Python both compute them from the integer
hash below (exact float32 values), so the file only carries the parameters
and the results. For each case the processors come from a tiny GPT-2 model's
generate() machinery (`_get_logits_processor`), i.e. transformers' own
RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper,
TopPLogitsWarper and TypicalLogitsWarper in generate()'s order; the file keeps
the surviving token ids and their final probabilities (all of them when there
are few; otherwise the set as run lengths [skip, keep, skip, keep, ...] or as a
base64 bitmap (bit i%8 of byte i/8), whichever is shorter, and the
probabilities of a sample). The probabilities are the float64 softmax of the
processed scores: torch's float32 softmax is itself ~1e-5 off over 50k tokens.

Cases whose outcome hangs on float rounding are left out (a cumulative mass
within 1e-6 of a threshold, typical scores within 1e-5 of each other at the
cut), and so are top_p cuts through a group of equal logits that torch's
unstable sort orders differently from a stable one (the C code keeps the
higher ids, as a stable ascending sort does). The counts are in the output.
"""
import base64
import json
import logging
import random
import sys
import warnings

import numpy as np
import torch
import transformers
from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel

M32 = 0xFFFFFFFF


def mix32(x):
    """lowbias32 (Chris Wellons): the same integer hash as in test_sampler.c."""
    x &= M32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & M32
    x ^= x >> 16
    return x


def logits_row(spec):
    """Row of float32 logits: token i gets h = mix32(seed * 0x9E3779B1 + i);
    masked (-inf) when mask and mix32(h ^ 0x5BD1E995) % mask == 0; value
    v * 2^-shift with v = h % mod - mod / 2 (shape 0, flat) or
    v = clz32(h) * mod + (h & 7) (shape 1, geometric: few large logits)."""
    out = np.empty(spec["vocab"], dtype=np.float32)
    scale = 2.0 ** -spec["shift"]
    for i in range(spec["vocab"]):
        h = mix32(spec["seed"] * 0x9E3779B1 + i)
        if spec["mask"] and mix32(h ^ 0x5BD1E995) % spec["mask"] == 0:
            out[i] = -np.inf
            continue
        if spec["shape"] == 0:
            v = h % spec["mod"] - spec["mod"] // 2
        else:
            v = (32 - h.bit_length()) * spec["mod"] + (h & 7)
        out[i] = np.float32(v * scale)
    return out


SPECS = [
    # small vocabularies: every survivor listed
    dict(vocab=50, seed=1, shape=0, mod=64, shift=4, mask=0),
    dict(vocab=50, seed=2, shape=0, mod=16, shift=2, mask=0),       # many ties
    dict(vocab=50, seed=3, shape=0, mod=4096, shift=8, mask=7),     # some -inf
    dict(vocab=50, seed=4, shape=1, mod=16, shift=4, mask=0),       # peaked
    dict(vocab=50, seed=5, shape=0, mod=2048, shift=6, mask=0),     # wide scale
    dict(vocab=50, seed=10, shape=0, mod=2, shift=0, mask=0),       # two values only
    # GPT-2's vocabulary size
    dict(vocab=50257, seed=6, shape=0, mod=4096, shift=9, mask=0),  # flat
    dict(vocab=50257, seed=7, shape=1, mod=16, shift=4, mask=0),    # peaked
    dict(vocab=50257, seed=8, shape=1, mod=32, shift=4, mask=97),   # peaked, some -inf
    dict(vocab=50257, seed=9, shape=0, mod=65536, shift=12, mask=0),
]

F32 = lambda x: float(np.float32(x))  # parameters are float32 in C: use exactly those values
TEMPS = [1.0, 0.7, 1.3, 0.25, 2.0, 0.05]
TOPKS = [0, 0, 1, 5, 40, 3]
TOPPS = [1.0, 0.9, 0.5, 0.95, 0.1, 0.99, 1e-9]
TYPS = [1.0, 1.0, 0.9, 0.5, 0.2, 0.95]
REPS = [1.0, 1.0, 1.3, 0.8, 2.0]

SAMPLE_ALL = 300   # list every survivor up to this many
SAMPLE_TOP = 32    # else: the most probable ones ...
SAMPLE_SPREAD = 32  # ... and this many spread over the id range


def make_model(vocab):
    cfg = GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=vocab, n_positions=16,
                     bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(cfg)


def processors(model, params, n_ctx):
    gc = GenerationConfig(do_sample=True, temperature=params["temperature"], top_k=params["top_k"],
                          top_p=params["top_p"], typical_p=params["typical_p"],
                          repetition_penalty=params["repetition_penalty"])
    procs = model._get_logits_processor(gc, input_ids_seq_length=n_ctx, device="cpu")
    want = []
    if params["repetition_penalty"] != 1.0:
        want.append("RepetitionPenaltyLogitsProcessor")
    if params["temperature"] != 1.0:
        want.append("TemperatureLogitsWarper")
    if params["top_k"] != 0:
        want.append("TopKLogitsWarper")
    if params["top_p"] < 1.0:
        want.append("TopPLogitsWarper")
    if params["typical_p"] < 1.0:
        want.append("TypicalLogitsWarper")
    got = [type(p).__name__ for p in procs]
    if got != want:
        raise SystemExit(f"generate() builds {got}, the C code implements {want}")
    return procs


def top_p_fragile(scores, top_p):
    """None when the cut is robust; else why not."""
    srt = torch.sort(scores[0], stable=True)[0]
    cum = torch.cumsum(torch.softmax(srt.double(), dim=-1), dim=-1)
    thr = F32(1.0 - top_p)
    n = len(cum)
    removed = min(int((cum <= thr).sum()), n - 1)   # the last (largest) one always stays
    if removed > 0 and thr - float(cum[removed - 1]) < 1e-6:
        return "fragile mass"
    if removed < n - 1 and float(cum[removed]) - thr < 1e-6:
        return "fragile mass"
    if removed > 0 and torch.isfinite(srt[removed]) and srt[removed - 1] == srt[removed]:
        return "tie"   # checked against the stable-sort outcome by the caller
    return None


def stable_top_p(scores, top_p):
    srt, order = torch.sort(scores[0], stable=True)
    cum = torch.softmax(srt, dim=-1).cumsum(dim=-1)
    rm = cum <= (1 - top_p)
    rm[-1] = False
    mask = torch.zeros_like(rm)
    mask[order] = rm
    return scores.masked_fill(mask[None], -float("inf"))


def typical_fragile(scores, mass):
    x = scores[0].double()
    lp = torch.log_softmax(x, dim=-1)
    p = lp.exp()
    ent = -(lp * p).nansum()
    s = ((-lp) - ent).abs()
    s_sorted, order = torch.sort(s, stable=True)
    cum = torch.cumsum(p[order], dim=-1)
    last = min(int((cum < mass).sum()), len(cum) - 1)
    if last > 0 and mass - float(cum[last - 1]) < 1e-6:
        return "fragile mass"
    if float(cum[last]) - mass < 1e-6 and last < len(cum) - 1:
        return "fragile mass"
    xs = x[order]
    for a, b in ((last - 1, last), (last, last + 1)):
        if a < 0 or b >= len(cum) or not torch.isfinite(s_sorted[b]):
            continue
        if xs[a] != xs[b] and float(s_sorted[b] - s_sorted[a]) < 1e-5 * max(1.0, float(s_sorted[b])):
            return "fragile score"
    return None


def bitmap_b64(ids, vocab):
    bits = bytearray((vocab + 7) // 8)
    for i in ids:
        bits[i // 8] |= 1 << (i % 8)
    return base64.b64encode(bytes(bits)).decode()


def runs(ids, vocab):
    """[skip, keep, skip, keep, ...] run lengths over 0..vocab-1."""
    out, pos, i = [], 0, 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        out += [ids[i] - pos, j - i + 1]
        pos = ids[j] + 1
        i = j + 1
    return out


def run_case(model, spec, row, ctx, params, dropped):
    scores = torch.tensor(row)[None]
    input_ids = torch.tensor([ctx], dtype=torch.long) if ctx else torch.zeros((1, 0), dtype=torch.long)
    for proc in processors(model, params, len(ctx)):
        name = type(proc).__name__
        if name == "TopPLogitsWarper":
            why = top_p_fragile(scores, proc.top_p)
            if why == "tie":
                hf = proc(input_ids, scores.clone())
                st = stable_top_p(scores, proc.top_p)
                if not torch.equal(torch.isinf(hf), torch.isinf(st)):
                    dropped["top_p tie order"] = dropped.get("top_p tie order", 0) + 1
                    return None
            elif why:
                dropped["top_p " + why] = dropped.get("top_p " + why, 0) + 1
                return None
        if name == "TypicalLogitsWarper":
            why = typical_fragile(scores, proc.mass)
            if why:
                dropped["typical_p " + why] = dropped.get("typical_p " + why, 0) + 1
                return None
        scores = proc(input_ids, scores)
    # torch.softmax in float32 is itself ~1e-5 off over 50k tokens (float sums):
    # the final distribution is taken in float64 from the processed scores.
    probs = torch.softmax(scores[0].double(), dim=-1)
    kept = [int(i) for i in torch.nonzero(torch.isfinite(scores[0])).flatten()]
    case = dict(logits=spec, context=ctx, params=params, n_kept=len(kept))
    if len(kept) <= SAMPLE_ALL:
        case["kept"] = kept
        sample = kept
    else:
        r, b = runs(kept, spec["vocab"]), bitmap_b64(kept, spec["vocab"])
        if len(json.dumps(r)) < len(b):
            case["kept_runs"] = r
        else:
            case["kept_bitmap"] = b
        by_prob = sorted(kept, key=lambda i: (-float(probs[i]), i))[:SAMPLE_TOP]
        step = len(kept) / SAMPLE_SPREAD
        spread = [kept[int(j * step)] for j in range(SAMPLE_SPREAD)]
        sample = sorted(set(by_prob) | set(spread))
    case["probs"] = [[i, float(f"{float(probs[i]):.9g}")] for i in sample]
    return case


def main():
    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    rnd = random.Random(20240611)
    models = {}
    cases, dropped = [], {}
    for spec in SPECS:
        vocab = spec["vocab"]
        model = models.setdefault(vocab, make_model(vocab))
        row = logits_row(spec)
        finite = np.isfinite(row)
        top = [int(i) for i in np.argsort(-np.where(finite, row, -1e30), kind="stable")[:20]]
        combos = [
            dict(temperature=1.0, top_k=0, top_p=1.0, typical_p=1.0, repetition_penalty=1.0),
            dict(temperature=1.0, top_k=0, top_p=0.9, typical_p=1.0, repetition_penalty=1.0),
            dict(temperature=1.0, top_k=0, top_p=1.0, typical_p=0.9, repetition_penalty=1.0),
            dict(temperature=1.0, top_k=0, top_p=1e-9, typical_p=1.0, repetition_penalty=1.0),
            dict(temperature=0.7, top_k=40, top_p=1.0, typical_p=1.0, repetition_penalty=1.0),
            dict(temperature=1.0, top_k=0, top_p=1.0, typical_p=1.0, repetition_penalty=1.3),
        ]
        n_random = 30 if vocab < 1000 else 14
        while len(combos) < 6 + n_random:
            combos.append(dict(temperature=rnd.choice(TEMPS), top_k=rnd.choice(TOPKS), top_p=rnd.choice(TOPPS),
                               typical_p=rnd.choice(TYPS), repetition_penalty=rnd.choice(REPS)))
        for params in combos:
            params = {k: (F32(v) if isinstance(v, float) else v) for k, v in params.items()}
            ctx = []
            if params["repetition_penalty"] != 1.0:
                # some of the most likely tokens (so the penalty matters), repeats,
                # random ids, and one outside the vocabulary (HF ignores it)
                ctx = [rnd.choice(top) for _ in range(8)] + [rnd.randrange(vocab) for _ in range(8)]
                ctx += ctx[:4] + [vocab + 3]
                rnd.shuffle(ctx)
            case = run_case(model, spec, row, ctx, params, dropped)
            if case:
                cases.append(case)
    json.dump(dict(generator="tests/golden/make_sampler_golden.py", torch=torch.__version__,
                   transformers=transformers.__version__, dropped=dropped, cases=cases),
              sys.stdout, separators=(",", ":"))
    sys.stdout.write("\n")
    print(f"{len(cases)} cases, dropped {dropped}", file=sys.stderr)


if __name__ == "__main__":
    main()
