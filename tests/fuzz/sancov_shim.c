/* Coverage feedback from gcc-instrumented C code to atheris' libFuzzer (tests/fuzz/run.py --asan).
 *
 * clang's -fsanitize=fuzzer-no-link registers 8-bit edge counters with libFuzzer directly. gcc has
 * no such mode; it has -fsanitize-coverage=trace-pc (a call to __sanitizer_cov_trace_pc in every
 * basic block) and trace-cmp (the same __sanitizer_cov_trace_cmp* hooks libFuzzer implements).
 * This file turns trace-pc calls into AFL-style edge counters (hash of previous and current block)
 * and hands them to libFuzzer through __sanitizer_cov_8bit_counters_init, looked up at run time
 * (pd_cov_register, called by the harness after atheris.Setup has loaded libFuzzer).
 * Without registration (no atheris: e.g. replaying a crash) the hooks do nothing.
 * Compiled WITHOUT coverage instrumentation itself.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stddef.h>

#define PD_COV_SIZE (1 << 16)

static uint8_t pd_counters[PD_COV_SIZE];
static uintptr_t pd_pcs[2 * PD_COV_SIZE];      /* {pc, flags} pairs, as libFuzzer's PC tables */
static uintptr_t pd_prev;

__attribute__((visibility("hidden"), no_sanitize_address))
void __sanitizer_cov_trace_pc(void) {
    uintptr_t pc = (uintptr_t)__builtin_return_address(0);
    uintptr_t cur = (pc * 0x9E3779B97F4A7C15ull) >> 48;      /* 16-bit hash of the block */
    pd_counters[(cur ^ pd_prev) & (PD_COV_SIZE - 1)]++;
    pd_prev = cur >> 1;
}

/* libFuzzer's comparison hooks, taken from libFuzzer's own library (pd_cov_register): under
 * LD_PRELOAD=libasan.so the global lookup finds the ASan runtime's empty weak stubs of the same
 * names first. The hooks below are hidden, so the instrumented code of this module calls them and
 * not the stubs; they tail-call libFuzzer's (-O2: the caller's return address, which libFuzzer
 * uses as the comparison's id, is kept). Before registration they do nothing. */
typedef void (*cmp1_fn)(uint8_t, uint8_t);
typedef void (*cmp2_fn)(uint16_t, uint16_t);
typedef void (*cmp4_fn)(uint32_t, uint32_t);
typedef void (*cmp8_fn)(uint64_t, uint64_t);
typedef void (*switch_fn)(uint64_t, uint64_t *);
static cmp1_fn f_cmp1, f_ccmp1;
static cmp2_fn f_cmp2, f_ccmp2;
static cmp4_fn f_cmp4, f_ccmp4;
static cmp8_fn f_cmp8, f_ccmp8;
static switch_fn f_switch;

#define HIDDEN __attribute__((visibility("hidden")))
HIDDEN void __sanitizer_cov_trace_cmp1(uint8_t a, uint8_t b) { if (f_cmp1) f_cmp1(a, b); }
HIDDEN void __sanitizer_cov_trace_cmp2(uint16_t a, uint16_t b) { if (f_cmp2) f_cmp2(a, b); }
HIDDEN void __sanitizer_cov_trace_cmp4(uint32_t a, uint32_t b) { if (f_cmp4) f_cmp4(a, b); }
HIDDEN void __sanitizer_cov_trace_cmp8(uint64_t a, uint64_t b) { if (f_cmp8) f_cmp8(a, b); }
HIDDEN void __sanitizer_cov_trace_const_cmp1(uint8_t a, uint8_t b) { if (f_ccmp1) f_ccmp1(a, b); }
HIDDEN void __sanitizer_cov_trace_const_cmp2(uint16_t a, uint16_t b) { if (f_ccmp2) f_ccmp2(a, b); }
HIDDEN void __sanitizer_cov_trace_const_cmp4(uint32_t a, uint32_t b) { if (f_ccmp4) f_ccmp4(a, b); }
HIDDEN void __sanitizer_cov_trace_const_cmp8(uint64_t a, uint64_t b) { if (f_ccmp8) f_ccmp8(a, b); }
HIDDEN void __sanitizer_cov_trace_switch(uint64_t v, uint64_t *cases) { if (f_switch) f_switch(v, cases); }
/* gcc also traces float compares; libFuzzer has no hooks for them */
HIDDEN void __sanitizer_cov_trace_cmpf(float a, float b) { (void)a; (void)b; }
HIDDEN void __sanitizer_cov_trace_cmpd(double a, double b) { (void)a; (void)b; }

/* Registers the counters and the comparison hooks with the libFuzzer in the shared library
 * `libfuzzer_path` (atheris' core_with_libfuzzer, loaded here if atheris has not yet; NULL: the
 * global lookup). Returns 1 on success, 0 when no libFuzzer is found. */
int pd_cov_register(const char *libfuzzer_path) {
    typedef void (*counters_init)(uint8_t *, uint8_t *);
    typedef void (*pcs_init)(const uintptr_t *, const uintptr_t *);
    void *lib = libfuzzer_path ? dlopen(libfuzzer_path, RTLD_NOW) : RTLD_DEFAULT;
    if (lib == NULL) return 0;
    counters_init ci = (counters_init)dlsym(lib, "__sanitizer_cov_8bit_counters_init");
    pcs_init pi = (pcs_init)dlsym(lib, "__sanitizer_cov_pcs_init");
    if (ci == NULL) return 0;
    f_cmp1 = (cmp1_fn)dlsym(lib, "__sanitizer_cov_trace_cmp1");
    f_cmp2 = (cmp2_fn)dlsym(lib, "__sanitizer_cov_trace_cmp2");
    f_cmp4 = (cmp4_fn)dlsym(lib, "__sanitizer_cov_trace_cmp4");
    f_cmp8 = (cmp8_fn)dlsym(lib, "__sanitizer_cov_trace_cmp8");
    f_ccmp1 = (cmp1_fn)dlsym(lib, "__sanitizer_cov_trace_const_cmp1");
    f_ccmp2 = (cmp2_fn)dlsym(lib, "__sanitizer_cov_trace_const_cmp2");
    f_ccmp4 = (cmp4_fn)dlsym(lib, "__sanitizer_cov_trace_const_cmp4");
    f_ccmp8 = (cmp8_fn)dlsym(lib, "__sanitizer_cov_trace_const_cmp8");
    f_switch = (switch_fn)dlsym(lib, "__sanitizer_cov_trace_switch");
    for (size_t i = 0; i < PD_COV_SIZE; i++) pd_pcs[2 * i] = i + 1;   /* pseudo-PCs: edge ids */
    ci(pd_counters, pd_counters + PD_COV_SIZE);
    if (pi != NULL) pi(pd_pcs, pd_pcs + 2 * PD_COV_SIZE);
    return 1;
}
