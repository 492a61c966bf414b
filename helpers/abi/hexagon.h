/* Hexagon (arch/hexagon/kernel/vm_entry.S and traps.c, trap0 #1): the program
 * traps with `trap0(#1)`, the number in r6 and the arguments in r0-r5; the
 * result comes back in r0, where -4095..-1 is -errno. There is no error flag. */

static inline unsigned long abi_syscall6(unsigned long n, unsigned long a,
	unsigned long b, unsigned long c, unsigned long d, unsigned long e,
	unsigned long f, unsigned long *flag)
{
	register unsigned long r6 __asm__("r6") = n;
	register unsigned long r0 __asm__("r0") = a;
	register unsigned long r1 __asm__("r1") = b;
	register unsigned long r2 __asm__("r2") = c;
	register unsigned long r3 __asm__("r3") = d;
	register unsigned long r4 __asm__("r4") = e;
	register unsigned long r5 __asm__("r5") = f;
	__asm__ __volatile__ ("trap0(#1)" : "+r"(r0)
		: "r"(r6), "r"(r1), "r"(r2), "r"(r3), "r"(r4), "r"(r5) : "memory");
	*flag = 0;
	return r0;
}

#define ABI_ERRNO(ret, flag) ((ret) > -4096UL ? -(ret) : 0)

#ifdef HELPER_FREESTANDING
/* The kernel leaves argc at memw(r29); the first argument goes in r0. The
 * frame pointer and link register start at 0 to end a backtrace. */
__asm__(".text\n.globl _start\n.type _start,@function\n_start:\n"
	"\tr30 = #0\n\tr31 = #0\n\tr0 = r29\n\tr29 = and(r29, #-16)\n"
	"\tcall helper_start\n");
#endif
