/* finish.c -- the names of the finish reasons (finish.h). */
#include "finish.h"

const char *finish_name(enum finish f)
{
    switch (f) {
    case FIN_LENGTH: return "length";
    case FIN_EOS: return "eos_token";
    case FIN_STOP_SEQUENCE: return "stop_sequence";
    case FIN_OTHER: return "other";
    case FIN_NONE: break;
    }
    return "";
}
