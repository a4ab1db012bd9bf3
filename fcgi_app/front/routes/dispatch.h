/* dispatch.c -- the generation dispatcher: where every generation request enters, read once in its client dialect and handed to classification, a local model or an upstream. */
#ifndef LLMCGI_DISPATCH_H
#define LLMCGI_DISPATCH_H

#include "request.h"

int route_gen_chat(struct req *r);              /* POST /v1/chat/completions */
int route_gen_completions(struct req *r);       /* POST /v1/completions */
int route_gen_responses(struct req *r);         /* POST /v1/responses */
int route_gen_embeddings(struct req *r);        /* POST /v1/embeddings */
int route_gen_generate(struct req *r);          /* POST /generate (TGI, or {"model_id","prompt"}) */
int route_gen_generate_stream(struct req *r);   /* POST /generate_stream */
int route_gen_compat(struct req *r);            /* POST / ({"inputs","parameters","stream"}) */

#endif
