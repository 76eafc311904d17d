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
 * int16 c[STATE_C_SIZE], int32 predicted class and int32 margin (NAME_predict), with FLAG_STREAM
 * the whole h state after every step, and with FLAG_RAW_FLOAT or FLAG_RAW_I16 the int8 inputs.
 * FLAG_STREAM drives the streaming API (reset, step, logits) instead of run; an initial state
 * only makes sense there (run starts every sequence from the reset state).
 * FLAG_RAW_FLOAT (FLAG_RAW_I16): the input values are float32 (int16) raw samples, quantized by
 * NAME_quantize_input (NAME_quantize_raw_i16) step by step before the model runs.
 * FLAG_UTF8 (text models): each sample is int32 n and n bytes of UTF-8, encoded by
 * NAME_encode_utf8 and classified; OUTPUT adds int32 len and the len token ids after the state.
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
#define FLAG_RAW_FLOAT 4
#define FLAG_RAW_I16 8
#define FLAG_UTF8 16

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

#if !UP(_TOKEN_INPUT)
/* Raw samples of one sequence to int8 inputs, step by step, with the model's own pre-processing. */
static void quantize_raw(FILE *in, int32_t steps, int32_t flags, input_t *input)
{
    static float raw_float[UP(_INPUT_SIZE)];
    static int16_t raw_i16[UP(_INPUT_SIZE)];
    int32_t t;
    for (t = 0; t < steps; ++t) {
        if (flags & FLAG_RAW_FLOAT) {
            read_exact(in, raw_float, sizeof raw_float);
            FN(_quantize_input)(raw_float, &input[t * STRIDE]);
        } else {
            read_exact(in, raw_i16, sizeof raw_i16);
            FN(_quantize_raw_i16)(raw_i16, &input[t * STRIDE]);
        }
    }
}
#endif

#if UP(_UTF8_ENCODER)
/* One text of n UTF-8 bytes: encode, classify, write the outputs and the token ids. */
static void run_utf8(FILE *in, FILE *out, int32_t n, state_t *state)
{
    static char text[1 << 20];
    input_t tokens[UP(_TEXT_MAX_LEN)];
    int8_t logits[UP(_NUM_CLASSES)];
    int32_t rc, len = 0, predicted, margin = 0;
    if (n < 0 || n > (int32_t)sizeof text) {
        fail("a text is longer than 1 MiB");
    }
    read_exact(in, text, (size_t)n);
    memset(logits, 0, sizeof logits);
    rc = FN(_encode_utf8)(text, (size_t)n, tokens, &len);
    if (rc == 0) {
        rc = FN(_classify_utf8)(state, text, (size_t)n, logits);
    }
    write_exact(out, &rc, sizeof rc);
    write_exact(out, logits, sizeof logits);
    write_exact(out, state->h, sizeof state->h);
    write_exact(out, state->c, sizeof state->c);
    predicted = FN(_predict)(logits, &margin);
    write_exact(out, &predicted, sizeof predicted);
    write_exact(out, &margin, sizeof margin);
    write_exact(out, &len, sizeof len);
    write_exact(out, tokens, (size_t)len * sizeof tokens[0]);
}
#endif

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
        int32_t predicted, margin = 0;
        read_exact(in, &steps, sizeof steps);
        if (flags & FLAG_UTF8) {
#if UP(_UTF8_ENCODER)
            run_utf8(in, out, steps, &state);
            continue;
#else
            fail("the model has no UTF-8 encoder (a text model with a character vocabulary has one)");
#endif
        }
        if (steps < 0 || steps > UP(_MAX_STEPS)) {
            fail("a sample has more steps than the model's maximum");
        }
        if (flags & (FLAG_RAW_FLOAT | FLAG_RAW_I16)) {
#if UP(_TOKEN_INPUT)
            fail("raw samples need a feature model");
#else
            quantize_raw(in, steps, flags, input);
#endif
        } else {
            read_exact(in, input, (size_t)steps * STRIDE * sizeof(input_t));
        }
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
        predicted = FN(_predict)(logits, &margin);
        write_exact(out, &predicted, sizeof predicted);
        write_exact(out, &margin, sizeof margin);
        if (flags & FLAG_STREAM) {
            write_exact(out, step_h, (size_t)steps * sizeof step_h[0]);
        }
        if (flags & (FLAG_RAW_FLOAT | FLAG_RAW_I16)) {
            write_exact(out, input, (size_t)steps * STRIDE * sizeof(input_t));
        }
    }
    if (fclose(out) != 0) {
        fail("cannot write the output file");
    }
    fclose(in);
    return 0;
}
