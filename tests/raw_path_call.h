/* A path call made with a raw syscall, to see where the agent pointed it.
 *
 * x86_64 keeps the argument registers across a syscall, so rdi and rsi hold, after it,
 * what the agent left there: a sandbox that checks a copy of the path points the call at
 * that copy. Included by sandbox_catalogue.c and sealed_pins_probe.c.
 */
#ifndef AVIARY_RAW_PATH_CALL_H
#define AVIARY_RAW_PATH_CALL_H

/* Syscall `number` with (path, second); its result, and rdi and rsi as the call left them. */
static long raw_path_call(long number, const char *path, long second, long *rdi_after,
                          long *rsi_after) {
    register long rdi asm("rdi") = (long)path;
    register long rsi asm("rsi") = second;
    long ret;
    asm volatile("syscall"
                 : "=a"(ret), "+r"(rdi), "+r"(rsi)
                 : "a"(number)
                 : "rcx", "r11", "rdx", "r10", "r8", "r9", "memory");
    *rdi_after = rdi;
    *rsi_after = rsi;
    return ret;
}

#endif
