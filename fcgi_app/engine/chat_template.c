/* chat_template.c -- renders an OpenAI `messages` list into the prompt text a GPT-2-class model continues: DialoGPT style (turns joined by the end-of-text token) or a plain transcript. */
#include "config.h"
#include "chat_template.h"
#include "util.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const template_names[] = {
    [CHAT_TEMPLATE_AUTO] = "auto",
    [CHAT_TEMPLATE_PLAIN] = "plain",
    [CHAT_TEMPLATE_DIALOGPT] = "dialogpt",
};
#define N_TEMPLATES (sizeof template_names / sizeof template_names[0])

static const char *const plain_stops[] = {"\nUser:"};

enum role { ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT, ROLE_TOOL };

static const struct {
    const char *name;
    enum role role;
} roles[] = {
    {"system", ROLE_SYSTEM},
    {"developer", ROLE_SYSTEM},
    {"user", ROLE_USER},
    {"assistant", ROLE_ASSISTANT},
    {"tool", ROLE_TOOL},
};

int chat_template_parse(const char *s, enum chat_template *out)
{
    if (!s)
        return -1;
    for (size_t i = 0; i < N_TEMPLATES; i++)
        if (strcmp(s, template_names[i]) == 0) {
            *out = (enum chat_template)i;
            return 0;
        }
    return -1;
}

const char *chat_template_name(enum chat_template t)
{
    return (unsigned)t < N_TEMPLATES ? template_names[t] : "?";
}

/* Whether s[0..len) contains needle (lower case ASCII) ignoring ASCII case. */
static bool contains_nocase(const char *s, size_t len, const char *needle)
{
    size_t nl = strlen(needle);
    for (size_t i = 0; i + nl <= len; i++) {
        size_t j = 0;
        while (j < nl && tolower((unsigned char)s[i + j]) == needle[j])
            j++;
        if (j == nl)
            return true;
    }
    return false;
}

enum chat_template chat_template_resolve(enum chat_template t, const char *model_dir)
{
    if (t != CHAT_TEMPLATE_AUTO)
        return t;
    if (!model_dir)
        return CHAT_TEMPLATE_PLAIN;
    size_t end = strlen(model_dir);
    while (end > 0 && model_dir[end - 1] == '/')
        end--;
    size_t start = end;
    while (start > 0 && model_dir[start - 1] != '/')
        start--;
    return contains_nocase(model_dir + start, end - start, "dialogpt") ? CHAT_TEMPLATE_DIALOGPT
                                                                       : CHAT_TEMPLATE_PLAIN;
}

/* ---------------------------------------------------------------- rendering */

static void set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Appends a JSON string's bytes to b, NUL (\u0000) included. */
static void add_text(struct strbuf *b, json_object *s)
{
    strbuf_add(b, json_object_get_string(s), (size_t)json_object_get_string_len(s));
}

/* Appends the content of messages[i] (content may be NULL: JSON null or
 * absent) to b. Returns 0 or CHAT_TEMPLATE_EINVAL with err set. */
static int add_content(struct strbuf *b, json_object *content, size_t i, enum role role, char *err, size_t errlen)
{
    if (!content || json_object_is_type(content, json_type_null)) {
        if (role == ROLE_ASSISTANT)
            return 0;
    } else if (json_object_is_type(content, json_type_string)) {
        add_text(b, content);
        return 0;
    } else if (json_object_is_type(content, json_type_array)) {
        size_t n = json_object_array_length(content);
        for (size_t j = 0; j < n; j++) {
            json_object *part = json_object_array_get_idx(content, j), *type, *text;
            if (!json_object_is_type(part, json_type_object)) {
                set_err(err, errlen, "`messages[%zu].content[%zu]` must be an object with a type and text", i, j);
                return CHAT_TEMPLATE_EINVAL;
            }
            if (!json_object_object_get_ex(part, "type", &type) || !json_object_is_type(type, json_type_string)) {
                set_err(err, errlen, "`messages[%zu].content[%zu].type` must be a string", i, j);
                return CHAT_TEMPLATE_EINVAL;
            }
            if (strcmp(json_object_get_string(type), "text") != 0) {
                set_err(err, errlen, "`messages[%zu].content[%zu]`: only text parts are supported (got %.64s)", i, j,
                        json_object_get_string(type));
                return CHAT_TEMPLATE_EINVAL;
            }
            if (!json_object_object_get_ex(part, "text", &text) || !json_object_is_type(text, json_type_string)) {
                set_err(err, errlen, "`messages[%zu].content[%zu].text` must be a string", i, j);
                return CHAT_TEMPLATE_EINVAL;
            }
            add_text(b, text);
        }
        return 0;
    }
    set_err(err, errlen, "`messages[%zu].content` must be a string or a list of text parts", i);
    return CHAT_TEMPLATE_EINVAL;
}

/* The role of messages[i]. Returns 0 or CHAT_TEMPLATE_EINVAL with err set. */
static int get_role(json_object *msg, size_t i, enum role *role, char *err, size_t errlen)
{
    json_object *r;
    if (!json_object_object_get_ex(msg, "role", &r) || !json_object_is_type(r, json_type_string)) {
        set_err(err, errlen, "`messages[%zu].role` must be one of system, developer, user, assistant, tool", i);
        return CHAT_TEMPLATE_EINVAL;
    }
    const char *s = json_object_get_string(r);
    for (size_t k = 0; k < sizeof roles / sizeof roles[0]; k++)
        if (strcmp(s, roles[k].name) == 0) {
            *role = roles[k].role;
            return 0;
        }
    set_err(err, errlen,
            "`messages[%zu].role` must be one of system, developer, user, assistant, tool (got \"%.64s\")", i, s);
    return CHAT_TEMPLATE_EINVAL;
}

int chat_template_render(enum chat_template t, json_object *messages, const char *eos, char **out, size_t *out_len,
                         const char *const **stops, size_t *n_stops, char *err, size_t errlen)
{
    *out = NULL;
    *out_len = 0;
    *stops = NULL;
    *n_stops = 0;
    if (err && errlen)
        err[0] = '\0';
    if (!json_object_is_type(messages, json_type_array) || json_object_array_length(messages) == 0) {
        set_err(err, errlen, "`messages` must be a non-empty list of messages");
        return CHAT_TEMPLATE_EINVAL;
    }
    bool dialogpt = t == CHAT_TEMPLATE_DIALOGPT;
    if (dialogpt && (!eos || !*eos)) {
        set_err(err, errlen, "the dialogpt chat template needs the model's end-of-text token");
        return CHAT_TEMPLATE_EINVAL;
    }

    struct strbuf sys = {0}, turns = {0}, content = {0};
    int rc = CHAT_TEMPLATE_OK;
    bool any_sys = false;
    size_t n = json_object_array_length(messages);
    for (size_t i = 0; i < n && rc == CHAT_TEMPLATE_OK; i++) {
        json_object *msg = json_object_array_get_idx(messages, i), *c = NULL;
        enum role role;
        if (!json_object_is_type(msg, json_type_object)) {
            set_err(err, errlen, "`messages[%zu]` must be an object with a role and content", i);
            rc = CHAT_TEMPLATE_EINVAL;
            break;
        }
        if ((rc = get_role(msg, i, &role, err, errlen)) != CHAT_TEMPLATE_OK)
            break;
        json_object_object_get_ex(msg, "content", &c);
        content.len = 0;
        strbuf_add(&content, "", 0);
        if ((rc = add_content(&content, c, i, role, err, errlen)) != CHAT_TEMPLATE_OK)
            break;
        if (content.nomem)
            break;
        if (dialogpt) {
            strbuf_add(&turns, content.s, content.len);
            strbuf_puts(&turns, eos);
        } else if (role == ROLE_SYSTEM) {
            if (any_sys)
                strbuf_puts(&sys, "\n");
            strbuf_add(&sys, content.s, content.len);
            any_sys = true;
        } else {
            strbuf_puts(&turns, role == ROLE_USER ? "User:" : role == ROLE_ASSISTANT ? "Assistant:" : "Tool:");
            if (content.len) {
                strbuf_puts(&turns, " ");
                strbuf_add(&turns, content.s, content.len);
            }
            strbuf_puts(&turns, "\n");
        }
    }
    if (rc == CHAT_TEMPLATE_OK) {
        bool nomem = turns.nomem || content.nomem;
        if (!dialogpt) {
            if (any_sys)
                strbuf_puts(&sys, "\n\n");
            strbuf_add(&sys, turns.s ? turns.s : "", turns.len);
            strbuf_puts(&sys, "Assistant:");
            free(turns.s);
            turns = sys;
            sys = (struct strbuf){0};
        }
        if (nomem || turns.nomem || !turns.s) {
            set_err(err, errlen, "out of memory");
            rc = CHAT_TEMPLATE_ENOMEM;
        }
    }
    free(content.s);
    free(sys.s);
    if (rc != CHAT_TEMPLATE_OK) {
        free(turns.s);
        return rc;
    }
    *out = turns.s;
    *out_len = turns.len;
    if (!dialogpt) {
        *stops = plain_stops;
        *n_stops = sizeof plain_stops / sizeof plain_stops[0];
    }
    return CHAT_TEMPLATE_OK;
}
