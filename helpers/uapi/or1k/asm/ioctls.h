/* For or1k-elf-gcc: stands for the asm/ioctls.h that arch/openrisc takes from include/uapi/asm-generic/ioctls.h. */
#include <asm-generic/ioctls.h>
