#!/usr/bin/env python3
"""corpus.py -- the training text of llmcgi-tiny, built from Debian packages.

Two sources, both shipped by Debian 12 (bookworm) and both free to reuse:
  - bible-kjv-text (+ bible-kjv for its reader): the King James Bible, whose
    copyright expired long ago (the Crown's letters patent aside, which only
    bind printing in the UK); the data file's legend allows unrestricted use.
  - fortunes: fortune-mod's collections of quotations, under fortune-mod's
    BSD licence (debian/copyright). Only the collections listed in FORTUNES
    are taken: none of the offensive ones (those are in another package
    anyway), none of the ASCII art or the jokes at some group's expense.

A document is one chapter of the Bible (its verses one per line, without
numbers) or one fortune. Documents are written as JSON lines with their
source; every VAL_EVERY-th document of each source is held out for
validation. Nothing here is random: the same packages give the same corpus.

  python3 models/train/corpus.py --debs DIR --out WORK/corpus
where DIR holds the .deb files (fetched with `apt-get download` when absent).
"""
import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile

PACKAGES = ["bible-kjv-text", "bible-kjv", "fortunes", "fortunes-min"]
FORTUNES = [
    # fortunes-min
    "fortunes",
    # fortunes
    "art", "computers", "cookie", "debian", "definitions", "education", "food",
    "goedel", "humorists", "kids", "law", "linux", "literature", "love", "magic",
    "medicine", "miscellaneous", "news", "paradoxum", "people", "pets", "platitudes",
    "riddles", "science", "songs-poems", "sports", "tao", "wisdom", "work",
]
VAL_EVERY = 50


def fetch_debs(debs):
    """Download the packages into debs/ with apt-get unless they are there."""
    os.makedirs(debs, exist_ok=True)
    have = os.listdir(debs)
    missing = [p for p in PACKAGES if not any(f.startswith(p + "_") and f.endswith(".deb") for f in have)]
    if missing:
        subprocess.run(["apt-get", "download", *missing], cwd=debs, check=True)


def deb_of(debs, pkg):
    for f in sorted(os.listdir(debs)):
        if f.startswith(pkg + "_") and f.endswith(".deb"):
            return os.path.join(debs, f)
    sys.exit(f"corpus: no {pkg}_*.deb in {debs}")


def deb_field(deb, field):
    return subprocess.run(["dpkg-deb", "-f", deb, field], check=True, capture_output=True,
                          text=True).stdout.strip()


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def bible_chapters(root):
    """Chapters of the KJV from the bible-kjv reader: a list of (title, [verse, ...])."""
    reader = os.path.join(root, "usr/bin/bible")
    out = subprocess.run([reader, "-p", os.path.join(root, "usr/lib"), "gen1:1-rev22:21"],
                         check=True, capture_output=True, text=True).stdout
    chapters, verses = [], None
    for line in out.split("\n"):
        m = re.match(r"^  ?\s*(\d+) (.*)$", line)
        if m and verses is not None:
            verses.append(m.group(2).strip())
        elif re.match(r"^\S.* \d+$", line):          # "Genesis 1", "1 Kings 3"
            verses = []
            chapters.append((line.strip(), verses))
        elif line.strip() and verses:                 # a verse's wrapped continuation
            verses[-1] += " " + line.strip()
    if len(chapters) != 1189:
        sys.exit(f"corpus: expected the Bible's 1189 chapters, read {len(chapters)}")
    return chapters


def clean_fortune(text):
    """Overstrike (x BS x, _ BS x) resolved, indentation dropped, attribution as '-- Name'."""
    text = re.sub(r".\x08", "", text)
    text = "".join(c for c in text if c in "\n\t" or ord(c) >= 32)
    lines = [re.sub(r"[ \t]+", " ", ln).strip() for ln in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    return "\n".join(lines)


def fortunes(root):
    """(collection, fortune) pairs from the fortune files named in FORTUNES."""
    base = os.path.join(root, "usr/share/games/fortunes")
    out = []
    for name in FORTUNES:
        with open(os.path.join(base, name), encoding="utf-8", errors="replace") as f:
            raw = f.read()
        for chunk in re.split(r"^%$", raw, flags=re.M):
            text = clean_fortune(chunk)
            if len(text) >= 20:
                out.append((name, text))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--debs", required=True, help="directory of the .deb files (fetched when missing)")
    ap.add_argument("--out", required=True, help="output directory: train.jsonl, val.jsonl, sources.json")
    args = ap.parse_args()
    fetch_debs(args.debs)
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory() as root:
        sources = []
        for pkg in PACKAGES:
            deb = deb_of(args.debs, pkg)
            subprocess.run(["dpkg-deb", "-x", deb, root], check=True)
            sources.append({"package": pkg, "version": deb_field(deb, "Version"),
                            "deb": os.path.basename(deb), "sha256": sha256_file(deb)})
        docs = [("kjv", title + "\n\n" + "\n".join(v)) for title, v in bible_chapters(root)]
        docs += [("fortunes/" + name, text) for name, text in fortunes(root)]
    counts = {}
    with open(os.path.join(args.out, "train.jsonl"), "w") as tr, \
         open(os.path.join(args.out, "val.jsonl"), "w") as va:
        for src, text in docs:
            key = src.split("/")[0]
            counts[key] = counts.get(key, 0) + 1
            dst = va if counts[key] % VAL_EVERY == 0 else tr
            dst.write(json.dumps({"source": src, "text": text}) + "\n")
    stats = {}
    for src, text in docs:
        s = stats.setdefault(src.split("/")[0], {"documents": 0, "characters": 0})
        s["documents"] += 1
        s["characters"] += len(text)
    with open(os.path.join(args.out, "sources.json"), "w") as f:
        json.dump({"packages": sources, "fortune_collections": FORTUNES, "val_every": VAL_EVERY,
                   "stats": stats}, f, indent=1)
        f.write("\n")
    for k, s in stats.items():
        print(f"corpus: {k}: {s['documents']} documents, {s['characters']} characters", file=sys.stderr)


if __name__ == "__main__":
    main()
