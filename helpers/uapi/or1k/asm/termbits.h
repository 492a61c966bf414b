/* For or1k-elf-gcc: stands for the asm/termbits.h that arch/openrisc takes from include/uapi/asm-generic/termbits.h. */
#include <asm-generic/termbits.h>
