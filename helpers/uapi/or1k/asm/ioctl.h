/* For or1k-elf-gcc: stands for the asm/ioctl.h that arch/openrisc takes from include/uapi/asm-generic/ioctl.h. */
#include <asm-generic/ioctl.h>
