/*
 * memtrace.c: a QEMU TCG plugin (QEMU 7.2 plugin API, version 1) that writes, for one region of a
 * firmware's execution, every executed instruction's address and every memory access's address,
 * size and direction, for benchmarks/cycle_model/cycle_model.py.
 *
 * Arguments (-plugin memtrace.so,arg=...):
 *   out=FILE     the binary trace: little-endian uint32 pairs (kind, address); kind 0 = instruction,
 *                1 = load, 2 = store, with the access size in bytes in bits 8..15
 *   disas=FILE   one line per translated instruction: "ADDRESS SIZE DISASSEMBLY" (hex address)
 *   start=ADDR   recording begins when an instruction at ADDR executes (hex)
 *   end=ADDR     ... and ends when one at ADDR executes (hex; several end= allowed)
 *   count=N      regions to record (default 1), then the trace is closed
 * Build: gcc -shared -fPIC -O2 -I DIR_WITH_qemu-plugin.h memtrace.c -o memtrace.so
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

extern void g_free(void *mem); /* QEMU's glib: qemu_plugin_insn_disas returns a g_malloc'd string */

#define MAX_ENDS 64

static FILE *out_file;
static FILE *disas_file;
static uint64_t start_pc;
static uint64_t end_pc[MAX_ENDS];
static int n_ends;
static int recording;
static long regions_left = 1;

static void put(uint32_t kind, uint32_t addr)
{
    uint32_t rec[2];
    rec[0] = kind;
    rec[1] = addr;
    fwrite(rec, sizeof rec, 1, out_file);
}

static void on_exec(unsigned int vcpu, void *udata)
{
    const uint64_t pc = (uint64_t)(uintptr_t)udata;
    int k;
    (void)vcpu;
    if (out_file == NULL) {
        return;
    }
    if (recording) {
        for (k = 0; k < n_ends; ++k) {
            if (pc == end_pc[k]) {
                recording = 0;
                if (--regions_left == 0) {
                    fclose(out_file);
                    out_file = NULL;
                    return;
                }
            }
        }
    } else if (pc == start_pc) {
        recording = 1;
    }
    if (recording) {
        put(0, (uint32_t)pc);
    }
}

static void on_mem(unsigned int vcpu, qemu_plugin_meminfo_t info, uint64_t vaddr, void *udata)
{
    (void)vcpu;
    (void)udata;
    if (out_file != NULL && recording) {
        const uint32_t size = 1u << qemu_plugin_mem_size_shift(info);
        put((qemu_plugin_mem_is_store(info) ? 2u : 1u) | (size << 8), (uint32_t)vaddr);
    }
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb), k;
    (void)id;
    for (k = 0; k < n; ++k) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, k);
        const uint64_t pc = qemu_plugin_insn_vaddr(insn);
        char *text = qemu_plugin_insn_disas(insn);
        fprintf(disas_file, "%" PRIx64 " %zu %s\n", pc, qemu_plugin_insn_size(insn), text ? text : "?");
        g_free(text);
        qemu_plugin_register_vcpu_insn_exec_cb(insn, on_exec, QEMU_PLUGIN_CB_NO_REGS, (void *)(uintptr_t)pc);
        qemu_plugin_register_vcpu_mem_cb(insn, on_mem, QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_MEM_RW, NULL);
    }
}

static void on_plugin_exit(qemu_plugin_id_t id, void *p)
{
    (void)id;
    (void)p;
    if (out_file != NULL) {
        fclose(out_file);
        out_file = NULL;
    }
    if (disas_file != NULL) {
        fclose(disas_file);
        disas_file = NULL;
    }
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    int k;
    (void)info;
    for (k = 0; k < argc; ++k) {
        const char *a = argv[k];
        if (strncmp(a, "out=", 4) == 0) {
            out_file = fopen(a + 4, "wb");
        } else if (strncmp(a, "disas=", 6) == 0) {
            disas_file = fopen(a + 6, "w");
        } else if (strncmp(a, "start=", 6) == 0) {
            start_pc = strtoull(a + 6, NULL, 16);
        } else if (strncmp(a, "end=", 4) == 0 && n_ends < MAX_ENDS) {
            end_pc[n_ends++] = strtoull(a + 4, NULL, 16);
        } else if (strncmp(a, "count=", 6) == 0) {
            regions_left = strtol(a + 6, NULL, 10);
        } else {
            fprintf(stderr, "memtrace: unknown argument %s\n", a);
            return -1;
        }
    }
    if (out_file == NULL || disas_file == NULL || n_ends == 0 || regions_left < 1) {
        fprintf(stderr, "memtrace: needs out=FILE, disas=FILE, start=ADDR and end=ADDR\n");
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, on_plugin_exit, NULL);
    return 0;
}
