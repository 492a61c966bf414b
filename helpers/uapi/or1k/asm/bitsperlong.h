/* For or1k-elf-gcc: stands for the asm/bitsperlong.h that arch/openrisc takes from include/uapi/asm-generic/bitsperlong.h. */
#include <asm-generic/bitsperlong.h>
