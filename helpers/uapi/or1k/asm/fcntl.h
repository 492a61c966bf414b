/* For or1k-elf-gcc: stands for the asm/fcntl.h that arch/openrisc takes from include/uapi/asm-generic/fcntl.h. */
#include <asm-generic/fcntl.h>
