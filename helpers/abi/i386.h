/* i386 (arch/x86/entry/entry_32.S, entry_INT80_32): the program traps with
 * `int $0x80`, the number in eax and the arguments in ebx, ecx, edx, esi, edi
 * and ebp; the result comes back in eax, where -4095..-1 is -errno. There is
 * no error flag. ebp may be the frame pointer, so the sixth argument is pushed
 * and loaded into ebp only around the trap (as musl's syscall_arch.h does). */

static inline unsigned long abi_syscall6(unsigned long n, unsigned long a,
	unsigned long b, unsigned long c, unsigned long d, unsigned long e,
	unsigned long f, unsigned long *flag)
{
	unsigned long ret;
	__asm__ __volatile__ ("pushl %7\n\tpush %%ebp\n\tmov 4(%%esp),%%ebp\n\t"
		"int $0x80\n\tpop %%ebp\n\tadd $4,%%esp"
		: "=a"(ret) : "a"(n), "b"(a), "c"(b), "d"(c), "S"(d), "D"(e), "g"(f)
		: "memory");
	*flag = 0;
	return ret;
}

#define ABI_ERRNO(ret, flag) ((ret) > -4096UL ? -(ret) : 0)

#ifdef HELPER_FREESTANDING
/* The kernel leaves argc at (%esp); keep the stack 16-byte aligned at the call. */
__asm__(".text\n.globl _start\n.type _start,@function\n_start:\n"
	"\txor %ebp,%ebp\n\tmov %esp,%eax\n\tand $-16,%esp\n\tsub $12,%esp\n"
	"\tpush %eax\n\tcall helper_start\n\thlt\n");
#endif
