/* fuzz_safetensors.c -- fuzzes the safetensors header parser with the input as a whole file image:
 * whatever it accepts must be internally consistent and lie inside the buffer. */
#include "config.h"
#include "fuzz.h"
#include "safetensors.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct st_header h;
    char err[512];
    err[0] = '\0';
    int rc = st_parse_header(data, size, size, "fuzz.safetensors", &h, err, sizeof err);
    if (rc != ST_OK) {
        /* Refused: nothing kept, a message, and never "give me more" for a whole file. */
        if (h.tensors || h.n_tensors || h.meta || h.n_meta || err[0] == '\0' || rc == ST_ERR_SHORT)
            abort();
        if (strncmp(err, "fuzz.safetensors: ", 18) != 0)
            abort();
        return 0;
    }
    if (h.data_start != 8 + h.header_len || h.data_start > size || h.data_len != size - h.data_start)
        abort();
    for (size_t i = 0; i < h.n_tensors; i++) {
        const struct st_tensor *t = &h.tensors[i];
        if (!t->name || !t->name[0] || t->begin > t->end || t->end > h.data_len)
            abort();
        if (h.data_start + t->end > size)
            abort();
        uint64_t n = 1;
        for (int d = 0; d < t->ndim; d++) {
            if (t->shape[d] < 0)
                abort();
            n *= (uint64_t)t->shape[d];
        }
        if (t->ndim < 0 || t->ndim > ST_MAX_DIMS || n != t->nelem ||
            (t->end - t->begin) * 8 != t->nelem * st_dtype_bits(t->dtype))
            abort();
        if (i > 0 && strcmp(h.tensors[i - 1].name, t->name) >= 0)
            abort();                    /* sorted, unique */
        if (st_find(&h, t->name) != t)
            abort();
        /* Touch every byte: ASan reports a range outside the buffer. */
        const uint8_t *p = data + h.data_start + t->begin;
        volatile uint8_t acc = 0;
        for (uint64_t k = 0; k < t->end - t->begin; k++)
            acc ^= p[k];
        (void)acc;
    }
    for (size_t i = 0; i < h.n_meta; i++) {
        if (!h.meta[i].key || !h.meta[i].value || h.meta[i].value[h.meta[i].value_len] != '\0')
            abort();
    }
    /* No overlap among non-empty tensors (O(n^2) is fine for fuzz-sized inputs). */
    for (size_t i = 0; i < h.n_tensors && h.n_tensors < 2000; i++) {
        for (size_t j = i + 1; j < h.n_tensors; j++) {
            const struct st_tensor *a = &h.tensors[i], *b = &h.tensors[j];
            if (a->begin < a->end && b->begin < b->end && a->begin < b->end && b->begin < a->end)
                abort();
        }
    }
    /* A prefix of the file that holds the header parses the same way (given the true size). */
    struct st_header h2;
    size_t hl = (size_t)h.data_start;
    if (st_parse_header(data, hl, size, "fuzz.safetensors", &h2, err, sizeof err) != ST_OK || h2.n_tensors != h.n_tensors)
        abort();
    st_header_free(&h2);
    if (hl > 8 && st_parse_header(data, hl - 1, size, "fuzz.safetensors", &h2, err, sizeof err) != ST_ERR_SHORT)
        abort();
    st_header_free(&h);
    return 0;
}
