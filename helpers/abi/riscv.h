/* RISC-V (arch/riscv/kernel/traps.c, do_trap_ecall_u): the program traps with
 * `ecall`, the number in a7 and the arguments in a0-a5; the result comes back
 * in a0, where -4095..-1 is -errno. There is no error flag. */

static inline unsigned long abi_syscall6(unsigned long n, unsigned long a,
	unsigned long b, unsigned long c, unsigned long d, unsigned long e,
	unsigned long f, unsigned long *flag)
{
	register unsigned long a7 __asm__("a7") = n;
	register unsigned long a0 __asm__("a0") = a;
	register unsigned long a1 __asm__("a1") = b;
	register unsigned long a2 __asm__("a2") = c;
	register unsigned long a3 __asm__("a3") = d;
	register unsigned long a4 __asm__("a4") = e;
	register unsigned long a5 __asm__("a5") = f;
	__asm__ __volatile__ ("ecall" : "+r"(a0)
		: "r"(a7), "r"(a1), "r"(a2), "r"(a3), "r"(a4), "r"(a5) : "memory");
	*flag = 0;
	return a0;
}

#define ABI_ERRNO(ret, flag) ((ret) > -4096UL ? -(ret) : 0)

#ifdef HELPER_FREESTANDING
/* The kernel leaves argc at 0(sp); gp must hold __global_pointer$ before the
 * linker may relax accesses against it (set without relaxation, as musl does). */
__asm__(".text\n.globl _start\n.type _start,@function\n_start:\n"
	".weak __global_pointer$\n.hidden __global_pointer$\n"
	".option push\n.option norelax\n\tlla gp, __global_pointer$\n.option pop\n"
	"\tli fp, 0\n\tli ra, 0\n\tmv a0, sp\n\tandi sp, sp, -16\n\tcall helper_start\n");
#endif
