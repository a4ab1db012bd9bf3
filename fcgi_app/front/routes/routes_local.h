/* routes_local.c -- generation on local models: requests in any client dialect (OpenAI chat and completions, TGI, the older model_id/prompt shape) run on the model's engine and are answered whole or streamed; GET /info and POST /tokenize. */
#ifndef LLMCGI_ROUTES_LOCAL_H
#define LLMCGI_ROUTES_LOCAL_H

#include <json-c/json.h>
#include <stdbool.h>

#include "dialect.h"
#include "request.h"

/* Answers a generation request already read into g (borrowing from body)
 * on the local model `model`. variant: -1 OpenAI routes, 0 /generate,
 * 1 /generate_stream, 2 POST / (TGI answers a list). Returns 0, or -1 when
 * the client went away. */
int local_generate(struct req *r, enum client_kind kind, int variant, json_object *body, struct gen *g,
                   const char *model);

int route_info(struct req *r);          /* GET /info */
int route_tokenize(struct req *r);      /* POST /tokenize */

#endif
