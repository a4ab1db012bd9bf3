/* scratch.h -- a scratch directory for the C unit tests that write model files: made under $TMPDIR, removed with all it holds. */
#ifndef LLMCGI_SCRATCH_H
#define LLMCGI_SCRATCH_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

/* Makes $TMPDIR/PREFIX-XXXXXX (/tmp without TMPDIR) into out. Returns 0, or -1 (errno set). */
static inline int scratch_make(char *out, size_t len, const char *prefix)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(out, len, "%s/%s-XXXXXX", tmp && *tmp ? tmp : "/tmp", prefix);
    return mkdtemp(out) ? 0 : -1;
}

static inline int scratch_rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Removes dir and everything under it (no shell, no links followed); says so on TAP when it cannot. */
static inline void scratch_remove(const char *dir)
{
    if (nftw(dir, scratch_rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        printf("# could not remove %s\n", dir);
}

#endif
