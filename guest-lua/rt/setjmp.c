/* The setjmp/longjmp runtime that clang's wasm SjLj lowering calls
 * (-mllvm -wasm-enable-sjlj with exnref exceptions). Lua's error handling
 * (error, pcall, every runtime error) is built on setjmp/longjmp; neither
 * Rust's wasi libc nor zig's ships these three functions, so the guest does.
 *
 * setjmp records a label and the id of the function invocation that called
 * it; longjmp throws the (env, val) pair as a wasm exception tagged
 * __c_longjmp; the landing pad in the setjmp caller asks setjmp_test whether
 * the env belongs to this invocation and, if so, which label to resume at. */
#include <stdint.h>
#include <stddef.h>

struct jump_record {
    void *invocation;
    uint32_t label;
    struct {
        void *env;
        int val;
    } payload;
};

_Static_assert(sizeof(struct jump_record) <= 8 * sizeof(unsigned long long),
               "jmp_buf too small for the jump record");

void __wasm_setjmp(void *env, uint32_t label, void *invocation) {
    struct jump_record *rec = env;
    if (label == 0 || invocation == NULL)
        __builtin_trap();
    rec->invocation = invocation;
    rec->label = label;
}

uint32_t __wasm_setjmp_test(void *env, void *invocation) {
    struct jump_record *rec = env;
    if (rec->invocation == invocation)
        return rec->label;
    return 0;
}

void __wasm_longjmp(void *env, int val) {
    struct jump_record *rec = env;
    rec->payload.env = env;
    rec->payload.val = val == 0 ? 1 : val;
    __builtin_wasm_throw(1, &rec->payload);
}
