/* MIPS o32 (arch/mips/kernel/scall32-o32.S): the program traps with `syscall`,
 * the number in v0 ($2) and the first four arguments in a0-a3 ($4-$7); the
 * fifth and sixth are read from the caller's stack at sp+16 and sp+20. The
 * result comes back in v0, and a3 is the error flag: 1 means v0 is a positive
 * errno. The kernel clobbers at, v1, t0-t9, hi and lo. As in musl, the number
 * is loaded into v0 right before `syscall` so that a restart re-executes it. */

static inline unsigned long abi_syscall6(unsigned long n, unsigned long a,
	unsigned long b, unsigned long c, unsigned long d, unsigned long e,
	unsigned long f, unsigned long *flag)
{
	register unsigned long r4 __asm__("$4") = a;
	register unsigned long r5 __asm__("$5") = b;
	register unsigned long r6 __asm__("$6") = c;
	register unsigned long r7 __asm__("$7") = d;
	register unsigned long r8 __asm__("$8") = e;
	register unsigned long r9 __asm__("$9") = f;
	register unsigned long r2 __asm__("$2");
	__asm__ __volatile__ ("subu $sp,$sp,32\n\tsw $8,16($sp)\n\tsw $9,20($sp)\n\t"
		"addu $2,$0,%4\n\tsyscall\n\taddu $sp,$sp,32"
		: "=&r"(r2), "+r"(r7), "+r"(r8), "+r"(r9)
		: "ir"(n), "r"(r4), "r"(r5), "r"(r6)
		: "$1", "$3", "$10", "$11", "$12", "$13", "$14", "$15", "$24", "$25",
		  "hi", "lo", "memory");
	*flag = r7;
	return r2;
}

#define ABI_ERRNO(ret, flag) ((flag) ? (ret) : 0)

/* The same call with the stack pointer set to `sp` for the trap and nothing
 * stored there: arguments 5 and 6 are whatever the kernel makes of sp+16 and
 * sp+20 (the EFAULT of mmap2(2): scall32-o32.S and scall64-o32.S refuse an sp
 * whose sp+32 is negative, and substitute 0 for a word they cannot load). The
 * real sp waits in s0, a callee-saved register the compiler saves for us; no
 * instruction between the two moves touches the stack. */
#define ABI_HAS_STACK_ARGUMENTS 1
static inline unsigned long abi_syscall6_sp(unsigned long n, unsigned long a,
	unsigned long b, unsigned long c, unsigned long d, unsigned long sp,
	unsigned long *flag)
{
	register unsigned long r4 __asm__("$4") = a;
	register unsigned long r5 __asm__("$5") = b;
	register unsigned long r6 __asm__("$6") = c;
	register unsigned long r7 __asm__("$7") = d;
	register unsigned long r2 __asm__("$2");
	__asm__ __volatile__ ("move $16,$sp\n\tmove $sp,%3\n\t"
		"addu $2,$0,%2\n\tsyscall\n\tmove $sp,$16"
		: "=&r"(r2), "+r"(r7)
		: "ir"(n), "r"(sp), "r"(r4), "r"(r5), "r"(r6)
		: "$1", "$3", "$8", "$9", "$10", "$11", "$12", "$13", "$14", "$15",
		  "$16", "$24", "$25", "hi", "lo", "memory");
	*flag = r7;
	return r2;
}

#ifdef HELPER_FREESTANDING
/* The kernel leaves argc at 0($sp); o32 wants an aligned stack with a 16-byte
 * argument save area for the callee. Built with -mno-abicalls: no $gp setup.
 * The MIPS linkers' default entry symbol is __start, so both names are given. */
__asm__(".text\n.globl _start\n.globl __start\n.type _start,@function\n"
	"_start:\n__start:\n"
	"\t.set push\n\t.set noreorder\n"
	"\tmove $fp, $0\n\tmove $4, $sp\n\tli $8, -16\n\tand $sp, $sp, $8\n"
	"\taddiu $sp, $sp, -16\n\tjal helper_start\n\tnop\n\t.set pop\n");
#endif
