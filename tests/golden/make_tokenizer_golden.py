#!/usr/bin/env python3
"""Write the tokenizer's golden data from Hugging Face's GPT-2 tokenizer.

    /work/ts-venv/bin/python tests/golden/make_tokenizer_golden.py [--tokenizer DIR] [--out DIR]

DIR holds the real GPT-2 tokenizer (vocab.json, merges.txt), normally
../shared/models/gpt2-tokenizer/. Needs transformers and tokenizers (no
torch, no network). Writes, next to this script unless --out says otherwise:

    tokenizer_corpus.jsonl  one test string per line: {"cat": CATEGORY, "hex": RAW BYTES}
                            (hex, because some are invalid UTF-8 on purpose)
    tokenizer_ids.jsonl     the same lines' ids from transformers' GPT2TokenizerFast:
                            {"ids": [...]}, plus "plain": [...] where
                            split_special_tokens=True gives other ids. Invalid
                            UTF-8 is first decoded as bytes.decode("utf-8", "replace"),
                            and "text" holds that text (hex) where it differs.
    tokenizer_decode.jsonl  {"ids": [...], "hex": ...}: tokenizer.decode(ids) for id
                            sequences that cut UTF-8 characters, random ids, slices
    tokenizer_classes.txt   how Hugging Face's pre-tokeniser classes every code
                            point (L letter, N number, S white space, P other), as
                            runs "FIRST LAST CLASS" in hex; surrogates are left out
    tokenizer_custom.json   a tiny non-GPT-2 vocabulary and merges (with a
                            tokenizer_config.json) and the ids HF gives for some strings

Everything is deterministic (fixed seeds, no dict-order dependence): running
it again gives byte-identical files.
"""

import argparse
import json
import os
import random
import sys
import tempfile
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_TOKENIZER = os.path.normpath(os.path.join(HERE, "..", "fixtures", "gpt2-tokenizer"))

# ---------------------------------------------------------------------------- corpus

WORDS = """the of and to in is was that for it with as his on be at by had are but from or have an they which
one you were all her she there would their we him been has when who will no more if out so up said what its
about than into them can only other time new some could these two may first then do any like my now over such
our man me even most made after also did many off before must well back through years much where your way
down should because each just those people how too little state good very make world still see own men work
long here get both between life being under never day same another know while last might us great old year
come since against go came right used take three house himself public without again few against however
tokenizer byte pair encoding merges vocabulary server request response stream token model weights kernel
Hello World Paris London Tokyo GPT Hugging Face OpenAI nginx Apache FastCGI Linux Debian Python Rust
naïve café résumé coöperate façade jalapeño Zürich São Paulo Ångström""".split()

PROSE = [
    "Hello world",
    " Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "It was the best of times, it was the worst of times, it was the age of wisdom...",
    "Call me Ishmael. Some years ago—never mind how long precisely—having little or no money in my purse,",
    "\"Quoted text,\" she said, \"isn't always straightforward.\"",
    "Mr. Smith went to Washington D.C. on Jan. 5th, 2024 at 10:30 a.m.",
    "e.g. i.e. etc. vs. cf. et al.",
    "URLs like https://example.com/path?q=1&r=two#frag and mail@example.org appear often.",
    "The price is $1,234.56 (or €1.234,56) — roughly ¥180,000.",
    "Line one\nLine two\n\nLine four after a blank line\n",
    "Tabs\tseparate\tcolumns\tin\tTSV\tfiles",
    "Windows\r\nline\r\nendings\r\n",
    "Old Mac\rline\rendings",
    "   leading spaces and trailing spaces   ",
    "ALL CAPS SENTENCE WITH NUMBERS 123 AND SYMBOLS #@!",
    "camelCaseIdentifiers and snake_case_names and kebab-case-names",
    "Hyphenated-words, em—dashes, en–dashes and ellipses… abound.",
    "«Guillemets» „Anführungszeichen“ ‘single’ “double” ‹angle›",
    "She said: ‘I’m here’ and he’s there; they’re fine, we’ve done it, I’d go, you’ll see.",
]

CODE = [
    "#include <stdio.h>\n\nint main(void)\n{\n    printf(\"hello, world\\n\");\n    return 0;\n}\n",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n\nprint([fib(i) for i in range(10)])\n",
    "function add(a, b) {\n  return a + b;\n}\nconst x = add(1, 2); // 3\nconsole.log(`x = ${x}`);\n",
    "fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * x).collect();\n    println!(\"{:?}\", v);\n}\n",
    "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(\"hi\")\n}\n",
    "SELECT id, name FROM users WHERE age >= 18 AND name LIKE 'A%' ORDER BY name DESC;",
    "<!DOCTYPE html>\n<html>\n  <body>\n    <p class=\"x\">Hi &amp; bye</p>\n  </body>\n</html>\n",
    "#!/bin/sh\nset -eu\nfor f in *.txt; do\n\techo \"$f\" | tr a-z A-Z >> \"${f%.txt}.out\"\ndone\n",
    "{\"key\": [1, 2.5, -3e10, true, null], \"nested\": {\"a\": \"b\\u00e9\"}}",
    "\\begin{equation}\n  E = mc^2 \\quad \\int_0^\\infty e^{-x^2}\\,dx = \\frac{\\sqrt{\\pi}}{2}\n\\end{equation}",
    "x += 1; y -= 2; z *= 3; w /= 4; a <<= 1; b >>= 2; c &&= d; e ||= f; g ??= h;",
    "if (a != b && c == d || !e) { return a->b.c[d]; }",
    "class Foo(Bar):\n    '''Docstring.'''\n    def __init__(self, *args, **kwargs):\n        super().__init__(*args, **kwargs)\n",
    "    \t  mixed indentation\n\t    is evil\n",
    "    def f():\n        pass\n\n\n\n    def g():\n        pass\n",
    "// comment\n/* block\n * comment */\n# hash comment\n-- sql comment\n; lisp comment",
    "(defun square (x) (* x x))\n(mapcar #'square '(1 2 3))",
    "public static void main(String[] args) throws Exception { System.out.println(\"Hi\"); }",
    "let rec fact n = if n = 0 then 1 else n * fact (n - 1);;",
    "main = putStrLn \"Hello\" >> mapM_ print [1..10]",
]

CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'VE", "'M", "'LL", "'D",
                "’s", "’t", "’re", "’ll", "ʼs", "`s", "''s", "'x", "'", "''", "'''", "' s", "'st", "'ss"]

WHITESPACE_CPS = [0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003,
                  0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000]
NEAR_WHITESPACE = [0x180E, 0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF, 0x1C, 0x1D, 0x1E, 0x1F, 0x00, 0x7F, 0xAD,
                   0x115F, 0x1160, 0x3164, 0xFFA0, 0x2800]
ODD = [0xFFFD, 0xFFFE, 0xFFFF, 0xFDD0, 0xFDEF, 0x1FFFE, 0x10FFFF, 0xE000, 0xF8FF, 0xF0000, 0x10FFFD, 0x200E,
       0x200F, 0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068, 0x2069, 0x061C, 0x034F, 0x0300,
       0x0301, 0x20DD, 0x1D165, 0xE0001, 0xE0041, 0xE007F, 0x1F3FB, 0xFE0F, 0xFE0E, 0x2062, 0x2063, 0x2064, 0x00,
       0x01, 0x1B, 0x80, 0x9F, 0x2E3A, 0x3030, 0x1F600, 0x10000, 0x1D400, 0x1D7CE, 0x2070, 0x00B2, 0x00BD,
       0x2160, 0x3007, 0x0F33, 0x1C89, 0xA7CB, 0x105C0, 0x10D40, 0x11380, 0x13460, 0x16100, 0x1CCF0, 0x1E5D0,
       0x1E5F1, 0x2EBF0, 0x31350]

SCRIPTS = {
    "cjk": ["你好，世界！", "我们今天去公园散步吧。", "東京は日本の首都です。", "ひらがなとカタカナ、漢字。",
            "안녕하세요, 세계!", "한국어 문장입니다.", "ＡＢＣ１２３ｱｲｳ", "中文English混合text", "「引用」『二重』【括弧】",
            "一二三四五六七八九十百千万", "𠀀𠀁𠀂 𪜀 𫝀 𬺰 𰀀", "㈱㍻㌀", "ｶﾀｶﾅ ﾊﾝｶｸ"],
    "rtl": ["مرحبا بالعالم", "السلام عليكم ورحمة الله", "٠١٢٣٤٥٦٧٨٩", "שלום עולם", "עברית עם ניקוד: בְּרֵאשִׁית",
            "English مع عربي mixed", "فارسی: سلام دنیا ۱۲۳", "اردو: ہیلو"],
    "indic": ["नमस्ते दुनिया", "हिन्दी में वाक्य। ०१२३", "বাংলা ভাষা", "தமிழ் மொழி", "తెలుగు", "ಕನ್ನಡ", "മലയാളം",
              "ગુજરાતી", "ਪੰਜਾਬੀ", "ଓଡ଼ିଆ", "සිංහල", "क्षत्रिय त्र ज्ञ श्र"],
    "thai": ["สวัสดีชาวโลก", "ภาษาไทยไม่มีช่องว่างระหว่างคำ", "๑๒๓๔", "ລາວ", "ខ្មែរ", "မြန်မာ", "ཀ་ཁ་ག", "ᠮᠣᠩᠭᠣᠯ"],
    "accents": ["naïve café résumé", "Ångström Øresund Æther", "Crème brûlée à la française", "Tiếng Việt có dấu",
                "Ελληνικά γράμματα", "Русский текст ёЁ", "Українська ґ і ї є", "Ąčęėįšųūž", "Zażółć gęślą jaźń",
                "Şişli Ğğ İı", "e\u0301 a\u0300 o\u0308 n\u0303", "A\u030a\u0301\u0323", "Z\u0351\u0308\u0303"
                "\u0327\u0300\u0345", "ﬁ ﬂ ﬀ ﬃ", "ǅ ǈ ǋ ǲ", "ß ẞ"],
    "emoji": ["😀😃😄", "👍🏽 👍🏿 👋🏻", "👨‍👩‍👧‍👦 family", "🏳️‍🌈 🏴‍☠️", "🇺🇸🇬🇧🇯🇵🇩🇪",
              "1️⃣ #️⃣ *️⃣", "❤️ ❤ ♥️", "🧑🏽‍💻 👩🏻‍🔬", "🤷‍♂️🤷‍♀️", "emoji😀in😀words", "🏴󠁧󠁢󠁳󠁣󠁴󠁿 Scotland",
              "👁️‍🗨️", "🫠🫶🪿", "☺︎ vs ☺️", "🇦", "🙂🙃" * 20],
}

PUNCT = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~¡¿§¶†‡•…‰′″‹›«»–—―‐‑‒€£¥¢©®™°±×÷¬¦¨¯´¸·"


def utf8(s):
    return s.encode("utf-8")


def corpus(rng):
    """The test strings, as (category, bytes)."""
    out = []

    def add(cat, s):
        out.append((cat, s if isinstance(s, bytes) else utf8(s)))

    # empty and tiny
    for s in ["", " ", "a", "\n", "  ", "\t", "\r", "\r\n", "0", "!", "'", "é", "€", "😀"]:
        add("empty", s)

    # prose: fixed sentences and random ones
    for s in PROSE:
        add("prose", s)
    for _ in range(330):
        n = rng.randint(1, 30)
        words = [rng.choice(WORDS) for _ in range(n)]
        for i in range(len(words)):
            if rng.random() < 0.1:
                words[i] = words[i].capitalize()
            if rng.random() < 0.08:
                words[i] = words[i].upper()
            if rng.random() < 0.12:
                words[i] += rng.choice([",", ".", ";", ":", "!", "?", "...", ")", "\"", "'s", "’s", "n't"])
        s = " ".join(words)
        if rng.random() < 0.3:
            s = " " + s
        if rng.random() < 0.3:
            s += rng.choice([" ", "\n", "  ", "\n\n", " \n"])
        add("prose", s)

    # code
    for s in CODE:
        add("code", s)
    for _ in range(150):
        a, b = rng.sample(CODE, 2)
        cut = rng.randint(0, len(a))
        s = a[cut:cut + rng.randint(5, 120)] + rng.choice(["\n", "\n\t", "    ", "\r\n", ""]) + b[:rng.randint(5, 80)]
        add("code", s)

    # whitespace runs
    pieces = [" ", "  ", "   ", "\t", "\n", "\r", "\r\n", "\n\n", "\t\t", " \t", "\t ", "\u00a0", "\u3000", "\u2028",
              "\u0085", "\x0b", "\x0c"]
    for _ in range(260):
        parts = []
        for _ in range(rng.randint(1, 8)):
            r = rng.random()
            if r < 0.5:
                parts.append("".join(rng.choice(pieces) for _ in range(rng.randint(1, 6))))
            elif r < 0.8:
                parts.append(rng.choice(WORDS))
            else:
                parts.append(rng.choice(["1", "42", "!", "...", "é", "中", "😀", "'s", "-"]))
        add("whitespace", "".join(parts))

    # contractions
    for c in CONTRACTIONS:
        for w in ["it", "IT", "we", "I", "you", "they", "don", "can", "x", "1", "", " "]:
            if rng.random() < 0.45:
                add("contractions", w + c + rng.choice(["", " ", " going", "!", "s", "\n", "'"]))
    for _ in range(40):
        add("contractions", "".join(rng.choice(WORDS[:40]) + rng.choice(CONTRACTIONS) + rng.choice([" ", "", ", "])
                                    for _ in range(rng.randint(1, 6))))

    # numbers
    for _ in range(150):
        r = rng.random()
        if r < 0.3:
            s = str(rng.randint(0, 10 ** rng.randint(1, 25)))
        elif r < 0.5:
            s = "%.*f" % (rng.randint(0, 8), rng.uniform(-1e6, 1e6))
        elif r < 0.6:
            s = "{:,}".format(rng.randint(0, 10 ** 12))
        elif r < 0.7:
            s = "%d-%02d-%02d %02d:%02d:%02d" % (rng.randint(1900, 2100), rng.randint(1, 12), rng.randint(1, 28),
                                                  rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59))
        elif r < 0.8:
            s = "".join(rng.choice("0123456789٠١٢٣٤٥٦٧٨٩०१२३४५६७८९０１２３４５６７８９²³¹½¼¾ⅠⅡⅫ〇⁰₉①⑳")
                        for _ in range(rng.randint(1, 12)))
        elif r < 0.9:
            s = "v%d.%d.%d-rc%d" % (rng.randint(0, 20), rng.randint(0, 99), rng.randint(0, 999), rng.randint(0, 9))
        else:
            s = "0x%x 0b%s %de%d %d%%" % (rng.randint(0, 2 ** 32), bin(rng.randint(0, 255))[2:], rng.randint(1, 9),
                                          rng.randint(-30, 30), rng.randint(0, 100))
        if rng.random() < 0.4:
            s = rng.choice(["", " ", "x", "abc", "$"]) + s + rng.choice(["", " ", "th", "km", "."])
        add("numbers", s)

    # punctuation runs
    for _ in range(110):
        s = "".join(rng.choice(PUNCT) for _ in range(rng.randint(1, 20)))
        if rng.random() < 0.5:
            s = rng.choice(WORDS) + rng.choice(["", " "]) + s + rng.choice(["", " "]) + rng.choice(WORDS)
        add("punctuation", s)

    # scripts
    for cat, items in SCRIPTS.items():
        for s in items:
            add(cat, s)
        for _ in range(70 if cat != "emoji" else 130):
            parts = [rng.choice(items) for _ in range(rng.randint(1, 4))]
            sep = rng.choice(["", " ", "  ", "\n", ", ", " and "])
            s = sep.join(parts)
            if rng.random() < 0.3:
                s = " " + s
            if cat == "accents" and rng.random() < 0.3:
                s = unicodedata.normalize(rng.choice(["NFC", "NFD", "NFKC", "NFKD"]), s)
            add(cat, s)

    # odd Unicode: every white space code point and its neighbours, noncharacters,
    # private use, zero width, bidi controls, controls, new letters and digits
    for cp in WHITESPACE_CPS + NEAR_WHITESPACE:
        c = chr(cp)
        for tmpl in ["a{c}b", "{c}", "{c}{c}", "a{c}{c}b", " {c}x", "x{c} y", "{c} ", "1{c}2", "!{c}!", "a {c}"]:
            add("odd", tmpl.format(c=c))
    for cp in ODD:
        c = chr(cp)
        for tmpl in ["{c}", "a{c}b", " {c}", "{c}{c}{c}", "x {c} y", "1{c}"]:
            add("odd", tmpl.format(c=c))
    for _ in range(60):
        add("odd", "".join(chr(rng.choice(WHITESPACE_CPS + NEAR_WHITESPACE + ODD)) if rng.random() < 0.5
                           else rng.choice(["a", "b", " ", "1", "!", "é"]) for _ in range(rng.randint(1, 12))))

    # random code points from the whole range (no surrogates)
    for _ in range(200):
        chars = []
        for _ in range(rng.randint(1, 16)):
            r = rng.random()
            if r < 0.4:
                cp = rng.randint(0, 0xFFFF)
            elif r < 0.8:
                cp = rng.randint(0x10000, 0x3FFFF)
            elif r < 0.9:
                cp = rng.randint(0, 0x10FFFF)
            else:
                cp = rng.choice([0x20, 0x20, 0x0A, 0x61, 0x31, 0x27])
            if 0xD800 <= cp <= 0xDFFF:
                cp = 0xFFFD
            chars.append(chr(cp))
        add("random_unicode", "".join(chars))

    # invalid UTF-8
    fixed = [b"\x80", b"\xbf", b"\xc0\x80", b"\xc1\xbf", b"\xc2", b"\xc2\x41", b"\xe0\x80\x80", b"\xe0\xa0",
             b"\xe2\x82", b"\xe2\x82\x41", b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xed\x9f\xbf", b"\xef\xbf\xbe",
             b"\xf0\x80\x80\x80", b"\xf0\x90\x80", b"\xf0\x9f\x98", b"\xf0\x9f\x98\x41", b"\xf4\x90\x80\x80",
             b"\xf4\x8f\xbf\xbf", b"\xf5\x80\x80\x80", b"\xf8\x88\x80\x80\x80", b"\xfc\x84\x80\x80\x80\x80",
             b"\xfe", b"\xff", b"\xfe\xff", b"\xff\xfe", b"a\x80b", b"\xe2\x82\xac\x80", b"\xc3\xa9\xc3",
             b"hello\xffworld", b"it\x92s", b"caf\xe9", b"\x93quoted\x94", b" \xa0 ", b"\xc2\xa0\xa0"]
    for s in fixed:
        add("invalid_utf8", s)
        add("invalid_utf8", b"x " + s + b" y")
    for _ in range(170):
        r = rng.random()
        if r < 0.4:
            s = bytes(rng.randint(0, 255) for _ in range(rng.randint(1, 24)))
        elif r < 0.7:
            good = utf8(rng.choice(PROSE + SCRIPTS["emoji"] + SCRIPTS["cjk"]))
            cut = rng.randint(0, len(good))
            s = good[:cut] + bytes(rng.randint(0x80, 0xff) for _ in range(rng.randint(1, 3))) + good[cut:]
        else:
            good = utf8(rng.choice(SCRIPTS["emoji"] + SCRIPTS["cjk"] + SCRIPTS["indic"]))
            a = rng.randint(0, len(good))
            b = rng.randint(a, len(good))
            s = good[a:b]
            if s.decode("utf-8", "replace").encode() == s:
                s = good[:max(1, a) - 1 + 1] + good[a + 1:]  # drop a byte
        add("invalid_utf8", s)

    # special tokens in text
    eot = "<|endoftext|>"
    for s in [eot, eot + eot, " " + eot, eot + " ", " " + eot + " ", "a" + eot + "b", "a " + eot + " b",
              "\n" + eot + "\n", eot + "\n\n", "<|endoftext|", "|endoftext|>", "<|endoftext|>|>", "<<|endoftext|>>",
              "<|ENDOFTEXT|>", "<| endoftext |>", "<|endoftext|><|endoftext|> x", "'s" + eot + "'s",
              "😀" + eot + "😀", "Hello world" + eot + "Goodbye", eot + "  " + eot, "x\t" + eot]:
        add("special", s)
    for _ in range(60):
        parts = [rng.choice([eot, rng.choice(WORDS), " ", "\n", "<|", "|>", "!", "😀", "'ll", "12"])
                 for _ in range(rng.randint(1, 8))]
        add("special", "".join(parts))

    # mixtures of everything above (short ones)
    short = [s for c, s in out if 0 < len(s) < 60 and c != "invalid_utf8"]
    for _ in range(200):
        add("mixed", b"".join(rng.choice(short) for _ in range(rng.randint(2, 5))))

    # very long words and runs (several KB each)
    add("long", "a" * 6000)
    add("long", "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(8000)))
    add("long", "".join(rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(5000)))
    add("long", "".join(rng.choice("0123456789") for _ in range(5000)))
    add("long", "".join(rng.choice("!@#$%^&*()_+-=[]{};:,.<>/?|~") for _ in range(4000)))
    add("long", " " * 5000 + "x")
    add("long", "\n" * 3000)
    add("long", " \t" * 2000 + "end")
    add("long", "ab" * 3000)
    add("long", "😀" * 1500)
    add("long", "".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(2500)))
    add("long", "".join(chr(rng.randint(0x0600, 0x06FF)) for _ in range(2500)))
    add("long", "x" + "\u0301" * 3000)
    add("long", "https://example.com/" + "".join(rng.choice("abcdef0123456789/-_.?=&") for _ in range(4000)))
    add("long", "".join(rng.choice(WORDS) for _ in range(1000)))
    return out


# ---------------------------------------------------------------------------- decode cases

def byte_ids(tok):
    """GPT-2's single-byte tokens: byte -> id."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: tok.convert_tokens_to_ids(chr(c)) for b, c in zip(bs, cs)}


def decode_cases(rng, tok, corpus_ids):
    bid = byte_ids(tok)
    cases = []
    samples = [b"\xe2\x82\xac", b"\xf0\x9f\x98\x80", b"\xc3\xa9", b"\xe4\xbd\xa0", b"\xf0\x9f\x91\xa8\xe2\x80\x8d"]
    for s in samples:
        for cut in range(1, len(s) + 1):
            cases.append([bid[b] for b in s[:cut]])
            cases.append([bid[b] for b in s[cut - 1:]])
            cases.append([bid[b] for b in s[:cut]] + [50256] + [bid[b] for b in s[cut:]])
    for _ in range(150):
        cases.append([bid[rng.randint(0x80, 0xff)] for _ in range(rng.randint(1, 8))])
    for _ in range(100):
        cases.append([rng.randint(0, 50256) for _ in range(rng.randint(1, 20))])
    nonempty = [ids for ids in corpus_ids if len(ids) > 1]
    for _ in range(200):
        ids = rng.choice(nonempty)
        a = rng.randint(0, len(ids) - 1)
        b = rng.randint(a + 1, min(len(ids), a + 30))
        cases.append(ids[a:b])
    cases.append([])
    return cases


# ---------------------------------------------------------------------------- code point classes

def classes():
    from tokenizers import pre_tokenizers
    pt = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    runs = []
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        c = chr(cp)
        if len(pt.pre_tokenize_str("a" + c)) == 1:
            k = "L"
        elif len(pt.pre_tokenize_str("1" + c)) == 1:
            k = "N"
        elif len(pt.pre_tokenize_str("!" + c)) == 1:
            k = "P"
        else:
            k = "S"
        if runs and runs[-1][2] == k and runs[-1][1] == cp - 1:
            runs[-1][1] = cp
        else:
            runs.append([cp, cp, k])
    return runs


# ---------------------------------------------------------------------------- a custom vocabulary

def custom_case(rng, tokenizer_cls):
    """A small byte-level BPE vocabulary that is not GPT-2's: missing bytes,
    gaps in the ids, merges in unusual orders, two pairs making the same
    token, a pair named twice, a token that is not byte-level text, added
    tokens from tokenizer_config.json."""
    G = "Ġ"  # the space byte
    vocab_list = ["a", "b", "c", "d", "e", "l", "h", "o", G, "!", "x", "y", "é".encode().decode("latin-1"),
                  "Ã", "©", "ð", "Ł", "Ģ", "Ĭ"]
    # the byte 0xC3 0xA9 of "é" appear as "Ã" and "©" (byte-level characters)
    vocab_list = [v for v in vocab_list if len(v) == 1]
    # ("e", "d") and ("a", "b") come twice: the later rank counts, as in HF's map
    merges = [("e", "d"), ("b", "c"), ("a", "bc"), ("a", "b"), ("ab", "c"), (G, "a"), ("Ġa", "b"), ("h", "e"), ("l", "l"),
              ("he", "ll"), ("hell", "o"), (G, "hello"), ("Ã", "©"), ("c", "c"), ("cc", "c"), ("c", "cc"),
              ("ccc", "c"), ("cc", "cc"), ("a", "b"), ("x", "y"), ("xy", "xy"), ("d", "e"), ("e", "d")]
    tokens = list(vocab_list)
    for l, r in merges:
        if l + r not in tokens:
            tokens.append(l + r)
    # Dense ids (transformers gives added tokens the ids after the count of
    # entries, so a vocabulary with gaps would collide), in a shuffled order.
    tokens += ["<|endoftext|>", "two words"]  # "two words" is not byte-level text: it decodes as itself
    order = list(range(len(tokens)))
    rng.shuffle(order)
    vocab = {}
    for i in order:
        vocab[tokens[i]] = i
    merges_txt = "#version: 0.2\n" + "".join("%s %s\n" % m for m in merges)
    top = max(vocab.values())
    config = {
        "added_tokens_decoder": {
            str(vocab["<|endoftext|>"]): {"content": "<|endoftext|>", "lstrip": False, "normalized": False, "rstrip": False,
                  "single_word": False, "special": True},
            str(top + 1): {"content": "<|user|>", "lstrip": False, "normalized": False, "rstrip": False,
                           "single_word": False, "special": True},
            str(top + 2): {"content": "<|user|>>", "lstrip": False, "normalized": False, "rstrip": False,
                           "single_word": False, "special": True},
            str(top + 3): {"content": "[ADD]", "lstrip": False, "normalized": False, "rstrip": False,
                           "single_word": False, "special": False},
            str(top + 4): {"content": "<R>", "lstrip": False, "normalized": False, "rstrip": True,
                           "single_word": False, "special": True},
            str(top + 5): {"content": "<L>", "lstrip": True, "normalized": False, "rstrip": False,
                           "single_word": False, "special": True},
            # normalized: matched after the others, so "x<|user|>" is x + <|user|>
            str(top + 6): {"content": "x<|us", "lstrip": False, "normalized": True, "rstrip": False,
                           "single_word": False, "special": False},
        },
        "tokenizer_class": "GPT2Tokenizer",
    }
    texts = ["abc", "abcabc", " abc", " ab", "hello", " hello", "hello!", "é", "éé", "cc", "ccc", "cccc", "ccccc",
             "cccccccc", "xyxy", "xyxyxy", "ded", "eded", "zzz", "a-b", "q", "", " ", "a b c", "a<|endoftext|>b",
             "<|user|>>", "<|user|>", "x<|user|>>y", "[ADD]x", "a [ADD] b", "x  <R>  y", "x  <L>  y", "<L><R>",
             "  <L>", "<R>  ", "x<|user|>", "zx<|us", "x<|user|> x<|us", "two words", "ab\u00e9c", "\xff", "abc" * 50]
    for _ in range(60):
        texts.append("".join(rng.choice(["a", "b", "c", "cc", "d", "e", " ", "  ", "h", "l", "o", "x", "y", "é", "!",
                                         "z", "<|endoftext|>", "<|user|>", "[ADD]", "<R>", " <L>", "x<|us"])
                             for _ in range(rng.randint(1, 10))))
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "vocab.json"), "w", encoding="utf-8") as f:
            json.dump(vocab, f, ensure_ascii=False)
        with open(os.path.join(d, "merges.txt"), "w", encoding="utf-8") as f:
            f.write(merges_txt)
        plain = tokenizer_cls.from_pretrained(d)
        with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f, ensure_ascii=False)
        withcfg = tokenizer_cls.from_pretrained(d)
    for content, spec in config["added_tokens_decoder"].items():
        assert withcfg.convert_tokens_to_ids(spec["content"]) == int(content), spec
    cases = []
    for s in texts:
        cases.append({
            "hex": utf8(s).hex(),
            "ids": plain(s)["input_ids"],
            "plain": plain(s, split_special_tokens=True)["input_ids"],
            "config_ids": withcfg(s)["input_ids"],
            "config_plain": withcfg(s, split_special_tokens=True)["input_ids"],
        })
    decodes = []
    all_ids = sorted(vocab.values()) + [top + 1, top + 3, top + 6]
    for _ in range(40):
        seq = [rng.choice(all_ids) for _ in range(rng.randint(1, 6))]
        decodes.append({"ids": seq, "hex": utf8(withcfg.decode(seq)).hex()})
    return {"vocab": vocab, "merges": merges_txt, "config": config, "cases": cases, "decode": decodes}


# ---------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokenizer", default=DEFAULT_TOKENIZER)
    ap.add_argument("--out", default=HERE)
    ap.add_argument("--no-classes", action="store_true", help="skip tokenizer_classes.txt (slow: ~15 s)")
    args = ap.parse_args()

    import transformers
    from transformers import GPT2TokenizerFast
    transformers.logging.set_verbosity_error()
    tok = GPT2TokenizerFast.from_pretrained(args.tokenizer)
    backend = tok.backend_tokenizer

    rng = random.Random(20251122)
    items = corpus(rng)
    corpus_ids = []
    with open(os.path.join(args.out, "tokenizer_corpus.jsonl"), "w") as fc, \
            open(os.path.join(args.out, "tokenizer_ids.jsonl"), "w") as fi:
        for cat, raw in items:
            text = raw.decode("utf-8", "replace")
            ids = tok(text)["input_ids"]
            plain = tok(text, split_special_tokens=True)["input_ids"]
            # the same through tokenizers directly
            backend.encode_special_tokens = False
            assert backend.encode(text).ids == ids, (cat, raw)
            backend.encode_special_tokens = True
            assert backend.encode(text).ids == plain, (cat, raw)
            backend.encode_special_tokens = False
            assert tok.decode(ids) == text, (cat, raw)
            corpus_ids.append(ids)
            fc.write(json.dumps({"cat": cat, "hex": raw.hex()}) + "\n")
            rec = {"ids": ids}
            if plain != ids:
                rec["plain"] = plain
            if text.encode("utf-8") != raw:
                rec["text"] = text.encode("utf-8").hex()  # what HF saw (and what decode gives back)
            fi.write(json.dumps(rec, separators=(",", ":")) + "\n")

    with open(os.path.join(args.out, "tokenizer_decode.jsonl"), "w") as fd:
        for ids in decode_cases(rng, tok, corpus_ids):
            text = tok.decode(ids)
            assert backend.decode(ids, skip_special_tokens=False) == text
            fd.write(json.dumps({"ids": ids, "hex": utf8(text).hex()}, separators=(",", ":")) + "\n")

    with open(os.path.join(args.out, "tokenizer_custom.json"), "w") as f:
        json.dump(custom_case(rng, GPT2TokenizerFast), f, ensure_ascii=True, indent=1)
        f.write("\n")

    if not args.no_classes:
        with open(os.path.join(args.out, "tokenizer_classes.txt"), "w") as f:
            f.write("# Hugging Face tokenizers %s: the GPT-2 pre-tokeniser's class of each code point\n"
                    % __import__("tokenizers").__version__)
            f.write("# (L letter, N number, S white space, P anything else); FIRST LAST CLASS in hex\n")
            for a, b, k in classes():
                f.write("%x %x %s\n" % (a, b, k))

    cats = {}
    for cat, _ in items:
        cats[cat] = cats.get(cat, 0) + 1
    print("%d strings in %d categories: %s" % (len(items), len(cats),
                                                ", ".join("%s %d" % kv for kv in sorted(cats.items()))))


if __name__ == "__main__":
    sys.exit(main())
