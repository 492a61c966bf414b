/* For or1k-elf-gcc: stands for the asm/types.h that arch/openrisc takes from include/uapi/asm-generic/types.h. */
#include <asm-generic/types.h>
