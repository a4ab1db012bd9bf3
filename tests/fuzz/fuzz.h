/* fuzz.h -- the libFuzzer entry point each harness defines; replay_main.c drives it without libFuzzer. */
#ifndef LLMCGI_FUZZ_H
#define LLMCGI_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
