/* chat_template.h -- renders an OpenAI `messages` list into the prompt text a GPT-2-class model continues: DialoGPT style (turns joined by the end-of-text token) or a plain transcript. */
#ifndef LLMCGI_CHAT_TEMPLATE_H
#define LLMCGI_CHAT_TEMPLATE_H

#include <stddef.h>

#include <json-c/json.h>

enum chat_template {
    CHAT_TEMPLATE_AUTO,         /* pick by model directory (chat_template_resolve) */
    CHAT_TEMPLATE_PLAIN,        /* "System\n\nUser: ...\nAssistant: ...\nAssistant:" */
    CHAT_TEMPLATE_DIALOGPT,     /* "turn<eos>turn<eos>" */
};

/* Return codes of chat_template_render (0 is success). */
#define CHAT_TEMPLATE_OK 0
#define CHAT_TEMPLATE_EINVAL (-1)   /* the messages are invalid: err holds the message of a 400 answer */
#define CHAT_TEMPLATE_ENOMEM (-2)   /* out of memory (err says so too) */

/* "auto", "plain", "dialogpt" (exactly, as the config spells them) -> *out,
 * returns 0; anything else (NULL included) returns -1, *out untouched. */
int chat_template_parse(const char *s, enum chat_template *out);

/* "auto", "plain" or "dialogpt" (static storage); "?" for a value outside the enum. */
const char *chat_template_name(enum chat_template t);

/* AUTO resolved for a model directory: DIALOGPT when the directory's last
 * path component (trailing slashes ignored) contains "dialogpt",
 * case-insensitively, else PLAIN (also for a NULL model_dir). Any other
 * value comes back unchanged. model_dir is only read. */
enum chat_template chat_template_resolve(enum chat_template t, const char *model_dir);

/* Renders messages, a json-c array of {"role", "content"} objects (only
 * read; other keys such as "name" or "tool_calls" are ignored), into the
 * prompt text. Roles: system, developer (treated as system), user,
 * assistant, tool. content is a string or a list of content parts
 * {"type": "text", "text": ...} whose texts are concatenated (as TGI does);
 * an assistant message may have null or no content (an empty turn). Content
 * is kept as is, multi-line included; a NUL character in it is refused.
 *
 * DIALOGPT (Hugging Face's DialoGPT model card: each turn encoded as
 * text + eos_token, the history concatenated): every message's content
 * followed by eos, system/developer messages included as turns; the model
 * continues after the last eos. No stop strings (the model ends its turn
 * with eos). eos must be the model's end-of-text token text
 * ("<|endoftext|>"); it is only used by DIALOGPT (may be NULL otherwise).
 *
 * PLAIN: the system/developer contents joined by "\n" and followed by
 * "\n\n" (when there is any), then one line per other message:
 * "User: <content>\n", "Assistant: <content>\n", "Tool: <content>\n" (no
 * space after the colon when the content is empty, e.g. "Assistant:\n" for
 * a null one); then "Assistant:" with no trailing space
 * (GPT-2 tokens carry their leading space). Stop string "\nUser:", so a
 * model that goes on to invent the next user turn stops there.
 *
 * AUTO is rendered as PLAIN: resolve it first (chat_template_resolve).
 *
 * On success returns CHAT_TEMPLATE_OK, *out is a new NUL-terminated string
 * the caller frees, of *out_len bytes (messages' content may hold NUL,
 * JSON's \u0000, which the prompt carries), and *stops / *n_stops are the stop strings this
 * template wants added to the request (static storage, never freed;
 * *stops is NULL when *n_stops is 0). On error returns CHAT_TEMPLATE_EINVAL
 * with a message naming the offending element in err, e.g.
 * "`messages[2].content` must be a string or a list of text parts", or
 * CHAT_TEMPLATE_ENOMEM; *out is then NULL, *out_len 0, *stops NULL and *n_stops 0. err
 * is always NUL-terminated when errlen > 0 ("" on success); it may be NULL. */
int chat_template_render(enum chat_template t, json_object *messages, const char *eos, char **out, size_t *out_len,
                         const char *const **stops, size_t *n_stops, char *err, size_t errlen);

#endif
