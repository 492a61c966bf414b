/* 32-bit PowerPC (arch/powerpc/kernel/entry_32.S and syscall.c): the program
 * traps with `sc`, the number in r0 and the arguments in r3-r8; the result
 * comes back in r3, and the summary-overflow bit of cr0 (cr0.SO) is the error
 * flag: set means r3 is a positive errno. The kernel may clobber r0 and
 * r4-r12 (besides cr0, ctr and xer). */

static inline unsigned long abi_syscall6(unsigned long n, unsigned long a,
	unsigned long b, unsigned long c, unsigned long d, unsigned long e,
	unsigned long f, unsigned long *flag)
{
	register unsigned long r0 __asm__("r0") = n;
	register unsigned long r3 __asm__("r3") = a;
	register unsigned long r4 __asm__("r4") = b;
	register unsigned long r5 __asm__("r5") = c;
	register unsigned long r6 __asm__("r6") = d;
	register unsigned long r7 __asm__("r7") = e;
	register unsigned long r8 __asm__("r8") = f;
	unsigned long cr;
	__asm__ __volatile__ ("sc\n\tmfcr %0"
		: "=&r"(cr), "+r"(r0), "+r"(r3), "+r"(r4), "+r"(r5), "+r"(r6),
		  "+r"(r7), "+r"(r8)
		: : "memory", "cr0", "r9", "r10", "r11", "r12", "ctr", "xer");
	*flag = (cr >> 28) & 1;		/* cr0 is the top nibble: LT GT EQ SO */
	return r3;
}

#define ABI_ERRNO(ret, flag) ((flag) ? (ret) : 0)

#ifdef HELPER_FREESTANDING
/* The kernel leaves argc at 0(r1); the SysV ABI wants a 16-byte aligned stack
 * whose first frame has a null back chain and a null saved LR. */
__asm__(".text\n.globl _start\n.type _start,@function\n_start:\n"
	"\tmr 3, 1\n\tclrrwi 1, 1, 4\n\tli 0, 0\n\tstwu 1, -16(1)\n"
	"\tmtlr 0\n\tstw 0, 0(1)\n\tbl helper_start\n");
#endif
