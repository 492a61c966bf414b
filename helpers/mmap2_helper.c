/* mmap2_helper.c: the compiled half of the mmap2 conformance suite.
 *
 * One source for every ABI and every flavour; helpers/PROTOCOL.md is the
 * contract with the harness. HELPER_ABI_H names the ABI stub (abi/<stub>.h):
 * a raw six-argument system call, the ABI's error convention and, for the
 * freestanding flavour, _start. HELPER_FLAVOUR is the flavour's name.
 *
 *   raw   (HELPER_FREESTANDING): no libc; the call under test is the mmap2
 *         system call made through the stub, or one of the two file calls
 *         (extend: the write that sets the file's size; open: reopening it),
 *         which every ABI has, the 64-bit controls too.
 *   glibc, musl (HELPER_LIBC, with HELPER_LIBC_GLIBC or HELPER_LIBC_MUSL):
 *         the call under test is the libc's mmap or mmap64 (musl's off_t is
 *         64 bits, and its mmap64 is mmap). The probe reports the libc's own
 *         version string: glibc's gnu_get_libc_version(); musl has no such
 *         function, but every build of its libc.a holds __libc_version, the
 *         release its Makefile wrote into version.h (src/internal/version.c,
 *         the string its dynamic linker prints), which a static helper links.
 *
 * In every flavour every other system call (read, write, openat, llseek,
 * pipe2, clone, wait4, ...) also goes through the stub, so the call under
 * test is the only thing that differs between them.
 */

#include <stddef.h>		/* size_t, which the uapi signal.h needs */
#ifdef HELPER_LIBC
#include <errno.h>
#include <sys/mman.h>		/* mmap; mmap64 with _LARGEFILE64_SOURCE */
#include <unistd.h>		/* sysconf */
#if defined(HELPER_LIBC_GLIBC)
#include <gnu/libc-version.h>	/* gnu_get_libc_version */
#define LIBC_NAME "glibc"
#define LIBC_VERSION() gnu_get_libc_version()
#elif defined(HELPER_LIBC_MUSL)
/* hidden in musl's libc.h: visible to a static link, never exported */
extern const char __libc_version[];
#define LIBC_NAME "musl"
#define LIBC_VERSION() __libc_version
#else
#error "a libc flavour names its libc: -DHELPER_LIBC_GLIBC or -DHELPER_LIBC_MUSL (mmap2conf/build.py does)"
#endif
#endif
/* Constants come from the kernel's uapi headers in every flavour, so the
 * flavours of one ABI report the same numbers. */
#include <asm/unistd.h>
#include <asm/errno.h>
#include <asm/resource.h>
#include <asm/signal.h>
#include <linux/auxvec.h>
#include <linux/capability.h>
#include <linux/fcntl.h>
#include <linux/memfd.h>		/* fd "memfd_sealed" */
#include <linux/mman.h>
#include <linux/mount.h>		/* init mode: MS_ flags */
#include <linux/reboot.h>	/* init mode: power off */
#include <asm/termbits.h>	/* init mode: the console's struct termios, ECHO */
#include <asm/ioctls.h>		/* init mode: TCGETS, TCSETS */
#include <linux/utsname.h>	/* probe: struct new_utsname */
#include HELPER_ABI_H

typedef unsigned long ulong;
typedef unsigned long long u64;

#define MAXARR 4096		/* entries in one input array */
#define LINE_CAP (1 << 18)	/* one input line */
#define OUT_CAP (1 << 20)	/* one answer, or one child's fragments */
#define BLOCK 4096ULL		/* the protocol's file block, whatever the page */
#define MARKER 0x4D32434BU	/* "M2CK" */
#define BAD_FD 0x7fffffff	/* fd "bad": a number no process has open */
#define DEFAULT_MARKERS 4096ULL	/* markers absent: blocks 0..4095 at most */

#ifndef HELPER_FLAVOUR
#error "build with -DHELPER_FLAVOUR=\"raw\" (or the libc's name): mmap2conf/build.py does"
#endif
#define FLAVOUR HELPER_FLAVOUR

/* 32-bit ABIs seek with _llseek (llseek in asm-generic), 64-bit ones lseek. */
#if defined(__NR__llseek)
#define NR_LLSEEK __NR__llseek
#elif defined(__NR_llseek)
#define NR_LLSEEK __NR_llseek
#endif

/* The premap uses mmap2 where it exists; else (64-bit) mmap takes six
 * plain arguments. Without mmap2 the raw flavour does not offer it, so
 * NR_MMAP2 is never used there. */
#ifdef __NR_mmap2
#define NR_MMAP2 __NR_mmap2
#define NR_PREMAP __NR_mmap2
#else
#define NR_MMAP2 (-1UL)
#define NR_PREMAP __NR_mmap
#endif

/* fcntl takes 64-bit locks as fcntl64 on the 32-bit ABIs. */
#if defined(__NR_fcntl64)
#define NR_FCNTL __NR_fcntl64
#else
#define NR_FCNTL __NR_fcntl
#endif

#define WHENCE_SET 0	/* SEEK_SET on every ABI (include/uapi/linux/fs.h) */

/* ---- system calls ---- */

/* Infrastructure calls: the stub's result as a value or -errno. */
static long sys(ulong n, ulong a, ulong b, ulong c, ulong d, ulong e)
{
	ulong flag, ret = abi_syscall6(n, a, b, c, d, e, 0, &flag);
	ulong err = ABI_ERRNO(ret, flag);
	return err ? -(long)err : (long)ret;
}

static void sys_exit(int code)
{
	for (;;)
		sys(__NR_exit_group, code, 0, 0, 0, 0);
}

static int write_all(int fd, const char *s, size_t n)
{
	while (n) {
		long r = sys(__NR_write, fd, (ulong)s, n, 0, 0);
		if (r == -EINTR)
			continue;
		if (r <= 0)
			return -1;
		s += r;
		n -= r;
	}
	return 0;
}

static long seek_to(int fd, u64 off)
{
#ifdef NR_LLSEEK
	u64 result;
	return sys(NR_LLSEEK, fd, (ulong)(off >> 32), (ulong)off, (ulong)&result,
		   WHENCE_SET);
#else
	return sys(__NR_lseek, fd, off, WHENCE_SET, 0, 0);
#endif
}

/* Waits for a child and returns wait4's status word. The ABIs that are new
 * since the 64-bit time_t work (riscv32) have no wait4, only waitid: there the
 * siginfo is turned into the same status word. */
#ifdef __NR_wait4
static long wait_child(long pid, int *status)
{
	return sys(__NR_wait4, pid, (ulong)status, 0, 0, 0);
}
#else
#include <asm/siginfo.h>
#include <linux/wait.h>
static long wait_child(long pid, int *status)
{
	siginfo_t si;
	long r = sys(__NR_waitid, P_PID, pid, (ulong)&si, WEXITED, 0);
	if (r < 0)
		return r;
	if (si.si_code == CLD_EXITED)
		*status = (si.si_status & 0xff) << 8;
	else
		*status = (si.si_status & 0x7f) | (si.si_code == CLD_DUMPED ? 0x80 : 0);
	return pid;
}
#endif

/* ---- name tables ---- */

struct name { const char *name; ulong val; };

/* The vocabulary of the protocol: helpers/vocabulary.h, which the harness
 * reads too. Each table below is one expansion of its lines. */
static const struct name errnos[] = {
#define ERRNO(n) { #n, n },
#include "vocabulary.h"
	{ 0, 0 }
};
static const struct name signals[] = {
#define SIGNAL(n) { #n, n },
#include "vocabulary.h"
	{ 0, 0 }
};

/* Input tokens; the probe reports them with their prefix. */
static const struct name prot_tokens[] = {
#define PROT(t) { #t, PROT_##t },
#include "vocabulary.h"
	{ 0, 0 }
};
static const struct name flag_tokens[] = {
#define FLAG(t) { #t, MAP_##t },
#include "vocabulary.h"
	{ 0, 0 }
};
static const struct name open_tokens[] = {
#define OPEN(t) { #t, O_##t },
#include "vocabulary.h"
	{ 0, 0 }
};
/* Flags the helper itself opens with. */
static const struct name other_consts[] = {
#define HELPER_CONST(n) { #n, n },
#include "vocabulary.h"
	{ 0, 0 }
};

/* The calls, in the vocabulary's order: the mapping calls first, then the
 * file calls, which make no mapping and take only the keys of
 * file_call_keys (FRAME and FILE in the vocabulary). */
enum {
#define CALL(n, kind) C_##n,
#include "vocabulary.h"
	NCALLS
};
static const char *const call_names[] = {
#define CALL(n, kind) #n,
#include "vocabulary.h"
	0
};
/* The calls of each kind, as masks over C_<call>. */
enum { KIND_STUB_MMAP, KIND_LIBC, KIND_STUB_FILE };
enum {
	STUB_MMAP_CALLS = 0
#define CALL(n, kind) | (KIND_##kind == KIND_STUB_MMAP) << C_##n
#include "vocabulary.h"
	,
	LIBC_CALLS = 0
#define CALL(n, kind) | (KIND_##kind == KIND_LIBC) << C_##n
#include "vocabulary.h"
	,
	FILE_CALLS = 0
#define CALL(n, kind) | (KIND_##kind == KIND_STUB_FILE) << C_##n
#include "vocabulary.h"
};
#ifdef HELPER_LIBC
#define CALLS_OFFERED LIBC_CALLS
#elif defined(__NR_mmap2)
#define CALLS_OFFERED (STUB_MMAP_CALLS | FILE_CALLS)
#else
#define CALLS_OFFERED FILE_CALLS
#endif

enum {
#define FD(kind) FD_##kind,
#include "vocabulary.h"
	NFDS
};
static const char *const fd_names[] = {
#define FD(kind) #kind,
#include "vocabulary.h"
	0
};
static const char *const addr_from_names[] = {
#define ADDR_FROM(v) #v,
#include "vocabulary.h"
	0
};
enum {
	STACK_own,	/* no `stack`: the stub's ordinary call */
#define STACK(v) STACK_##v,
#include "vocabulary.h"
	NSTACKS
};
static const char *const stack_names[] = {
	"",
#define STACK(v) #v,
#include "vocabulary.h"
	0
};

static int streq(const char *a, const char *b)
{
	while (*a && *a == *b)
		a++, b++;
	return *a == *b;
}

static int lookup(const char *const *names, const char *s)
{
	int i;
	for (i = 0; names[i]; i++)
		if (streq(names[i], s))
			return i;
	return -1;
}

static const char *errno_name(ulong e)
{
	int i;
	for (i = 0; errnos[i].name; i++)
		if (errnos[i].val == e)
			return errnos[i].name;
	return 0;
}

/* "A|B|C" -> OR of the tokens' values; -1 on an unknown token. */
static int parse_tokens(const char *s, const struct name *t, ulong *out)
{
	ulong v = 0;
	while (*s) {
		const char *e = s;
		int i, n;
		while (*e && *e != '|')
			e++;
		n = e - s;
		for (i = 0; t[i].name; i++) {
			int k = 0;
			while (k < n && t[i].name[k] == s[k])
				k++;
			if (k == n && !t[i].name[n])
				break;
		}
		if (!t[i].name)
			return -1;
		v |= t[i].val;
		s = *e ? e + 1 : e;
	}
	*out = v;
	return 0;
}

/* ---- output ---- */

struct buf { char *p; size_t len, cap; };
static char out_mem[OUT_CAP], child_mem[OUT_CAP];
static struct buf out = { out_mem, 0, OUT_CAP };

static void putch(struct buf *b, char c)
{
	if (b->len < b->cap)
		b->p[b->len++] = c;
}

static void puts_(struct buf *b, const char *s)
{
	while (*s)
		putch(b, *s++);
}

/* Decimal without division: 32-bit targets would need libgcc's __udivdi3. */
static void put_u64(struct buf *b, u64 v)
{
	static const u64 pow10[20] = {
		10000000000000000000ULL, 1000000000000000000ULL,
		100000000000000000ULL, 10000000000000000ULL, 1000000000000000ULL,
		100000000000000ULL, 10000000000000ULL, 1000000000000ULL,
		100000000000ULL, 10000000000ULL, 1000000000ULL, 100000000ULL,
		10000000ULL, 1000000ULL, 100000ULL, 10000ULL, 1000ULL, 100ULL,
		10ULL, 1ULL
	};
	int k, started = 0;
	for (k = 0; k < 20; k++) {
		int d = 0;
		while (v >= pow10[k])
			v -= pow10[k], d++;
		if (d || started || k == 19) {
			putch(b, '0' + d);
			started = 1;
		}
	}
}

static void put_jstr(struct buf *b, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	putch(b, '"');
	for (; *s; s++) {
		unsigned char c = *s;
		if (c == '"' || c == '\\') {
			putch(b, '\\');
			putch(b, c);
		} else if (c < 0x20) {
			puts_(b, "\\u00");
			putch(b, hex[c >> 4]);
			putch(b, hex[c & 15]);
		} else {
			putch(b, c);
		}
	}
	putch(b, '"');
}

static void put_jstr_or_null(struct buf *b, const char *s)
{
	if (s)
		put_jstr(b, s);
	else
		puts_(b, "null");
}

static void put_key(struct buf *b, const char *k)
{
	puts_(b, ",\"");
	puts_(b, k);
	puts_(b, "\":");
}

static void put_names(struct buf *b, const char *prefix, const struct name *t,
		      int *first)
{
	for (; t->name; t++) {
		puts_(b, *first ? "\"" : ",\"");
		puts_(b, prefix);
		puts_(b, t->name);
		puts_(b, "\":");
		put_u64(b, t->val);
		*first = 0;
	}
}

static void send(void)
{
	putch(&out, '\n');
	write_all(1, out.p, out.len);
	out.len = 0;
}

static void protocol_error(const char *id, const char *msg, const char *arg)
{
	struct buf m = { child_mem, 0, OUT_CAP - 1 };
	puts_(&m, msg);
	if (arg) {
		puts_(&m, ": ");
		puts_(&m, arg);
	}
	m.p[m.len] = 0;
	puts_(&out, "{\"id\":");
	put_jstr_or_null(&out, id);
	puts_(&out, ",\"protocol_error\":");
	put_jstr(&out, m.p);
	puts_(&out, "}");
	send();
}

/* ---- input: a flat JSON object ---- */

enum {
#define KEY(n, type, scope) K_##n,
#include "vocabulary.h"
	NKEYS
};
static const char *const key_names[] = {
#define KEY(n, type, scope) #n,
#include "vocabulary.h"
	0
};
/* s: string, i: integer, a: integer array; one per key above. */
static const char key_types[] =
#define KEY(n, type, scope) #type
#include "vocabulary.h"
	;

static struct {
	unsigned long seen;	/* bit per key */
	u64 num[NKEYS];
	char *str[NKEYS];
	int n[NKEYS];
} rq;
/* One bit a key, in the unsigned long of every ABI, the 32-bit ones included. */
_Static_assert(NKEYS <= 32, "more request keys than bits in rq.seen");
static u64 markers_arr[MAXARR], reads_arr[MAXARR], junk_arr[MAXARR];

static char *cur;			/* parse position */
static const char *sem_err, *sem_arg;	/* first semantic error in the line */

static void skip_ws(void)
{
	while (*cur == ' ' || *cur == '\t' || *cur == '\r' || *cur == '\n')
		cur++;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decodes the string after an opening quote in place (never longer than its
 * escaped form) and NUL-terminates it; 0 on bad syntax. */
static char *parse_string(void)
{
	char *start = cur, *w = cur;
	for (;;) {
		unsigned char c = *cur++;
		unsigned v;
		int i, h;
		if (c == '"') {
			*w = 0;
			return start;
		}
		if (c < 0x20)		/* also the NUL that ends the line */
			return 0;
		if (c != '\\') {
			*w++ = c;
			continue;
		}
		switch (c = *cur++) {
		case '"': case '\\': case '/': *w++ = c; break;
		case 'b': *w++ = '\b'; break;
		case 'f': *w++ = '\f'; break;
		case 'n': *w++ = '\n'; break;
		case 'r': *w++ = '\r'; break;
		case 't': *w++ = '\t'; break;
		case 'u':
			for (v = 0, i = 0; i < 4; i++) {
				if ((h = hexval(*cur++)) < 0)
					return 0;
				v = v << 4 | h;
			}
			if (!v)
				return 0;	/* would cut the string */
			if (v < 0x80) {
				*w++ = v;
			} else if (v < 0x800) {
				*w++ = 0xc0 | v >> 6;
				*w++ = 0x80 | (v & 0x3f);
			} else {
				*w++ = 0xe0 | v >> 12;
				*w++ = 0x80 | (v >> 6 & 0x3f);
				*w++ = 0x80 | (v & 0x3f);
			}
			break;
		default:
			return 0;
		}
	}
}

/* A non-negative integer up to 2^64-1. */
static int parse_u64(u64 *out_v)
{
	u64 v = 0;
	if (*cur < '0' || *cur > '9')
		return -1;
	while (*cur >= '0' && *cur <= '9') {
		int d = *cur++ - '0';
		if (v > 1844674407370955161ULL ||
		    (v == 1844674407370955161ULL && d > 5))
			return -1;
		v = (v << 3) + (v << 1) + d;
	}
	if (*cur == '.' || *cur == 'e' || *cur == 'E')
		return -1;
	*out_v = v;
	return 0;
}

static void semantic(const char *msg, const char *arg)
{
	if (!sem_err)
		sem_err = msg, sem_arg = arg;
}

/* Parses one line into rq. Returns a syntax error or 0; a line that parses
 * may still carry a semantic error in sem_err. */
static const char *parse_line(char *line)
{
	rq.seen = 0;
	sem_err = sem_arg = 0;
	cur = line;
	skip_ws();
	if (*cur++ != '{')
		return "expected an object";
	skip_ws();
	if (*cur == '}')
		cur++;
	else for (;;) {
		char *key, *s = 0;
		int k, n = 0;
		char type;
		u64 v = 0;

		skip_ws();
		if (*cur++ != '"' || !(key = parse_string()))
			return "bad key";
		skip_ws();
		if (*cur++ != ':')
			return "expected ':'";
		skip_ws();
		k = lookup(key_names, key);
		if (*cur == '"') {
			cur++;
			if (!(s = parse_string()))
				return "bad string";
			type = 's';
		} else if (*cur == '[') {
			u64 *a = k == K_markers ? markers_arr :
				 k == K_reads ? reads_arr : junk_arr;
			cur++;
			skip_ws();
			if (*cur != ']') for (;;) {
				skip_ws();
				if (n == MAXARR)
					return "array too long";
				if (parse_u64(&a[n++]))
					return "bad array element";
				skip_ws();
				if (*cur == ']')
					break;
				if (*cur++ != ',')
					return "expected ',' or ']'";
			}
			cur++;
			type = 'a';
		} else {
			if (parse_u64(&v))
				return "bad value";
			type = 'i';
		}
		if (k < 0)
			semantic("unknown key", key);
		else if (type != key_types[k])
			semantic("wrong type for key", key);
		else if (rq.seen & 1UL << k)
			semantic("duplicate key", key);
		else {
			rq.seen |= 1UL << k;
			rq.num[k] = v;
			rq.str[k] = s;
			rq.n[k] = n;
		}
		skip_ws();
		if (*cur == ',') {
			cur++;
			continue;
		}
		if (*cur++ != '}')
			return "expected ',' or '}'";
		break;
	}
	skip_ws();
	if (*cur)
		return "trailing characters";
	return 0;
}

#define HAS(k) (rq.seen & 1UL << (k))
/* The keys a file call takes: the frame's and the FILE ones. */
enum { SCOPE_FRAME, SCOPE_FILE, SCOPE_MMAP, SCOPE_HARNESS, SCOPE_INIT };
static const unsigned long file_call_keys = 0
#define KEY(n, type, scope) \
	| (unsigned long)(SCOPE_##scope == SCOPE_FRAME || SCOPE_##scope == SCOPE_FILE) << K_##n
#include "vocabulary.h"
	;

/* ---- probe ---- */

static ulong auxv_pagesz;
static const char *dir;

static void do_probe(const char *id)
{
	const char *stub = HELPER_ABI_H, *p;
	char name[64];
	int i, n = 0, first = 1;

	/* The stub's name is its header's file name ("abi/i386.h" -> i386). */
	for (p = stub; *p; p++)
		if (*p == '/')
			stub = p + 1;
	for (p = stub; *p && *p != '.' && n < 63; p++)
		name[n++] = *p;
	name[n] = 0;

	puts_(&out, "{\"id\":");
	put_jstr(&out, id);
	puts_(&out, ",\"op\":\"probe\",\"flavour\":\"" FLAVOUR "\",\"stub\":");
	put_jstr(&out, name);
	puts_(&out, ",\"calls\":[");
	for (i = 0; call_names[i]; i++)
		if (CALLS_OFFERED & 1 << i) {
			puts_(&out, first ? "\"" : ",\"");
			puts_(&out, call_names[i]);
			puts_(&out, "\"");
			first = 0;
		}
	putch(&out, ']');
	put_key(&out, "mmap2_nr");
#ifdef __NR_mmap2
	put_u64(&out, __NR_mmap2);
#else
	puts_(&out, "null");
#endif
	put_key(&out, "auxv_pagesz");
	if (auxv_pagesz)
		put_u64(&out, auxv_pagesz);
	else
		puts_(&out, "null");
	put_key(&out, "sysconf_pagesz");
#ifdef HELPER_LIBC
	put_u64(&out, sysconf(_SC_PAGESIZE));
#else
	puts_(&out, "null");
#endif
	/* The libc the helper is linked with, as that libc names its release. */
	put_key(&out, "libc");
#ifdef HELPER_LIBC
	puts_(&out, "{\"name\":\"" LIBC_NAME "\",\"version\":");
	put_jstr(&out, LIBC_VERSION());
	putch(&out, '}');
#else
	puts_(&out, "null");
#endif
	/* The kernel that answers (qemu-user passes the host's through): the harness
	 * reads its release and word size from here instead of assuming them. */
	{
		static struct new_utsname u;
		long r = sys(__NR_uname, (ulong)&u, 0, 0, 0, 0);

		put_key(&out, "uname");
		if (r < 0) {
			puts_(&out, "null");
		} else {
			puts_(&out, "{\"sysname\":");
			put_jstr(&out, u.sysname);
			puts_(&out, ",\"release\":");
			put_jstr(&out, u.release);
			puts_(&out, ",\"version\":");
			put_jstr(&out, u.version);
			puts_(&out, ",\"machine\":");
			put_jstr(&out, u.machine);
			putch(&out, '}');
		}
	}
	put_key(&out, "errno");
	putch(&out, '{');
	first = 1;
	put_names(&out, "", errnos, &first);
	puts_(&out, "}");
	put_key(&out, "signals");
	putch(&out, '{');
	first = 1;
	put_names(&out, "", signals, &first);
	puts_(&out, "}");
	put_key(&out, "constants");
	putch(&out, '{');
	first = 1;
	put_names(&out, "MAP_", flag_tokens, &first);
	put_names(&out, "PROT_", prot_tokens, &first);
	put_names(&out, "O_", open_tokens, &first);
	put_names(&out, "", other_consts, &first);
	puts_(&out, "}}");
	send();
}

/* ---- call: everything below runs in the child ---- */

static struct {
	int call, fd_kind, addr_from_premap, nmarkers, nreads;
	int set_memlock, set_data, drop_caps, write_readback;
	int truncate, truncated;	/* truncate: asked; the file is cut (fill_file) */
	int stack;		/* STACK_*: the stack pointer of the mmap2 trap */
	int in_process;		/* "fork":0: no child, so a tracer sees one process */
	ulong prot, flags, open_flags;
	u64 addr, delta, len, offset, blocks, premap_len, premap_addr;
	u64 memlock[2];		/* struct rlimit64: soft, hard */
	u64 data[2];		/* RLIMIT_DATA, the same */
	u64 write_at;		/* write_readback: the file offset of mapping offset 0 */
	u64 truncate_to;	/* truncate: the file's size after the call, in blocks */
	u64 *markers, *reads;
	u64 seq;		/* case number, for a unique file name */
} cs;

static char frag_mem[OUT_CAP];	/* its own: a case in process runs beside `out` */
static struct buf frag = { frag_mem, 0, OUT_CAP };
static int frag_fd;

/* A case ends its child; in process (a traced session: qemu -strace would
 * interleave the lines of two processes) control goes back to the caller. */
static void case_done(void)
{
	if (!cs.in_process)
		sys_exit(0);
}

static void frag_flush(void)
{
	write_all(frag_fd, frag.p, frag.len);
	frag.len = 0;
}

static char path[4096];
static int named;	/* open, truncate: the file keeps its name until the call */
static int setup_failed;	/* make_fd: the fragment of a setup_failure is out */

/* The descriptors make_fd opened in the helper for the next case: the child
 * inherits them, and the helper closes its copies once the child is forked. */
static long case_fds[4];
static int ncase_fds;

static long keep_fd(long fd)
{
	if (fd >= 0)
		case_fds[ncase_fds++] = fd;
	return fd;
}

static void close_case_fd(long fd)
{
	int i;
	sys(__NR_close, fd, 0, 0, 0, 0);
	for (i = 0; i < ncase_fds; i++)
		if (case_fds[i] == fd)
			case_fds[i] = case_fds[--ncase_fds];
}

/* A setup that failed: the fragment is sent in place of the call's answer.
 * make_fd runs in the helper and returns after it; setup_error ends the case
 * (the child, or the helper for a case in process). */
static int setup_failure(const char *what, long err)
{
	const char *en = errno_name(-err);
	if (named)
		sys(__NR_unlinkat, AT_FDCWD, (ulong)path, 0, 0, 0);
	named = 0;
	setup_failed = 1;
	frag.len = 0;
	puts_(&frag, "\"setup_error\":\"");
	puts_(&frag, what);
	if (err) {
		puts_(&frag, ": ");
		if (en)
			puts_(&frag, en);
		else
			put_u64(&frag, -err);
	}
	puts_(&frag, "\"");
	frag_flush();
	return -1;
}

static void setup_error(const char *what, long err)
{
	setup_failure(what, err);
	/* Never returns, in process too: the case cannot go on (the harness
	 * sees the helper end and starts another). */
	sys_exit(0);
}

static unsigned int last_block[BLOCK / 4];	/* extend: what it writes */

/* Writes the markers of the first cs.blocks blocks and sets the size to
 * cs.blocks blocks, through wfd (open for writing, the file empty); -1 after
 * a setup_failure. */
static int fill_file(long wfd)
{
	unsigned int m[3];
	u64 i, n;
	long r;
	int k;

	n = cs.nmarkers >= 0 ? (u64)cs.nmarkers :
	    cs.blocks < DEFAULT_MARKERS ? cs.blocks : DEFAULT_MARKERS;
	for (i = 0; i < n; i++) {
		u64 blk = cs.nmarkers < 0 ? i : cs.markers[i];
		if (blk >= cs.blocks) {
			if (cs.truncated)	/* cut off by truncate */
				continue;
			return setup_failure("marker beyond file_blocks", 0);
		}
		m[0] = MARKER;
		m[1] = (unsigned int)blk;
		m[2] = (unsigned int)(blk >> 32);
		if ((r = seek_to(wfd, blk * BLOCK)) < 0)
			return setup_failure("seek", r);
		if ((r = sys(__NR_write, wfd, (ulong)m, 12, 0, 0)) != 12)
			return setup_failure("write marker", r < 0 ? r : 0);
		if (blk == cs.blocks - 1)
			for (k = 0; k < 3; k++)
				last_block[k] = m[k];
	}
	/* extend: the call under test writes the whole last block (with its
	 * marker), from its start. A 32-bit kernel refuses a seek past
	 * MAX_LFS_FILESIZE (EINVAL), so only a write that starts there can
	 * meet the EFBIG of a file that would outgrow it. */
	if (cs.call == C_extend) {
		if ((r = seek_to(wfd, (cs.blocks - 1) * BLOCK)) < 0)
			return setup_failure("seek", r);
		return 0;
	}
	/* The size: one byte at the end; every block in between stays a hole. */
	if (cs.blocks) {
		if ((r = seek_to(wfd, cs.blocks * BLOCK - 1)) < 0)
			return setup_failure("seek", r);
		m[0] = 0;
		if ((r = sys(__NR_write, wfd, (ulong)m, 1, 0, 0)) != 1)
			return setup_failure("write end", r < 0 ? r : 0);
	}
	return 0;
}

/* truncate: after the call, the still-named file is opened again with
 * O_TRUNC and filled as a file of cs.truncate_to blocks would be (the same
 * markers below it): a truncation without ftruncate64, whose 64-bit length
 * each ABI passes its own way. Then it loses its name. */
static void truncate_file(void)
{
	long wfd = sys(__NR_openat, AT_FDCWD, (ulong)path,
		       O_WRONLY | O_TRUNC | O_LARGEFILE, 0, 0);
	if (wfd < 0)
		setup_error("truncate: open O_TRUNC", wfd);
	cs.blocks = cs.truncate_to;
	cs.truncated = 1;
	if (fill_file(wfd) < 0)
		sys_exit(0);	/* setup_error's end */
	sys(__NR_close, wfd, 0, 0, 0, 0);
}

/* The case's file: created, opened for the case, unlinked at once (with
 * truncate: after the call), then filled through a second descriptor so that
 * the case's open flags (say RDONLY, or no LARGEFILE) do not limit the setup.
 * The file calls differ: extend gets that descriptor back, at the start of
 * the last block, for the write that sets the size; open gets no descriptor,
 * and the file keeps its name until the call under test has opened it again.
 * Made in the helper, before the fork (do_call). */
static int make_file(void)
{
	struct buf b = { path, 0, sizeof path - 1 };
	long wfd, fd;

	last_block[0] = last_block[1] = last_block[2] = 0;	/* a case's own */
	puts_(&b, dir);
	puts_(&b, "/mmap2-helper.");
	put_u64(&b, (ulong)sys(__NR_getpid, 0, 0, 0, 0, 0));
	putch(&b, '.');
	put_u64(&b, cs.seq);
	path[b.len] = 0;
	if (b.len >= b.cap)
		return setup_failure("file name too long", 0);
	if (cs.blocks > 1ULL << 50)
		return setup_failure("file_blocks too large", 0);
	if (cs.call == C_extend && !cs.blocks)
		return setup_failure("extend needs file_blocks of 1 or more", 0);

	wfd = keep_fd(sys(__NR_openat, AT_FDCWD, (ulong)path,
			  O_RDWR | O_CREAT | O_EXCL | O_LARGEFILE, 0600, 0));
	if (wfd < 0)
		return setup_failure("create file", wfd);
	named = cs.call == C_open || cs.truncate;
	fd = wfd;
	if (!(FILE_CALLS & 1 << cs.call))
		fd = keep_fd(sys(__NR_openat, AT_FDCWD, (ulong)path, cs.open_flags, 0, 0));
	if (!named)
		sys(__NR_unlinkat, AT_FDCWD, (ulong)path, 0, 0, 0);
	if (fd < 0)
		return setup_failure("open file", fd);
	if (fill_file(wfd) < 0)
		return -1;
	if (cs.call == C_extend)
		return wfd;
	close_case_fd(wfd);
	return cs.call == C_open ? -1 : fd;
}

static int make_fd(void)
{
	int p[2];
	long fd, r;
	switch (cs.fd_kind) {
	case FD_file:
		return make_file();
	case FD_closed:
		fd = sys(__NR_openat, AT_FDCWD, (ulong)dir, O_RDONLY | O_DIRECTORY, 0, 0);
		if (fd < 0)
			return setup_failure("open dir", fd);
		sys(__NR_close, fd, 0, 0, 0, 0);
		return fd;
	case FD_bad:
		return BAD_FD;
	case FD_devzero:
		fd = keep_fd(sys(__NR_openat, AT_FDCWD, (ulong)"/dev/zero", cs.open_flags, 0, 0));
		if (fd < 0)
			return setup_failure("open /dev/zero", fd);
		return fd;
	case FD_pipe:
		if ((fd = sys(__NR_pipe2, (ulong)p, 0, 0, 0, 0)) < 0)
			return setup_failure("pipe2", fd);
		keep_fd(p[1]);	/* the write end stays open too */
		return keep_fd(p[0]);
	case FD_dir:
		fd = keep_fd(sys(__NR_openat, AT_FDCWD, (ulong)dir, O_RDONLY | O_DIRECTORY, 0, 0));
		if (fd < 0)
			return setup_failure("open dir", fd);
		return fd;
	case FD_memfd_sealed:
		/* One block, its marker at the start, then F_SEAL_WRITE. */
		fd = keep_fd(sys(__NR_memfd_create, (ulong)"mmap2-helper", MFD_ALLOW_SEALING, 0, 0, 0));
		if (fd < 0)
			return setup_failure("memfd_create", fd);
		last_block[0] = MARKER;
		last_block[1] = last_block[2] = 0;
		if ((r = sys(__NR_write, fd, (ulong)last_block, BLOCK, 0, 0)) != (long)BLOCK)
			return setup_failure("write memfd", r < 0 ? r : 0);
		if ((r = sys(NR_FCNTL, fd, F_ADD_SEALS, F_SEAL_WRITE, 0, 0)) < 0)
			return setup_failure("fcntl F_ADD_SEALS F_SEAL_WRITE", r);
		return fd;
	}
	return -1;
}

static void put_err_name(ulong err)
{
	put_key(&frag, "err_name");
	if (!err)
		puts_(&frag, "null");
	else if (errno_name(err))
		put_jstr(&frag, errno_name(err));
	else
		put_u64(&frag, err);
}

/* A raw result as the stub saw it: the return register, the error flag and
 * the error the ABI's convention (ABI_ERRNO) makes of them. */
static void put_raw(ulong ret, ulong flag, ulong err)
{
	puts_(&frag, "\"ret\":");
	put_u64(&frag, ret);
	put_key(&frag, "flag");
	put_u64(&frag, flag);
	put_err_name(err);
}

/* write_readback: a pattern written through the mapping at its offset 0, then
 * read back from the file at write_at through the case's descriptor (seek and
 * read: pread64 would need each ABI's layout of a 64-bit argument). A seek or
 * read that fails is reported as a string in place of the words. */
#define WRITE_MAGIC 0x4D325752U	/* "M2WR" */
static void write_and_read_back(ulong map, int fd)
{
	volatile unsigned int *w = (volatile unsigned int *)map;
	unsigned int back[3] = { 0, 0, 0 };
	const char *what = 0;
	long r;
	int k;

	frag_flush();	/* a signal in the write leaves the reads intact */
	w[0] = WRITE_MAGIC;
	w[1] = (unsigned int)cs.write_at;
	w[2] = (unsigned int)(cs.write_at >> 32);
	if ((r = seek_to(fd, cs.write_at)) < 0)
		what = "seek";
	else if ((r = sys(__NR_read, fd, (ulong)back, sizeof back, 0, 0)) < 0)
		what = "read";
	put_key(&frag, "readback");
	if (what) {
		const char *en = errno_name(-r);
		puts_(&frag, "\"");
		puts_(&frag, what);
		puts_(&frag, ": ");
		if (en)
			puts_(&frag, en);
		else
			put_u64(&frag, -r);
		puts_(&frag, "\"");
		return;
	}
	putch(&frag, '[');
	for (k = 0; k < 3; k++) {
		if (k)
			putch(&frag, ',');
		put_u64(&frag, back[k]);
	}
	putch(&frag, ']');
}

static int case_fd;	/* what make_fd made for the case */

static void run_case(void)
{
	static const u64 no_core[2] = { 0, 0 };
	static struct __user_cap_header_struct cap_hdr = {
		_LINUX_CAPABILITY_VERSION_3, 0
	};
	static const struct __user_cap_data_struct no_caps[2];
	ulong ret, flag = 0, err, addr, premap = 0;
	long r;
	int fd, k;

	/* A case that dies must not leave a core (qemu writes its own). */
	sys(__NR_prlimit64, 0, RLIMIT_CORE, (ulong)no_core, 0, 0);

	fd = case_fd;
	/* The file calls: their raw result is the whole answer. */
	if (FILE_CALLS & 1 << cs.call) {
		if (cs.call == C_extend)
			ret = abi_syscall6(__NR_write, fd, (ulong)last_block, BLOCK,
					   0, 0, 0, &flag);
		else
			ret = abi_syscall6(__NR_openat, AT_FDCWD, (ulong)path,
					   cs.open_flags, 0, 0, 0, &flag);
		err = ABI_ERRNO(ret, flag);
		if (cs.call == C_open) {
			sys(__NR_unlinkat, AT_FDCWD, (ulong)path, 0, 0, 0);
			if (!err)
				sys(__NR_close, ret, 0, 0, 0, 0);
		}
		put_raw(ret, flag, err);
		frag_flush();
		case_done();
		return;
	}
	if (cs.premap_len) {
		premap = abi_syscall6(NR_PREMAP, cs.premap_addr, cs.premap_len,
				      PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS,
				      -1, 0, &flag);
		if ((err = ABI_ERRNO(premap, flag)))
			setup_error("premap", -(long)err);
	}
	/* Without CAP_IPC_LOCK, root obeys RLIMIT_MEMLOCK; set it while we may. */
	if (cs.set_memlock &&
	    (r = sys(__NR_prlimit64, 0, RLIMIT_MEMLOCK, (ulong)cs.memlock, 0, 0)))
		setup_error("prlimit64 RLIMIT_MEMLOCK", r);
	if (cs.set_data &&
	    (r = sys(__NR_prlimit64, 0, RLIMIT_DATA, (ulong)cs.data, 0, 0)))
		setup_error("prlimit64 RLIMIT_DATA", r);
	if (cs.drop_caps &&
	    (r = sys(__NR_capset, (ulong)&cap_hdr, (ulong)no_caps, 0, 0, 0)))
		setup_error("capset", r);
	addr = cs.addr_from_premap ? premap + cs.delta : cs.addr;

#ifdef HELPER_LIBC
	{
		void *p;
		errno = 0;
		if (cs.call == C_mmap)
			p = mmap((void *)addr, cs.len, cs.prot, cs.flags, fd,
				 (off_t)cs.offset);
		else
			p = mmap64((void *)addr, cs.len, cs.prot, cs.flags, fd,
				   (off64_t)cs.offset);
		ret = (ulong)p;
		err = p == MAP_FAILED ? (ulong)errno : 0;
		puts_(&frag, "\"ret\":");
		put_u64(&frag, ret);
		put_key(&frag, "errno");
		put_u64(&frag, err);
	}
	put_err_name(err);
#else
#ifdef ABI_HAS_STACK_ARGUMENTS
	if (cs.stack != STACK_own)	/* fd and offset are never stored */
		ret = abi_syscall6_sp(NR_MMAP2, addr, cs.len, cs.prot, cs.flags,
				      cs.stack == STACK_high ? 0x80000000UL : premap,
				      &flag);
	else
#endif
	ret = abi_syscall6(NR_MMAP2, addr, cs.len, cs.prot, cs.flags, fd,
			   cs.offset, &flag);
	err = ABI_ERRNO(ret, flag);
	put_raw(ret, flag, err);
#endif
	if (cs.truncate) {	/* the mapping is made: now its file changes size */
		if (!err)
			truncate_file();
		sys(__NR_unlinkat, AT_FDCWD, (ulong)path, 0, 0, 0);
		named = 0;
	}
	put_key(&frag, "addr_arg");
	put_u64(&frag, addr);
	if (cs.premap_len) {
		put_key(&frag, "premap");
		put_u64(&frag, premap);
	}
	put_key(&frag, "reads");
	putch(&frag, '[');
	/* Each read is sent on its own once it is done, so the parent knows
	 * which offset was being touched if the child dies. */
	for (k = 0; !err && k < cs.nreads; k++) {
		volatile unsigned int *w =
			(volatile unsigned int *)(ret + (ulong)cs.reads[k]);
		unsigned int w0, w1, w2;
		frag_flush();
		w0 = w[0];
		w1 = w[1];
		w2 = w[2];
		puts_(&frag, k ? ",[" : "[");
		put_u64(&frag, cs.reads[k]);
		putch(&frag, ',');
		put_u64(&frag, w0);
		putch(&frag, ',');
		put_u64(&frag, w1);
		putch(&frag, ',');
		put_u64(&frag, w2);
		putch(&frag, ']');
	}
	putch(&frag, ']');
	if (!err && cs.write_readback)
		write_and_read_back(ret, fd);
	frag_flush();
	case_done();
}

/* qemu-user translates guest code per process, and what a forked child
 * translates dies with it: each case would translate the child's path anew
 * (0.9 ms a case under qemu-i386 7.2, measured). Run once in the helper, for
 * a call that changes nothing (length 0: EINVAL, mmap(2)), that path is
 * translated for every child to come. Its fragments go nowhere (fd -1). */
static void warm_case_path(void)
{
	int c;
	for (c = 0; c < NCALLS && !((CALLS_OFFERED & ~FILE_CALLS) >> c & 1); c++)
		;
	if (c == NCALLS)	/* no mapping call: only file calls, which fork nothing new */
		return;
	cs.call = c;
	cs.len = 0;
	cs.prot = PROT_READ;
	cs.flags = MAP_PRIVATE | MAP_ANONYMOUS;
	cs.stack = STACK_own;
	cs.in_process = 1;
	case_fd = frag_fd = -1;
	run_case();
	frag.len = 0;
}

/* ---- call: the parent's side ---- */

static const char *find(const char *s, size_t n, const char *needle)
{
	size_t i, k;
	for (i = 0; i < n; i++) {
		for (k = 0; needle[k] && i + k < n && s[i + k] == needle[k]; k++)
			;
		if (!needle[k])
			return s + i;
	}
	return 0;
}

static void do_call(const char *id)
{
	struct buf cb = { child_mem, 0, OUT_CAP };
	int p[2], status = 0, sig, code;
	long pid = 0, r;
	const char *reads, *q;
	int opened = 0, closed = 0;

	puts_(&out, "{\"id\":");
	put_jstr(&out, id);
	if ((r = sys(__NR_pipe2, (ulong)p, 0, 0, 0, 0)) < 0) {
		puts_(&out, ",\"setup_error\":\"pipe2\",\"signal\":null,\"signal_at\":null}");
		send();
		return;
	}
	/* The case's file and descriptor are made here, before the fork: a
	 * forked child under qemu-user translates anew every instruction that
	 * the helper itself has not run (the file's setup cost 0.7 ms a case
	 * there). The child inherits the descriptors; a failure sends its
	 * fragment through the pipe, as the child's would. */
	frag_fd = p[1];
	named = setup_failed = ncase_fds = 0;
	case_fd = make_fd();
	if (setup_failed && cs.in_process)
		sys_exit(0);	/* a case in process ends the helper (setup_error) */
	if (!setup_failed) {
		if (cs.in_process)	/* its few fragments fit in the pipe's buffer */
			run_case();
		else if ((pid = sys(__NR_clone, SIGCHLD, 0, 0, 0, 0)) == 0) {
			sys(__NR_close, p[0], 0, 0, 0, 0);
			run_case();
		}
	}
	if (!cs.in_process)	/* a case in process keeps them, as it keeps its mapping */
		while (ncase_fds)
			close_case_fd(case_fds[0]);
	if (pid < 0) {
		puts_(&out, ",\"setup_error\":\"clone\",\"signal\":null,\"signal_at\":null}");
		sys(__NR_close, p[0], 0, 0, 0, 0);
		sys(__NR_close, p[1], 0, 0, 0, 0);
		if (named)
			sys(__NR_unlinkat, AT_FDCWD, (ulong)path, 0, 0, 0);
		send();
		return;
	}
	sys(__NR_close, p[1], 0, 0, 0, 0);
	for (;;) {
		char tmp[4096];
		long i;
		r = sys(__NR_read, p[0], (ulong)tmp, sizeof tmp, 0, 0);
		if (r == -EINTR)
			continue;
		if (r <= 0)
			break;
		for (i = 0; i < r; i++)
			putch(&cb, tmp[i]);
	}
	sys(__NR_close, p[0], 0, 0, 0, 0);
	while (pid > 0 && (r = wait_child(pid, &status)) == -EINTR)
		;
	if (named)	/* open, truncate: the child unlinks it after the call, unless it died first */
		sys(__NR_unlinkat, AT_FDCWD, (ulong)path, 0, 0, 0);

	if (cb.len) {
		putch(&out, ',');
		for (q = cb.p; q < cb.p + cb.len; q++)
			putch(&out, *q);
	}
	/* Count brackets from the list's own '[': an open list means the child
	 * died in the read after the (opened - 1) it sent. */
	reads = find(cb.p, cb.len, "\"reads\":[");
	if (reads)
		for (q = reads + 8; q < cb.p + cb.len; q++)
			opened += *q == '[', closed += *q == ']';
	sig = status & 0x7f;
	code = (status >> 8) & 0xff;
	if (sig && sig != 0x7f) {
		if (opened > closed)
			putch(&out, ']');
	} else {
		sig = 0;
		if (code && !find(cb.p, cb.len, "\"setup_error\"")) {
			puts_(&out, ",\"setup_error\":\"child exited with status ");
			put_u64(&out, code);
			putch(&out, '"');
		}
	}
	put_key(&out, "signal");
	if (!sig) {
		puts_(&out, "null");
	} else {
		int i;
		for (i = 0; signals[i].name && signals[i].val != (ulong)sig; i++)
			;
		if (signals[i].name)
			put_jstr(&out, signals[i].name);
		else
			put_u64(&out, sig);
	}
	put_key(&out, "signal_at");
	if (sig && opened > closed && opened - 1 < cs.nreads)
		put_u64(&out, cs.reads[opened - 1]);
	else
		puts_(&out, "null");
	putch(&out, '}');
	send();
}

/* Checks a parsed call and fills cs; a protocol error message or 0. */
static const char *prepare_call(const char **arg)
{
	ulong v;
	*arg = 0;
	if (!HAS(K_call))
		return "missing key: call";
	if ((cs.call = lookup(call_names, rq.str[K_call])) < 0)
		return *arg = rq.str[K_call], "unknown call";
	if (!(CALLS_OFFERED & 1 << cs.call))
		return *arg = rq.str[K_call], "call not offered by this flavour";
	if (FILE_CALLS & 1 << cs.call && rq.seen & ~file_call_keys) {
		int k;
		for (k = 0; !(rq.seen & ~file_call_keys & 1UL << k); k++)
			;
		return *arg = key_names[k], "key not taken by a file call";
	}
	if (!(FILE_CALLS & 1 << cs.call) && !HAS(K_len))
		return "missing key: len";
	cs.len = rq.num[K_len];
	cs.addr = HAS(K_addr) ? rq.num[K_addr] : 0;
	cs.delta = HAS(K_addr_delta) ? rq.num[K_addr_delta] : 0;
	cs.offset = HAS(K_offset) ? rq.num[K_offset] : 0;
	cs.blocks = HAS(K_file_blocks) ? rq.num[K_file_blocks] : 1;
	cs.premap_len = HAS(K_premap_len) ? rq.num[K_premap_len] : 0;
	cs.premap_addr = HAS(K_premap_addr) ? rq.num[K_premap_addr] : 0;
	cs.set_memlock = HAS(K_rlimit_memlock);
	cs.memlock[0] = cs.memlock[1] = rq.num[K_rlimit_memlock];
	cs.set_data = HAS(K_rlimit_data);
	cs.data[0] = cs.data[1] = rq.num[K_rlimit_data];
	cs.write_readback = HAS(K_write_readback);
	cs.write_at = rq.num[K_write_readback];
	cs.truncate = HAS(K_truncate);
	cs.truncate_to = rq.num[K_truncate];
	cs.truncated = 0;
	if (HAS(K_drop_caps) && rq.num[K_drop_caps] > 1)
		return "bad drop_caps";
	cs.drop_caps = HAS(K_drop_caps) && rq.num[K_drop_caps];
	if (HAS(K_fork) && rq.num[K_fork] > 1)
		return "bad fork";
	cs.in_process = HAS(K_fork) && !rq.num[K_fork];

	cs.prot = HAS(K_prot_raw) ? rq.num[K_prot_raw] : 0;
	if (HAS(K_prot)) {
		if (parse_tokens(rq.str[K_prot], prot_tokens, &v))
			return *arg = rq.str[K_prot], "bad prot";
		cs.prot |= v;
	}
	cs.flags = HAS(K_flags_raw) ? rq.num[K_flags_raw] : 0;
	if (HAS(K_flags)) {
		if (parse_tokens(rq.str[K_flags], flag_tokens, &v))
			return *arg = rq.str[K_flags], "bad flags";
		cs.flags |= v;
	}
	cs.open_flags = O_RDONLY | O_LARGEFILE;
	if (HAS(K_open) &&
	    parse_tokens(rq.str[K_open], open_tokens, &cs.open_flags))
		return *arg = rq.str[K_open], "bad open";
	cs.fd_kind = FILE_CALLS & 1 << cs.call ? FD_file : FD_none;
	if (HAS(K_fd) && (cs.fd_kind = lookup(fd_names, rq.str[K_fd])) < 0)
		return *arg = rq.str[K_fd], "bad fd";
	if (cs.truncate && cs.fd_kind != FD_file)
		return "truncate needs fd file";
	cs.addr_from_premap = 0;
	if (HAS(K_addr_from)) {
		if (lookup(addr_from_names, rq.str[K_addr_from]) < 0)
			return *arg = rq.str[K_addr_from], "bad addr_from";
		if (!cs.premap_len)
			return "addr_from premap needs premap_len";
		cs.addr_from_premap = 1;
	}
	cs.stack = STACK_own;
	if (HAS(K_stack)) {
#if defined(ABI_HAS_STACK_ARGUMENTS) && !defined(HELPER_LIBC)
		if ((cs.stack = lookup(stack_names, rq.str[K_stack])) <= 0)
			return *arg = rq.str[K_stack], "bad stack";
		if (cs.stack == STACK_premap && !cs.premap_len)
			return "stack premap needs premap_len";
#else
		return *arg = rq.str[K_stack], "stack not offered by this ABI and flavour";
#endif
	}
	cs.markers = markers_arr;
	cs.nmarkers = HAS(K_markers) ? rq.n[K_markers] : -1;
	cs.reads = reads_arr;
	if (HAS(K_reads)) {
		cs.nreads = rq.n[K_reads];
	} else {
		reads_arr[0] = 0;
		cs.nreads = 1;
	}
	cs.seq++;
	return 0;
}

static int dispatching;		/* init mode: an init that starts the other helpers */
static void do_exec(const char *id);

static void handle_line(char *line)
{
	const char *e = parse_line(line), *id, *arg;
	if (e) {
		protocol_error(0, e, 0);
		return;
	}
	id = HAS(K_id) ? rq.str[K_id] : 0;
	if (sem_err)
		protocol_error(id, sem_err, sem_arg);
	else if (!id)
		protocol_error(0, "missing key: id", 0);
	else if (!HAS(K_op))
		protocol_error(id, "missing key: op", 0);
	else if (streq(rq.str[K_op], "exec") != dispatching)
		protocol_error(id, dispatching ? "a dispatching init only takes exec"
			       : "exec needs a dispatching init", rq.str[K_op]);
	else if (dispatching && !HAS(K_path))
		protocol_error(id, "missing key: path", 0);
	else if (dispatching)
		do_exec(id);
	else if (streq(rq.str[K_op], "probe"))
		do_probe(id);
	else if (!streq(rq.str[K_op], "call"))
		protocol_error(id, "unknown op", rq.str[K_op]);
	else if ((e = prepare_call(&arg)))
		protocol_error(id, e, arg);
	else
		do_call(id);
}

/* ---- init mode: the whole user space of a guest kernel ---- */

#define INIT_READY "mmap2_helper: init mode, ready"
#define INIT_DISPATCH "MMAP2_INIT=dispatch"
#define SCRATCH_EXEC "/tmp"
#define SCRATCH_NOEXEC "/noexec"

static char **init_envp;

/* The exec request of a dispatching init: run the helper at `path` on the
 * console, with the scratch tmpfs (noexec: the noexec one) as its DIR. The
 * answer comes once execve has succeeded, which a close-on-exec pipe tells;
 * then init waits until that helper exits at the end-of-file the harness
 * sends, and reads requests again. */
static void do_exec(const char *id)
{
	char *argv[3] = { (char *)rq.str[K_path],
			  (char *)(HAS(K_noexec) && rq.num[K_noexec] ? SCRATCH_NOEXEC : SCRATCH_EXEC), 0 };
	int p[2], err = 0, status;
	long pid, r;
	if (sys(__NR_pipe2, (ulong)p, O_CLOEXEC, 0, 0, 0) < 0 ||
	    (pid = sys(__NR_clone, SIGCHLD, 0, 0, 0, 0)) < 0) {
		protocol_error(id, "exec", "pipe2 or clone failed");
		return;
	}
	if (pid == 0) {
		sys(__NR_close, p[0], 0, 0, 0, 0);
		err = -sys(__NR_execve, (ulong)argv[0], (ulong)argv, (ulong)init_envp, 0, 0);
		sys(__NR_write, p[1], (ulong)&err, sizeof err, 0, 0);
		sys_exit(127);
	}
	sys(__NR_close, p[1], 0, 0, 0, 0);
	while ((r = sys(__NR_read, p[0], (ulong)&err, sizeof err, 0, 0)) == -EINTR)
		;
	sys(__NR_close, p[0], 0, 0, 0, 0);
	if (r > 0) {	/* ENOEXEC, say, which the vocabulary does not name */
		char number[24];
		struct buf m = { number, 0, sizeof number - 1 };
		puts_(&m, "errno ");
		put_u64(&m, err);
		m.p[m.len] = 0;
		protocol_error(id, "exec failed", m.p);
	} else {
		puts_(&out, "{\"id\":");
		put_jstr(&out, id);
		puts_(&out, ",\"exec\":");
		put_jstr(&out, argv[0]);
		puts_(&out, "}");
		send();
	}
	while (wait_child(pid, &status) == -EINTR)
		;
}

/* Run as pid 1 without DIR, the helper is /init of an initramfs (PROTOCOL.md,
 * init mode). The kernel opened /dev/console as descriptors 0-2; the scratch
 * directory is a tmpfs of its own on /tmp, mounted noexec when the kernel
 * command line says MMAP2_SCRATCH=noexec (the kernel hands such words to init
 * in its environment). At EOF the machine is powered off. */
static void power_off(void)
{
	sys(__NR_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2,
	    LINUX_REBOOT_CMD_POWER_OFF, 0, 0);
	sys_exit(0);	/* init exits, the kernel panics: panic=-1 ends it too */
}

static void init_mount(const char *where, ulong flags)
{
	long r = sys(__NR_mount, (ulong)"tmpfs", (ulong)where, (ulong)"tmpfs", flags, 0);
	if (r < 0) {	/* no scratch directory: say why on the console */
		struct buf m = { child_mem, 0, OUT_CAP };
		const char *en = errno_name(-r);
		puts_(&m, "mmap2_helper: mount tmpfs on ");
		puts_(&m, where);
		puts_(&m, ": ");
		if (en)
			puts_(&m, en);
		else
			put_u64(&m, -r);
		putch(&m, '\n');
		write_all(2, m.p, m.len);
		power_off();
	}
}

/* Every byte through a guest's serial console costs (about 5 us of TCG a
 * byte on the 686 kernel, measured), and its echo would send every request back:
 * off, for init and every helper it starts on the console. The harness needs
 * no echo (PROTOCOL.md). */
static void init_console_quiet(void)
{
	struct termios t;
	if (!sys(__NR_ioctl, 0, TCGETS, (ulong)&t, 0, 0)) {
		t.c_lflag &= ~(tcflag_t)ECHO;
		sys(__NR_ioctl, 0, TCSETS, (ulong)&t, 0, 0);
	}
}

/* The scratch tmpfs, noexec where the kernel command line says MMAP2_SCRATCH=noexec;
 * a dispatching init (MMAP2_INIT=dispatch) mounts a noexec one beside it. */
static const char *init_scratch(char **envp)
{
	ulong flags = MS_NOSUID | MS_NODEV;
	init_envp = envp;
	for (; *envp; envp++) {
		if (streq(*envp, "MMAP2_SCRATCH=noexec"))
			flags |= MS_NOEXEC;
		if (streq(*envp, INIT_DISPATCH))
			dispatching = 1;
	}
	init_mount(SCRATCH_EXEC, flags);
	if (dispatching)
		init_mount(SCRATCH_NOEXEC, MS_NOSUID | MS_NODEV | MS_NOEXEC);
	return SCRATCH_EXEC;
}

/* ---- main loop ---- */

static char line_buf[LINE_CAP];

static void helper_main(char **argv, char **envp)
{
	char **e = envp;
	ulong *av;
	size_t len = 0, scan = 0, i;
	int too_long = 0, init;

	/* The auxiliary vector follows envp's terminating NULL. */
	while (*e)
		e++;
	for (av = (ulong *)(e + 1); av[0]; av += 2)
		if (av[0] == AT_PAGESZ)
			auxv_pagesz = av[1];
	init = argv[0] && !argv[1] && sys(__NR_getpid, 0, 0, 0, 0, 0) == 1;
	if (init) {
		dir = init_scratch(envp);
		init_console_quiet();
		/* Input sent before the console is open is lost: say when to start. */
		write_all(1, INIT_READY "\n", sizeof INIT_READY);
	} else if (!argv[0] || !argv[1]) {
		write_all(2, "usage: mmap2_helper DIR\n", 24);
		sys_exit(2);
	} else {
		dir = argv[1];
		warm_case_path();
	}

	for (;;) {
		long r;
		for (i = scan; i < len && line_buf[i] != '\n'; i++)
			;
		if (i < len) {
			line_buf[i] = 0;
			if (too_long)
				protocol_error(0, "line too long", 0);
			else
				handle_line(line_buf);
			too_long = 0;
			/* Move the rest of the input to the front. */
			for (scan = 0, i++; i < len; )
				line_buf[scan++] = line_buf[i++];
			len = scan;
			scan = 0;
			continue;
		}
		scan = len;
		if (len == LINE_CAP - 1) {	/* drop it; answer at its end */
			too_long = 1;
			len = scan = 0;
		}
		r = sys(__NR_read, 0, (ulong)line_buf + len, LINE_CAP - 1 - len, 0, 0);
		if (r == -EINTR)
			continue;
		if (r <= 0)
			break;
		len += r;
	}
	/* A last line without a newline still gets its answer. */
	if (too_long) {
		protocol_error(0, "line too long", 0);
	} else if (len) {
		line_buf[len] = 0;
		handle_line(line_buf);
	}
	if (init)
		power_off();
	sys_exit(0);
}

#ifdef HELPER_FREESTANDING
void helper_start(ulong *sp) __attribute__((noreturn, used));
void helper_start(ulong *sp)
{
	char **argv = (char **)(sp + 1);
	helper_main(argv, argv + sp[0] + 1);
	for (;;)
		;
}
#else
int main(int argc, char **argv, char **envp)
{
	(void)argc;
	helper_main(argv, envp);
	return 0;
}
#endif
