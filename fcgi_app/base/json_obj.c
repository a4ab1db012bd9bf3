/* json_obj.c -- small helpers on json-c trees that every layer uses: read a member that is present and not null, or a string value, and add a string member from a C string that may be NULL or from bytes that may hold NUL. */
#include "config.h"
#include "json_obj.h"

#include <limits.h>

json_object *json_field(json_object *o, const char *key)
{
    json_object *v = NULL;
    if (!o || !json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
        return NULL;
    return v;
}

const char *json_str(json_object *v)
{
    return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

void json_add_str(json_object *o, const char *k, const char *v)
{
    json_object_object_add(o, k, json_object_new_string(v ? v : ""));
}

void json_add_strn(json_object *o, const char *k, const char *v, size_t len)
{
    json_object_object_add(o, k, json_object_new_string_len(v ? v : "", v && len <= INT_MAX ? (int)len : 0));
}
