/* m68k (arch/m68k/kernel/entry.S, system_call): the program traps with
 * `trap #0`, the number in d0 and the arguments in d1-d5 and a0; the result
 * comes back in d0, where -4095..-1 is -errno. There is no error flag. The
 * kernel saves and restores every other register (SAVE_ALL_SYS). */

static inline unsigned long abi_syscall6(unsigned long n, unsigned long a,
	unsigned long b, unsigned long c, unsigned long d, unsigned long e,
	unsigned long f, unsigned long *flag)
{
	register unsigned long d0 __asm__("d0") = n;
	register unsigned long d1 __asm__("d1") = a;
	register unsigned long d2 __asm__("d2") = b;
	register unsigned long d3 __asm__("d3") = c;
	register unsigned long d4 __asm__("d4") = d;
	register unsigned long d5 __asm__("d5") = e;
	register unsigned long a0 __asm__("a0") = f;
	__asm__ __volatile__ ("trap #0" : "+r"(d0)
		: "r"(d1), "r"(d2), "r"(d3), "r"(d4), "r"(d5), "r"(a0) : "memory");
	*flag = 0;
	return d0;
}

#define ABI_ERRNO(ret, flag) ((ret) > -4096UL ? -(ret) : 0)

#ifdef HELPER_FREESTANDING
/* The kernel leaves argc at (%sp); C arguments are passed on the stack. */
__asm__(".text\n.globl _start\n.type _start,@function\n_start:\n"
	"\tsuba.l %fp,%fp\n\tmove.l %sp,-(%sp)\n\tjsr helper_start\n");
#endif
