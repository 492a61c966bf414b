/* For or1k-elf-gcc: stands for the asm/mman.h that arch/openrisc takes from include/uapi/asm-generic/mman.h. */
#include <asm-generic/mman.h>
