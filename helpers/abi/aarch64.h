/* AArch64 (arch/arm64/kernel/entry-common.c, el0_svc): the program traps with
 * `svc #0`, the number in x8 and the arguments in x0-x5; the result comes back
 * in x0, where -4095..-1 is -errno. There is no error flag. */

static inline unsigned long abi_syscall6(unsigned long n, unsigned long a,
	unsigned long b, unsigned long c, unsigned long d, unsigned long e,
	unsigned long f, unsigned long *flag)
{
	register unsigned long x8 __asm__("x8") = n;
	register unsigned long x0 __asm__("x0") = a;
	register unsigned long x1 __asm__("x1") = b;
	register unsigned long x2 __asm__("x2") = c;
	register unsigned long x3 __asm__("x3") = d;
	register unsigned long x4 __asm__("x4") = e;
	register unsigned long x5 __asm__("x5") = f;
	__asm__ __volatile__ ("svc #0" : "+r"(x0)
		: "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5) : "memory");
	*flag = 0;
	return x0;
}

#define ABI_ERRNO(ret, flag) ((ret) > -4096UL ? -(ret) : 0)

#ifdef HELPER_FREESTANDING
/* The kernel leaves argc at [sp], and sp 16-byte aligned. */
__asm__(".text\n.globl _start\n.type _start,%function\n_start:\n"
	"\tmov x29, #0\n\tmov x30, #0\n\tmov x0, sp\n\tbl helper_start\n");
#endif
