/* fcgi_hello.c -- the benchmark's peer: the smallest threaded libfcgi responder ("hello"), the ceiling for any FastCGI app.
 *
 * usage: fcgi_hello SOCKET_PATH [THREADS]   (answers every request with 200 "hello\n") */
#include <fcgiapp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static int listen_fd;

static void *serve(void *arg)
{
    FCGX_Request req;
    (void)arg;
    FCGX_InitRequest(&req, listen_fd, 0);
    while (FCGX_Accept_r(&req) == 0) {
        FCGX_PutS("Status: 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nhello\n", req.out);
        FCGX_Finish_r(&req);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: fcgi_hello SOCKET_PATH [THREADS]\n");
        return 2;
    }
    int n = argc > 2 ? atoi(argv[2]) : 16;
    if (FCGX_Init() != 0 || (listen_fd = FCGX_OpenSocket(argv[1], 1024)) < 0) {
        fprintf(stderr, "fcgi_hello: cannot listen on %s\n", argv[1]);
        return 1;
    }
    chmod(argv[1], 0666);
    pthread_t *t = calloc((size_t)n, sizeof *t);
    for (int i = 0; i < n; i++)
        pthread_create(&t[i], NULL, serve, NULL);
    for (int i = 0; i < n; i++)
        pthread_join(t[i], NULL);
    return 0;
}
