/* For or1k-elf-gcc: stands for the asm/signal.h that arch/openrisc takes from include/uapi/asm-generic/signal.h. */
#include <asm-generic/signal.h>
