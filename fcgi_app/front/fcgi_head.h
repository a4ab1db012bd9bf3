/* fcgi_head.c -- what a FastCGI connection sends before a responder's request: management records and other roles, answered here because libfcgi gets them wrong. */
#ifndef LLMCGI_FCGI_HEAD_H
#define LLMCGI_FCGI_HEAD_H

#include <stdint.h>

enum head_result {
    HEAD_RESPONDER,     /* a responder's FCGI_BEGIN_REQUEST is next, left unread for libfcgi */
    HEAD_PARK,          /* everything sent so far was answered; wait for more without a thread */
    HEAD_CLOSE,         /* close the connection: it closed, failed, broke the protocol or took too long */
};

/* Reads the records on connection fd that come before a responder's
 * FCGI_BEGIN_REQUEST and answers them, as the FastCGI spec asks:
 *   - FCGI_GET_VALUES: FCGI_GET_VALUES_RESULT with the names it knows of
 *     FCGI_MAX_CONNS and FCGI_MAX_REQS (both max_reqs) and FCGI_MPXS_CONNS
 *     (0); libfcgi 2.4.2 never answers one;
 *   - any other record of request id 0: FCGI_UNKNOWN_TYPE;
 *   - FCGI_BEGIN_REQUEST of another role (AUTHORIZER, FILTER): FCGI_END_REQUEST
 *     with FCGI_UNKNOWN_ROLE; libfcgi would hand it on as a request;
 *   - a record of a request that is not open (the rest of one refused so):
 *     read and dropped.
 * Never blocks past deadline_ns (CLOCK_MONOTONIC, util_now_ns), nor longer
 * than silence_ms (read_timeout) without a byte, nor on a write. Before
 * HEAD_CLOSE it reads what has already arrived, so that the close is not a
 * reset that could cost the peer our last answer. */
enum head_result fcgi_head(int fd, int max_reqs, int64_t deadline_ns, int64_t silence_ms);

#endif
