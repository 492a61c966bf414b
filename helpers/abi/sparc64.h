/* 64-bit SPARC (arch/sparc/kernel/syscalls.S, linux_sparc_syscall): the
 * program traps with `ta 0x6d`, the number in g1 and the arguments in o0-o5;
 * the result comes back in o0, and the carry bit of the 64-bit condition codes
 * (xcc) is the error flag: set means o0 is a positive errno. As on 32-bit
 * SPARC, fork and clone also return in o1 whether this is the child (1), and
 * the child's o0 is the parent's pid, so this stub makes the child's result 0. */

static inline unsigned long abi_syscall6(unsigned long n, unsigned long a,
	unsigned long b, unsigned long c, unsigned long d, unsigned long e,
	unsigned long f, unsigned long *flag)
{
	register unsigned long g1 __asm__("g1") = n;
	register unsigned long o0 __asm__("o0") = a;
	register unsigned long o1 __asm__("o1") = b;
	register unsigned long o2 __asm__("o2") = c;
	register unsigned long o3 __asm__("o3") = d;
	register unsigned long o4 __asm__("o4") = e;
	register unsigned long o5 __asm__("o5") = f;
	unsigned long carry = 0;
	__asm__ __volatile__ ("ta 0x6d\n\tmovcs %%xcc, 1, %0"
		: "+r"(carry), "+r"(g1), "+r"(o0), "+r"(o1), "+r"(o2), "+r"(o3),
		  "+r"(o4), "+r"(o5)
		: : "g2", "g3", "g4", "cc", "memory");
	if ((n == __NR_clone || n == __NR_fork) && !carry && o1)
		o0 = 0;
	*flag = carry;
	return o0;
}

#define ABI_ERRNO(ret, flag) ((flag) ? (ret) : 0)

#ifdef HELPER_FREESTANDING
/* The kernel leaves argc at %sp+2047+128: past the stack bias and the 16-word
 * register save area; the first frame also needs the 6-word argument dump area. */
__asm__(".text\n.globl _start\n.type _start,#function\n_start:\n"
	"\tmov %g0, %fp\n\tadd %sp, 2175, %o0\n\tsub %sp, 48, %sp\n"
	"\tcall helper_start\n\tnop\n");
#endif
