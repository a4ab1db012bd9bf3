/* finish.h -- why a generation ended, one enum for local (engine) and proxied (upstream) generations alike. */
#ifndef LLMCGI_FINISH_H
#define LLMCGI_FINISH_H

/* FIN_NONE: still running (the engine), or the upstream named no reason.
 * FIN_OTHER: an upstream named a reason of its own (it counts as a stop). */
enum finish { FIN_NONE = 0, FIN_LENGTH, FIN_EOS, FIN_STOP_SEQUENCE, FIN_OTHER };

/* A short name for logs and tools: "length", "eos_token", "stop_sequence",
 * "other", "" for FIN_NONE. Static string. The client-facing words are
 * front/answer.c's (answer_finish_openai, answer_finish_tgi). */
const char *finish_name(enum finish f);

#endif
