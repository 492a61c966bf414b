/* MIPS n64 (arch/mips/kernel/scall64-n64.S): the program traps with `syscall`,
 * the number in v0 ($2) and the arguments in a0-a5 ($4-$9). The result comes
 * back in v0, and a3 is the error flag: 1 means v0 is a positive errno. The
 * kernel clobbers at, v1, $10-$15, t8, t9, hi and lo (the list musl
 * uses). As in musl, the number is loaded into v0 right before `syscall`. */

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
	__asm__ __volatile__ ("daddu $2,$0,%2\n\tsyscall"
		: "=&r"(r2), "+r"(r7)
		: "ir"(n), "r"(r4), "r"(r5), "r"(r6), "r"(r8), "r"(r9)
		: "$1", "$3", "$10", "$11", "$12", "$13", "$14", "$15", "$24", "$25",
		  "hi", "lo", "memory");
	*flag = r7;
	return r2;
}

#define ABI_ERRNO(ret, flag) ((flag) ? (ret) : 0)

#ifdef HELPER_FREESTANDING
/* The kernel leaves argc at 0($sp); n64 has no argument save area. Built with
 * -mno-abicalls: no $gp setup. The MIPS linkers' default entry symbol is
 * __start, so both names are given. */
__asm__(".text\n.globl _start\n.globl __start\n.type _start,@function\n"
	"_start:\n__start:\n"
	"\t.set push\n\t.set noreorder\n"
	"\tmove $fp, $0\n\tmove $4, $sp\n\tli $8, -16\n\tand $sp, $sp, $8\n"
	"\tjal helper_start\n\tnop\n\t.set pop\n");
#endif
