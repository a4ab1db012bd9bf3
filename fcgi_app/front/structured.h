/* structured.h -- structured output on local models: a request's constraint (OpenAI response_format, vLLM's guided_choice / guided_regex / guided_json, TGI's parameters.grammar, tools with tool_choice "required" or a named function) read and compiled into the engine's DFA, and the tool-call answer shapes.
 *
 * At most one constraint per request. Compiling happens on the responder
 * thread before anything is submitted (or, for a constraint seen before,
 * a lookup in the registry's cache of compiled ones), so a bad schema or regex is a 400
 * (OpenAI) / 422 (TGI) naming what is wrong. The DFA goes to every
 * sequence of the request (gen_params.constraint). */
#ifndef LLMCGI_STRUCTURED_H
#define LLMCGI_STRUCTURED_H

#include "constraint.h"
#include "constraint_cache.h"
#include "dialect.h"

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>

enum structured_tool {
    ST_TOOL_NONE = 0,
    ST_TOOL_NAMED,      /* tool_choice {"type":"function","function":{"name":N}}: the text is N's arguments */
    ST_TOOL_REQUIRED,   /* tool_choice "required": the text is {"name": one of the tools, "arguments": ...} */
};

struct structured {
    struct cdfa *dfa;           /* a reference, or NULL: no constraint */
    enum structured_tool tool;
    char name[256];             /* ST_TOOL_NAMED: the function */
};

/* Reads body's constraint for a request of kind. Returns 0 (st->dfa NULL
 * when there is none), or -1 with *status (400 or 422), *param (the
 * field, OpenAI's "param") and a message in err. st is zeroed first and
 * owned by the caller (structured_free). A constraint compiled before
 * (the same kind and canonical text) is taken from cache, and one
 * compiled now is kept there (cache NULL: neither). */
int structured_read(json_object *body, enum client_kind kind, struct ccache *cache, struct structured *st, int *status,
                    const char **param, char *err, size_t errlen);

void structured_free(struct structured *st);        /* a zeroed st is fine */

/* The OpenAI tool_calls list for a finished text: [{"id","type":"function",
 * "function":{"name","arguments"}}] (with "index": 0 when for_delta, as
 * stream chunks carry it). NULL when the text is not a whole call (cut by
 * max_tokens): the caller answers the text as content. New object. */
json_object *structured_tool_calls(const struct structured *st, const char *text, size_t len, bool for_delta);

#endif
