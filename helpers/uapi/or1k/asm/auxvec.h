/* For or1k-elf-gcc: stands for the asm/auxvec.h that arch/openrisc takes from include/uapi/asm-generic/auxvec.h. */
#include <asm-generic/auxvec.h>
