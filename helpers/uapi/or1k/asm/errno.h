/* For or1k-elf-gcc: stands for the asm/errno.h that arch/openrisc takes from include/uapi/asm-generic/errno.h. */
#include <asm-generic/errno.h>
