/* ARM EABI (arch/arm/kernel/entry-common.S, vector_swi): the program traps
 * with `svc 0`, the number in r7 and the arguments in r0-r5; the result comes
 * back in r0, where -4095..-1 is -errno. There is no error flag. The same code
 * serves armel and armhf: the float ABI does not touch system calls. */

static inline unsigned long abi_syscall6(unsigned long n, unsigned long a,
	unsigned long b, unsigned long c, unsigned long d, unsigned long e,
	unsigned long f, unsigned long *flag)
{
	register unsigned long r7 __asm__("r7") = n;
	register unsigned long r0 __asm__("r0") = a;
	register unsigned long r1 __asm__("r1") = b;
	register unsigned long r2 __asm__("r2") = c;
	register unsigned long r3 __asm__("r3") = d;
	register unsigned long r4 __asm__("r4") = e;
	register unsigned long r5 __asm__("r5") = f;
	__asm__ __volatile__ ("svc 0" : "+r"(r0)
		: "r"(r7), "r"(r1), "r"(r2), "r"(r3), "r"(r4), "r"(r5) : "memory");
	*flag = 0;
	return r0;
}

#define ABI_ERRNO(ret, flag) ((ret) > -4096UL ? -(ret) : 0)

#ifdef HELPER_FREESTANDING
/* The kernel leaves argc at [sp]. Every instruction here is valid in both ARM
 * and Thumb-2 (armhf compiles to Thumb), so no mode switch is needed. */
__asm__(".text\n.syntax unified\n.globl _start\n.type _start,%function\n_start:\n"
	"\tmov r0, sp\n\tbic r1, r0, #15\n\tmov sp, r1\n"
	"\tmov fp, #0\n\tmov lr, #0\n\tbl helper_start\n");
#endif
