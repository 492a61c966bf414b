/* OpenRISC 1000 (arch/openrisc/kernel/entry.S, _sys_call_handler): the program
 * traps with `l.sys 1`, the number in r11 and the arguments in r3-r8; the
 * result comes back in r11, where -4095..-1 is -errno. There is no error flag.
 * The kernel may clobber the caller-saved registers r12, r13 and the odd ones
 * from r15 up (the list musl and glibc use); r3-r8 are marked in-out too. */

static inline unsigned long abi_syscall6(unsigned long n, unsigned long a,
	unsigned long b, unsigned long c, unsigned long d, unsigned long e,
	unsigned long f, unsigned long *flag)
{
	register unsigned long r11 __asm__("r11") = n;
	register unsigned long r3 __asm__("r3") = a;
	register unsigned long r4 __asm__("r4") = b;
	register unsigned long r5 __asm__("r5") = c;
	register unsigned long r6 __asm__("r6") = d;
	register unsigned long r7 __asm__("r7") = e;
	register unsigned long r8 __asm__("r8") = f;
	__asm__ __volatile__ ("l.sys 1"
		: "+r"(r11), "+r"(r3), "+r"(r4), "+r"(r5), "+r"(r6), "+r"(r7), "+r"(r8)
		: : "r12", "r13", "r15", "r17", "r19", "r21", "r23", "r25", "r27",
		    "r29", "r31", "memory");
	*flag = 0;
	return r11;
}

#define ABI_ERRNO(ret, flag) ((ret) > -4096UL ? -(ret) : 0)

#ifdef HELPER_FREESTANDING
/* The kernel leaves argc at 0(r1); l.jal has a delay slot. */
__asm__(".text\n.globl _start\n.type _start,@function\n_start:\n"
	"\tl.ori r3, r1, 0\n\tl.jal helper_start\n\tl.nop\n");
#endif
