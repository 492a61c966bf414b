/* vocabulary.h: the helper protocol's vocabulary, defined once.
 *
 * An X-macro list, not an ordinary header: the helper (mmap2_helper.c)
 * includes it several times, each time defining only the macros it needs,
 * and the harness (mmap2conf/cases.py) reads the same lines as text.
 * helpers/PROTOCOL.md describes every entry; tests/unit/test_vocabulary.py
 * fails when it and this file disagree. A new key, token, call, descriptor
 * kind, errno or signal is one line here (plus its meaning in the helper).
 *
 * Lines are exactly `NAME(arguments)`, one entry a line; comments are C
 * comments. The entries:
 *
 *   KEY(name, type, scope)   a request key.
 *     type   s: string, i: integer (0..2^64-1), a: array of integers
 *     scope  FRAME:   the harness sets it on every request (op, id, call)
 *            FILE:    a case row may give it, to the mmap calls and to the
 *                     file calls (extend, open) alike
 *            MMAP:    a case row may give it, to the mmap calls only
 *            HARNESS: the harness derives it from the row (fork, from trace)
 *            INIT:    the harness sets it on the exec request of a
 *                     dispatching init (PROTOCOL.md, init mode)
 *   CALL(name, kind)         a call under test.
 *     kind   STUB_MMAP: the mapping call through the raw stub (raw flavour)
 *            LIBC:      a libc's mapping call (the libc flavours)
 *            STUB_FILE: a file call through the raw stub (raw flavour)
 *   PROT(token)              a `prot` token: PROT_<token> of the uapi headers
 *   FLAG(token)              a `flags` token: MAP_<token>
 *   OPEN(token)              an `open` token: O_<token>
 *   FD(kind)                 an `fd` kind
 *   ADDR_FROM(value)         an `addr_from` value
 *   STACK(value)             a `stack` value (the raw mips-o32 stub only)
 *   ERRNO(name)              an errno name the helper knows (probe, err_name)
 *   SIGNAL(name)             a signal name the helper reports
 *   HELPER_CONST(name)       a uapi constant the helper uses itself (probe)
 */

#ifndef KEY
#define KEY(name, type, scope)
#endif
#ifndef CALL
#define CALL(name, kind)
#endif
#ifndef PROT
#define PROT(token)
#endif
#ifndef FLAG
#define FLAG(token)
#endif
#ifndef OPEN
#define OPEN(token)
#endif
#ifndef FD
#define FD(kind)
#endif
#ifndef ADDR_FROM
#define ADDR_FROM(value)
#endif
#ifndef STACK
#define STACK(value)
#endif
#ifndef ERRNO
#define ERRNO(name)
#endif
#ifndef SIGNAL
#define SIGNAL(name)
#endif
#ifndef HELPER_CONST
#define HELPER_CONST(name)
#endif

KEY(op, s, FRAME)
KEY(id, s, FRAME)
KEY(call, s, FRAME)
KEY(addr, i, MMAP)
KEY(addr_from, s, MMAP)
KEY(addr_delta, i, MMAP)
KEY(len, i, MMAP)
KEY(prot, s, MMAP)
KEY(prot_raw, i, MMAP)
KEY(flags, s, MMAP)
KEY(flags_raw, i, MMAP)
KEY(offset, i, MMAP)
KEY(fd, s, MMAP)
KEY(file_blocks, i, FILE)
KEY(markers, a, FILE)
KEY(open, s, FILE)
KEY(premap_len, i, MMAP)
KEY(premap_addr, i, MMAP)
KEY(reads, a, MMAP)
KEY(rlimit_memlock, i, MMAP)
KEY(rlimit_data, i, MMAP)
KEY(drop_caps, i, MMAP)
KEY(write_readback, i, MMAP)
KEY(truncate, i, MMAP)
KEY(stack, s, MMAP)
KEY(fork, i, HARNESS)
KEY(path, s, INIT)
KEY(noexec, i, INIT)

/* The mapping calls come first: the helper's file calls follow them. */
CALL(mmap2, STUB_MMAP)
CALL(mmap, LIBC)
CALL(mmap64, LIBC)
CALL(extend, STUB_FILE)
CALL(open, STUB_FILE)

PROT(NONE)
PROT(READ)
PROT(WRITE)
PROT(EXEC)
PROT(SEM)

FLAG(SHARED)
FLAG(PRIVATE)
FLAG(SHARED_VALIDATE)
FLAG(FIXED)
FLAG(FIXED_NOREPLACE)
FLAG(ANONYMOUS)
FLAG(NORESERVE)
FLAG(POPULATE)
FLAG(LOCKED)

OPEN(RDONLY)
OPEN(WRONLY)
OPEN(RDWR)
OPEN(APPEND)
OPEN(LARGEFILE)

FD(none)
FD(file)
FD(closed)
FD(bad)
FD(devzero)
FD(pipe)
FD(dir)
FD(memfd_sealed)

ADDR_FROM(premap)

STACK(high)
STACK(premap)

ERRNO(EPERM)
ERRNO(ENOENT)
ERRNO(EINTR)
ERRNO(EIO)
ERRNO(EBADF)
ERRNO(EAGAIN)
ERRNO(ENOMEM)
ERRNO(EACCES)
ERRNO(EFAULT)
ERRNO(EEXIST)
ERRNO(ENODEV)
ERRNO(ENOTDIR)
ERRNO(EISDIR)
ERRNO(EINVAL)
ERRNO(ENFILE)
ERRNO(EMFILE)
ERRNO(ETXTBSY)
ERRNO(EFBIG)
ERRNO(ENOSPC)
ERRNO(ESPIPE)
ERRNO(ENOSYS)
ERRNO(EOVERFLOW)
ERRNO(EOPNOTSUPP)

SIGNAL(SIGBUS)
SIGNAL(SIGSEGV)

HELPER_CONST(O_CREAT)
HELPER_CONST(O_EXCL)
HELPER_CONST(O_DIRECTORY)
HELPER_CONST(O_TRUNC)

#undef KEY
#undef CALL
#undef PROT
#undef FLAG
#undef OPEN
#undef FD
#undef ADDR_FROM
#undef STACK
#undef ERRNO
#undef SIGNAL
#undef HELPER_CONST
