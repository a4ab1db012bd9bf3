/* json_obj.c -- small helpers on json-c trees that every layer uses: read a member that is present and not null, or a string value, and add a string member from a C string that may be NULL or from bytes that may hold NUL. */
#ifndef LLMCGI_JSON_OBJ_H
#define LLMCGI_JSON_OBJ_H

#include <json-c/json.h>
#include <stddef.h>

/* The member `key` of object o, borrowed from o; NULL when o is NULL, the
 * member is absent, or it is JSON null (a client's "x": null means "not
 * given", as in OpenAI's and TGI's servers). */
json_object *json_field(json_object *o, const char *key);

/* v's string when v is a JSON string (borrowed from v), else NULL. */
const char *json_str(json_object *v);

/* Adds the string member k = v to o (v NULL adds ""); o takes the new string. */
void json_add_str(json_object *o, const char *k, const char *v);

/* Adds the string member k = v[0..len), NUL bytes included (a text: JSON
 * writes them as \u0000); v NULL adds "". o takes the new string. */
void json_add_strn(json_object *o, const char *k, const char *v, size_t len);

#endif
