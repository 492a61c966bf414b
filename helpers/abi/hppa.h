/* PA-RISC (arch/parisc/kernel/syscall.S, linux_gateway_entry): the program
 * branches to the gateway page with `ble 0x100(%sr2, %r0)`, the number in r20
 * and the arguments in r26, r25, r24, r23, r22 and r21; the result comes back
 * in r28, where -4095..-1 is -errno. There is no error flag. The branch links
 * through r31; the kernel may clobber r1, r2, r19, r20, r29 and r31 (the list
 * in arch/parisc/include/asm/unistd.h, taken from glibc), so r19, which PIC
 * code needs, is kept in r4 across the call as the kernel's own macro does. */

static inline unsigned long abi_syscall6(unsigned long n, unsigned long a,
	unsigned long b, unsigned long c, unsigned long d, unsigned long e,
	unsigned long f, unsigned long *flag)
{
	register unsigned long r20 __asm__("r20") = n;
	register unsigned long r26 __asm__("r26") = a;
	register unsigned long r25 __asm__("r25") = b;
	register unsigned long r24 __asm__("r24") = c;
	register unsigned long r23 __asm__("r23") = d;
	register unsigned long r22 __asm__("r22") = e;
	register unsigned long r21 __asm__("r21") = f;
	register unsigned long r28 __asm__("r28");
	__asm__ __volatile__ ("copy %%r19, %%r4\n\tble 0x100(%%sr2, %%r0)\n\tnop\n\t"
		"copy %%r4, %%r19"
		: "=r"(r28), "+r"(r20), "+r"(r26), "+r"(r25), "+r"(r24), "+r"(r23),
		  "+r"(r22), "+r"(r21)
		: : "r1", "r2", "r4", "r29", "r31", "memory");
	*flag = 0;
	return r28;
}

#define ABI_ERRNO(ret, flag) ((ret) > -4096UL ? -(ret) : 0)

#ifdef HELPER_FREESTANDING
/* The kernel puts argc in r25 and argv in r24, with argc stored just below
 * argv (arch/parisc/include/asm/processor.h, start_thread); the stack grows
 * up from r30, which already leaves room for the first frame marker. Non-PIC
 * code reaches its data through dp (r27), set to $global$ as glibc's start.S does. */
__asm__(".text\n.globl _start\n.type _start,@function\n_start:\n"
	"\tldil L%$global$, %dp\n\tldo R%$global$(%dp), %dp\n"
	"\tldo -4(%r24), %r26\n\tbl helper_start, %r2\n\tnop\n");
#endif
