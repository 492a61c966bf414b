/* x86_64 (arch/x86/entry/entry_64.S, entry_SYSCALL_64): the program traps with
 * `syscall`, the number in rax and the arguments in rdi, rsi, rdx, r10, r8 and
 * r9; the kernel clobbers rcx and r11. The result comes back in rax, where
 * -4095..-1 is -errno. There is no error flag. */

static inline unsigned long abi_syscall6(unsigned long n, unsigned long a,
	unsigned long b, unsigned long c, unsigned long d, unsigned long e,
	unsigned long f, unsigned long *flag)
{
	register unsigned long r10 __asm__("r10") = d;
	register unsigned long r8 __asm__("r8") = e;
	register unsigned long r9 __asm__("r9") = f;
	unsigned long ret;
	__asm__ __volatile__ ("syscall" : "=a"(ret)
		: "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
		: "rcx", "r11", "memory");
	*flag = 0;
	return ret;
}

#define ABI_ERRNO(ret, flag) ((ret) > -4096UL ? -(ret) : 0)

#ifdef HELPER_FREESTANDING
/* The kernel leaves argc at (%rsp); the call needs a 16-byte aligned stack. */
__asm__(".text\n.globl _start\n.type _start,@function\n_start:\n"
	"\txor %ebp,%ebp\n\tmov %rsp,%rdi\n\tand $-16,%rsp\n"
	"\tcall helper_start\n\thlt\n");
#endif
