/* For or1k-elf-gcc: stands for the asm/posix_types.h that arch/openrisc takes from include/uapi/asm-generic/posix_types.h. */
#include <asm-generic/posix_types.h>
