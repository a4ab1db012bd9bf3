/* tokenizer.c -- GPT-2 byte-level BPE: encode, decode and streaming detokenisation, identical to Hugging Face's.
 *
 * Loads any vocab.json + merges.txt pair (GPT-2's or a model's own). Encoding
 * follows Hugging Face `tokenizers` (GPT2TokenizerFast) step by step:
 * invalid UTF-8 is replaced by U+FFFD as Python's bytes.decode("utf-8",
 * "replace") does; added tokens (<|endoftext|> and those of
 * tokenizer_config.json) are split out first; the rest is cut by GPT-2's
 * pre-tokenisation regex (PCRE2, with \s as Unicode White_Space and the
 * letters and digits that Hugging Face's Unicode 16 tables know); each piece
 * is mapped byte by byte to GPT-2's printable alphabet and merged by rank.
 *
 * A loaded tokenizer is immutable: any number of threads may use one at once.
 * Every call keeps its scratch to itself. */
#ifndef LLMCGI_TOKENIZER_H
#define LLMCGI_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tokenizer;

/* Error codes (all negative; 0 is success). */
enum {
    TOKENIZER_OK = 0,
    TOKENIZER_ENOMEM = -1,      /* out of memory */
    TOKENIZER_EIO = -2,         /* a file could not be read */
    TOKENIZER_EFORMAT = -3,     /* a file is not what it should be */
    TOKENIZER_ERANGE = -4,      /* a token id outside the vocabulary */
    TOKENIZER_EREGEX = -5,      /* PCRE2 failed (compiling or matching) */
    TOKENIZER_EINVAL = -6,      /* bad arguments */
};

/* A short English description of an error code (static storage). */
const char *tokenizer_strerror(int rc);

/* Loader flags. */
#define TOKENIZER_NO_JIT 1u     /* match with PCRE2's interpreter even where JIT works (tests) */

/* Loads vocab.json (token -> id) and merges.txt (one "left right" pair per
 * line, by rank; "#version" lines skipped; a pair named twice takes its later
 * rank, as Hugging Face does). Ids are integers from 0 up to 2 x entries +
 * 65536 (gaps allowed, not a sparse table of billions). "<|endoftext|>"
 * becomes a special token when the vocabulary has it. On success returns 0
 * and *out owns a new tokenizer (free it with tokenizer_free); on error
 * returns a code and writes a message naming the file and line or entry
 * into err[errlen] (err may be NULL). */
int tokenizer_load(const char *vocab_json, const char *merges_txt, struct tokenizer **out,
                   char *err, size_t errlen);

/* The same from a Hugging Face model directory: model_dir/vocab.json and
 * model_dir/merges.txt, plus the added tokens of
 * model_dir/tokenizer_config.json ("added_tokens_decoder") when that file
 * exists. Entries with "special": true are special tokens (see
 * tokenizer_encode's allow_special); the others are added tokens that are
 * always matched in text, as Hugging Face does. Their "lstrip", "rstrip"
 * and "normalized" flags are honoured ("single_word" is not). */
int tokenizer_load_dir(const char *model_dir, struct tokenizer **out, char *err, size_t errlen);

/* The same from memory (the buffers are only read during the call). The
 * names are used in error messages. config_json may be NULL (no
 * tokenizer_config.json). flags: TOKENIZER_NO_JIT or 0. */
int tokenizer_load_mem(const char *vocab_json, size_t vocab_len, const char *vocab_name,
                       const char *merges_txt, size_t merges_len, const char *merges_name,
                       const char *config_json, size_t config_len, const char *config_name,
                       unsigned flags, struct tokenizer **out, char *err, size_t errlen);

/* Frees a tokenizer and everything it owns. NULL is fine. */
void tokenizer_free(struct tokenizer *t);

/* Encodes text[0..len) (any bytes). With allow_special, the literal text of
 * a special token (e.g. "<|endoftext|>") becomes that token's id, as
 * transformers does by default; without, it is tokenized as plain text
 * (split_special_tokens=True). On success *ids is a new array the caller
 * frees (never NULL, even when *n_ids is 0). Each calling thread keeps a
 * 256 KiB cache of short words, freed when the thread exits. */
int tokenizer_encode(const struct tokenizer *t, const char *text, size_t len, bool allow_special,
                     int32_t **ids, size_t *n_ids);

/* Decodes ids to text: the tokens' bytes joined, then any invalid UTF-8
 * replaced by U+FFFD (maximal subparts, as Hugging Face does). An id outside
 * the vocabulary is TOKENIZER_ERANGE. On success *out is a new NUL-terminated
 * string the caller frees; *len excludes the NUL. */
int tokenizer_decode(const struct tokenizer *t, const int32_t *ids, size_t n, char **out, size_t *len);

/* The raw bytes of one token (after byte-level unmapping; not necessarily
 * valid UTF-8 on their own), owned by the tokenizer; NULL when id is not in
 * the vocabulary. */
const char *tokenizer_token_bytes(const struct tokenizer *t, int32_t id, size_t *len);

/* The most bytes of input text one token can stand for (GPT-2's: its
 * longest token), so that a text of n bytes makes at least n / this many
 * tokens: a cheap bound to refuse a text too long for a model before
 * encoding it. 0 when there is no such bound (an added token that absorbs
 * white space, a byte the vocabulary lacks and encoding drops). */
size_t tokenizer_max_cover(const struct tokenizer *t);

/* One more than the largest id (vocabulary and added tokens). Ids below it
 * may still be unused when the vocabulary has gaps. */
int tokenizer_vocab_size(const struct tokenizer *t);

/* The id of the special token whose text is `text`, or -1. */
int32_t tokenizer_special_id(const struct tokenizer *t, const char *text);

/* The id of "<|endoftext|>" when it is a special token, else -1. */
int32_t tokenizer_eos_id(const struct tokenizer *t);

/* Whether id is a special token (what skip_special_tokens would drop). */
bool tokenizer_is_special(const struct tokenizer *t, int32_t id);

/* Calls fn once per pre-tokenized piece of text, in order: the added tokens
 * matched (id >= 0) and the regex pieces between them (id -1). Pieces point
 * into a scratch copy of text (with U+FFFD in place of invalid UTF-8) that
 * lives during the call only. A non-zero return from fn stops and is
 * returned. For tests and tools. */
typedef int (*tokenizer_piece_fn)(void *ud, const char *piece, size_t len, int32_t id);
int tokenizer_pretokenize(const struct tokenizer *t, const char *text, size_t len, bool allow_special,
                          tokenizer_piece_fn fn, void *ud);

/* Streaming detokenisation: push ids one at a time, get back only complete
 * UTF-8 text. A multi-byte character split across tokens comes out whole
 * once its last byte arrives; bytes that can never form a character come out
 * as U+FFFD as soon as that is known; detok_flush turns a dangling
 * incomplete sequence into U+FFFD. All outputs joined equal
 * tokenizer_decode of all the ids. */
struct detok {
    const struct tokenizer *t;  /* borrowed; must outlive the detok */
    unsigned char pend[4];      /* an incomplete but so far valid sequence */
    size_t npend;
    char *buf;                  /* owned: the last output */
    size_t cap;
};

void detok_init(struct detok *d, const struct tokenizer *t);

/* Adds one id. On success *text (owned by d, NUL-terminated, valid until the
 * next call on d) holds the newly complete text, *len its length (may be 0).
 * TOKENIZER_ERANGE for an id outside the vocabulary (d is unchanged). */
int detok_push(struct detok *d, int32_t id, const char **text, size_t *len);

/* Ends the stream: *text gets U+FFFD when a sequence was left incomplete,
 * else "". d can then be used for a new stream. */
int detok_flush(struct detok *d, const char **text, size_t *len);

/* Frees d's buffer (d can be initialised again). */
void detok_free(struct detok *d);

#endif
