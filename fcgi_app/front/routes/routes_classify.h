/* routes_classify.c -- classification on local GPT-2 sequence classifiers: POST /classify (Hugging Face's text-classification shape), POST /v1/moderations (OpenAI), and the moderation service's POST /generate {"input_text"}. */
#ifndef LLMCGI_ROUTES_CLASSIFY_H
#define LLMCGI_ROUTES_CLASSIFY_H

#include <json-c/json.h>
#include <stdbool.h>

#include "request.h"

/* POST /classify: {"inputs": string | [string], "parameters": {"top_k",
 * "function_to_apply"}, "top_k", "model"} -> per input a list of
 * {"label","score"}, highest score first (a list of such lists for a list
 * of inputs). Errors in the TGI shape. */
int route_classify(struct req *r);

/* POST /v1/moderations: {"input": string | [string | {"type":"text","text"}],
 * "model"} -> {"id","model","results":[{"flagged","categories",
 * "category_scores"}]}. Errors in the OpenAI shape. */
int route_moderations(struct req *r);

/* Is body the moderation service's {"input_text": ...} (POST /generate)? */
bool classify_is_input_text(json_object *body);

/* Answers POST /generate {"input_text": string | [string], "model_id"?}
 * with the moderation model's verdict (body borrowed). Returns 0, or -1
 * when the client went away. */
int classify_input_text(struct req *r, json_object *body);

/* POST /v1/embeddings for a local model (dispatch.c checked the key's
 * models and reserved tokens/min): the inputs' pooled final hidden states.
 * body borrowed. Returns 0, or -1 when the client went away. */
int classify_embeddings(struct req *r, json_object *body);

#endif
