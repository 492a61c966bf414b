/* For or1k-elf-gcc: stands for arch/openrisc/include/uapi/asm/unistd.h (its wants, then asm-generic). */
#define __ARCH_WANT_RENAMEAT
#define __ARCH_WANT_STAT64
#define __ARCH_WANT_SET_GET_RLIMIT
#define __ARCH_WANT_SYS_FORK
#define __ARCH_WANT_SYS_CLONE
#define __ARCH_WANT_TIME32_SYSCALLS
#include <asm-generic/unistd.h>
