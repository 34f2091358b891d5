/* wring's C ABI end to end: open a model, stream a continuation of a prompt to stdout, free.
 *
 *   cc generate.c -I crates/wring-capi/include -L target/release -lwring_capi -o generate
 *   LD_LIBRARY_PATH=target/release ./generate models/SmolLM2-135M-Instruct.Q4_1.gguf "The capital of France is" 32
 *
 * Arguments: MODEL.gguf PROMPT [MAX_TOKENS [STOP_AFTER_PIECES]]; the last stops the generation from the
 * callback after that many pieces of text. Exit status 0 on success, 1 on a wring error (its status and
 * message on stderr), 2 on bad arguments. */
#include <stdio.h>
#include <stdlib.h>

#include "wring.h"

struct progress {
    unsigned long pieces;
    unsigned long stop_after; /* 0: never */
};

/* Called with each piece of text as it is generated; non-zero stops the generation. */
static int on_text(const char *text, size_t len, void *user) {
    struct progress *p = user;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    p->pieces++;
    return p->stop_after > 0 && p->pieces >= p->stop_after;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL.gguf PROMPT [MAX_TOKENS [STOP_AFTER_PIECES]]\n", argv[0]);
        return 2;
    }
    WringModel *model = NULL;
    WringStatus status = wring_model_open(argv[1], 512, &model);
    if (status != WRING_STATUS_OK) {
        fprintf(stderr, "error %d: %s\n", (int)status, wring_last_error());
        return 1;
    }
    WringOptions options = wring_default_options();
    if (argc > 3) {
        options.max_tokens = (uint32_t)strtoul(argv[3], NULL, 10);
    }
    struct progress progress = {0, argc > 4 ? strtoul(argv[4], NULL, 10) : 0};
    uint32_t generated = 0;
    status = wring_generate(model, argv[2], &options, on_text, &progress, &generated);
    fputc('\n', stdout);
    fprintf(stderr, "status %d, %u tokens, %lu pieces\n", (int)status, generated, progress.pieces);
    if (status != WRING_STATUS_OK) {
        fprintf(stderr, "error %d: %s\n", (int)status, wring_last_error());
    }
    wring_model_free(model);
    return status == WRING_STATUS_OK ? 0 : 1;
}
