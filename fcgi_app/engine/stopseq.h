/* stopseq.h -- stop sequences matched on streamed text: emits what is safe, holds back what could start a stop string. */
#ifndef LLMCGI_STOPSEQ_H
#define LLMCGI_STOPSEQ_H

#include <stdbool.h>
#include <stddef.h>

#define STOPSEQ_MAX 4           /* TGI's limit (OpenAI's too) */
#define STOPSEQ_MAX_LEN 256     /* bytes per stop string */

#define STOPSEQ_OK 0
#define STOPSEQ_ERR_INVAL (-1)
#define STOPSEQ_ERR_NOMEM (-2)

/* Checks a request's stop strings: at most STOPSEQ_MAX, each non-empty and
 * at most STOPSEQ_MAX_LEN bytes. stops[i] is lens[i] bytes, any bytes (a
 * JSON string may hold \u0000); lens NULL or lens[i] 0: up to its NUL.
 * Returns STOPSEQ_OK, or STOPSEQ_ERR_INVAL with a message in err (always
 * NUL-terminated when errlen > 0). */
int stopseq_validate(const char *const *stops, const size_t *lens, size_t n, char *err, size_t errlen);

/* The matcher of one generation. Semantics (OpenAI / TGI): the generated
 * text is cut before the first stop string that occurs in it, and the stop
 * string itself is never emitted. "First" is the one that completes first,
 * i.e. ends earliest in the text (generation stops at that point); of stop
 * strings ending at the same byte, the one that starts first (the longest).
 * The result does not depend on how the text is cut into deltas. */
struct stopseq;

/* Copies the n stop strings (lengths and validation as above; n may be 0:
 * everything passes straight through). Returns NULL with errno EINVAL or ENOMEM. The
 * caller owns the matcher and releases it with stopseq_free(). */
struct stopseq *stopseq_new(const char *const *stops, const size_t *lens, size_t n);
void stopseq_free(struct stopseq *ss);          /* NULL is fine */

/* What a feed or the finish hands back. text points into the matcher and
 * stays valid until the next call on it (copy it or send it before then). */
struct stopseq_result {
    const char *text;       /* the part safe to emit now (may be empty) */
    size_t len;
    bool stopped;           /* a stop string completed: this text is the last */
    int which;              /* then: the index of that stop string; -1 otherwise */
    size_t offset;          /* then: where it starts in the whole generated text (bytes) */
};

/* Feeds the next piece of generated text (as the detokeniser emits it; any
 * bytes). Emits everything except a tail that is the beginning of some stop
 * string (at most STOPSEQ_MAX_LEN - 1 bytes, held until the next feed
 * decides it). Once stopped, later feeds and the finish emit nothing.
 * Returns STOPSEQ_OK or STOPSEQ_ERR_NOMEM (the matcher is then unchanged). */
int stopseq_feed(struct stopseq *ss, const char *delta, size_t len, struct stopseq_result *res);

/* End of generation (EOS, length limit): releases the held-back tail. */
void stopseq_finish(struct stopseq *ss, struct stopseq_result *res);

#endif
