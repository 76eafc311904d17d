/*
 * kd2mcu host simulator harness: runs a generated model on the host, sample by sample.
 *
 * Built by `kd2mcu sim` with the model's sources:
 *   gcc -std=c99 -I SRC -DKD_SIM_NAME=name -DKD_SIM_NAME_UPPER=NAME -DKD_SIM_HEADER='"name.h"'
 *       harness.c SRC/name.c -o harness
 * Usage: harness INPUT OUTPUT
 *
 * INPUT (little-endian): "KDS1", int32 samples, int32 flags, then per sample int32 steps,
 * steps * STRIDE input values (int8 features or int32 token ids) and, with FLAG_INITIAL_STATE,
 * int8 h[STATE_H_SIZE] and int16 c[STATE_C_SIZE].
 * OUTPUT per sample: int32 return code, int8 logits[NUM_CLASSES], int8 h[STATE_H_SIZE],
 * int16 c[STATE_C_SIZE], and with FLAG_STREAM the whole h state after every step.
 * FLAG_STREAM drives the streaming API (reset, step, logits) instead of run; an initial state
 * only makes sense there (run starts every sequence from the reset state).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include KD_SIM_HEADER

#define KD_CAT_(a, b) a##b
#define KD_CAT(a, b) KD_CAT_(a, b)
#define FN(suffix) KD_CAT(KD_SIM_NAME, suffix)
#define UP(suffix) KD_CAT(KD_SIM_NAME_UPPER, suffix)

#define FLAG_STREAM 1
#define FLAG_INITIAL_STATE 2

#if UP(_TOKEN_INPUT)
#define STRIDE 1
#else
#define STRIDE UP(_INPUT_SIZE)
#endif

typedef FN(_input_t) input_t;
typedef FN(_state_t) state_t;

static void fail(const char *what)
{
    fprintf(stderr, "harness: %s\n", what);
    exit(3);
}

static void read_exact(FILE *f, void *dst, size_t bytes)
{
    if (bytes > 0 && fread(dst, 1, bytes, f) != bytes) {
        fail("input file is truncated");
    }
}

static void write_exact(FILE *f, const void *src, size_t bytes)
{
    if (bytes > 0 && fwrite(src, 1, bytes, f) != bytes) {
        fail("cannot write the output file");
    }
}

int main(int argc, char **argv)
{
    static input_t input[UP(_MAX_STEPS) * STRIDE];
    static int8_t step_h[UP(_MAX_STEPS)][UP(_STATE_H_SIZE)];
    char magic[4];
    int32_t samples, flags, n;
    state_t state;
    FILE *in, *out;

    if (argc != 3) {
        fail("usage: harness INPUT OUTPUT");
    }
    in = fopen(argv[1], "rb");
    out = fopen(argv[2], "wb");
    if (in == NULL || out == NULL) {
        fail("cannot open the input or output file");
    }
    read_exact(in, magic, 4);
    if (memcmp(magic, "KDS1", 4) != 0) {
        fail("input file is not a kd2mcu simulator input");
    }
    read_exact(in, &samples, sizeof samples);
    read_exact(in, &flags, sizeof flags);
#if !UP(_STREAMING)
    if (flags & FLAG_STREAM) {
        fail("streaming needs a model whose layers are all unidirectional");
    }
#endif
    for (n = 0; n < samples; ++n) {
        int32_t steps, rc;
        int8_t logits[UP(_NUM_CLASSES)];
        memset(logits, 0, sizeof logits);
        read_exact(in, &steps, sizeof steps);
        if (steps < 0 || steps > UP(_MAX_STEPS)) {
            fail("a sample has more steps than the model's maximum");
        }
        read_exact(in, input, (size_t)steps * STRIDE * sizeof(input_t));
        FN(_reset)(&state);
        if (flags & FLAG_INITIAL_STATE) {
            read_exact(in, state.h, sizeof state.h);
            read_exact(in, state.c, sizeof state.c);
        }
        if (flags & FLAG_STREAM) {
#if UP(_STREAMING)
            int32_t t;
            rc = 0;
            for (t = 0; t < steps && rc == 0; ++t) {
                rc = FN(_step)(&state, &input[t * STRIDE]);
                memcpy(step_h[t], state.h, sizeof state.h);
            }
            FN(_logits)(&state, logits);
#else
            rc = -100;
#endif
        } else {
            rc = FN(_run)(&state, input, steps, logits);
        }
        write_exact(out, &rc, sizeof rc);
        write_exact(out, logits, sizeof logits);
        write_exact(out, state.h, sizeof state.h);
        write_exact(out, state.c, sizeof state.c);
        if (flags & FLAG_STREAM) {
            write_exact(out, step_h, (size_t)steps * sizeof step_h[0]);
        }
    }
    if (fclose(out) != 0) {
        fail("cannot write the output file");
    }
    fclose(in);
    return 0;
}
