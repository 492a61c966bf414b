/* For or1k-elf-gcc: stands for the asm/resource.h that arch/openrisc takes from include/uapi/asm-generic/resource.h. */
#include <asm-generic/resource.h>
