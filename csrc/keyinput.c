/* Passphrases and key files: the terminal prompt, files, pipes and stdin,
 * read straight into locked memory. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>
#include <sys/stat.h>

#include <openssl/crypto.h>

#include "internal.h"

/*
 * Read one line from a terminal with echo off, straight into k (as
 * cryptsetup's interactive entry). More than max bytes is refused, the rest
 * of the line drained. Returns 0, or -1 with errno set (EMSGSIZE: too long).
 */
static int tty_line(struct key *k, int fd, const char *prompt, size_t max)
{
	struct termios orig, quiet;
	int err = 0, restore;
	size_t n = 0;
	unsigned char c;
	if (key_grow(k, max) < 0)
		return -1;
	restore = tcgetattr(fd, &orig) == 0;
	if (restore) {
		quiet = orig;
		quiet.c_lflag &= ~(tcflag_t)ECHO;
		tcsetattr(fd, TCSAFLUSH, &quiet);
	}
	if (prompt && write(fd, prompt, strlen(prompt)) < 0)
		err = errno;
	while (!err) {
		ssize_t got = read(fd, &c, 1);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			err = errno;
		if (got <= 0 || c == '\n')
			break;
		if (n == max)
			err = EMSGSIZE;	/* keep draining the line */
		else
			k->bytes[n++] = c;
	}
	while (err == EMSGSIZE && read(fd, &c, 1) == 1 && c != '\n')
		;
	secure_wipe(&c, 1);
	if (restore) {
		tcsetattr(fd, TCSAFLUSH, &orig);
		ssize_t echo = write(fd, "\n", 1);	/* for the Enter key; cosmetic */
		(void)echo;
	}
	k->size = n;
	errno = err;
	return err ? -1 : 0;
}

/* Raise with the key wiped; err EMSGSIZE means over max. */
static int read_failed(lua_State *L, struct key *k, const char *op, const char *name, int err, size_t max)
{
	key_release(k);
	if (err == EMSGSIZE)
		return raise_error(L, op, name, EINVAL, "input longer than the maximum of %d bytes", (int)max);
	return raise_error(L, op, name, err, "cannot read the passphrase");
}

/* core.key_prompt(text, max, verify): ask on /dev/tty, echo off. */
static int l_prompt(lua_State *L)
{
	const char *text = luaL_optstring(L, 1, "Passphrase: ");
	size_t max = (size_t)luaL_optinteger(L, 2, 512);
	int verify = lua_toboolean(L, 3);
	int fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
	struct key *k, *again;
	if (fd < 0)
		return raise_error(L, "key.prompt", "/dev/tty", errno, "no terminal to ask on");
	k = key_push(L, "prompt");
	if (tty_line(k, fd, text, max) < 0) {
		int err = errno;
		close(fd);
		return read_failed(L, k, "key.prompt", "/dev/tty", err, max);
	}
	if (k->size == 0) {
		close(fd);
		key_release(k);
		return raise_error(L, "key.prompt", "/dev/tty", EINVAL, "empty passphrase refused");
	}
	if (verify) {
		again = key_push(L, "prompt");
		if (tty_line(again, fd, "Verify passphrase: ", max) < 0) {
			int err = errno;
			close(fd);
			key_release(k);
			return read_failed(L, again, "key.prompt", "/dev/tty", err, max);
		}
		if (again->size != k->size || CRYPTO_memcmp(again->bytes, k->bytes, k->size)) {
			close(fd);
			key_release(k);
			key_release(again);
			return raise_error(L, "key.prompt", "/dev/tty", EINVAL, "passphrases do not match");
		}
		key_release(again);
		lua_pop(L, 1);
	}
	close(fd);
	return 1;
}

/* Skip offset bytes: seek, or read them away from a pipe. 0, or -1 with errno. */
static int skip_bytes(int fd, off_t offset)
{
	unsigned char junk[512];
	if (offset == 0 || lseek(fd, offset, SEEK_CUR) >= 0)
		return 0;
	while (offset > 0) {
		ssize_t got = read(fd, junk, offset < (off_t)sizeof(junk) ? (size_t)offset : sizeof(junk));
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			break;
		offset -= got;
	}
	secure_wipe(junk, sizeof(junk));
	return offset > 0 ? -1 : 0;
}

/*
 * Read up to want bytes into k, growing it from a page (or the file's
 * size); with newline set, one byte at a time so that nothing after the
 * newline is consumed. 0, 1 when a newline ended the input, or -1 with
 * errno set.
 */
static int read_bytes(struct key *k, int fd, size_t want, int newline)
{
	struct stat st;
	size_t first = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (size_t)st.st_size < want
	               ? (size_t)st.st_size : want < 4096 ? want : 4096;
	if (key_grow(k, first) < 0)
		return -1;
	while (k->size < want) {
		ssize_t got;
		if (k->size == k->cap && key_grow(k, k->cap * 2 < want ? k->cap * 2 : want) < 0)
			return -1;
		got = read(fd, k->bytes + k->size, newline ? 1 : (k->cap < want ? k->cap : want) - k->size);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			return -1;
		if (got == 0)
			break;
		if (newline && k->bytes[k->size] == '\n') {
			k->bytes[k->size] = 0;
			return 1;
		}
		k->size += (size_t)got;
	}
	return 0;
}

/*
 * core.key_read(path_or_fd, size, max, offset, newline): cryptsetup's rules.
 * A terminal gives one line, echo off. Otherwise, with newline set (stdin
 * by default), input ends at the first newline; without it (key files) every
 * byte counts. size > 0: exactly that many bytes, else all up to max.
 * Empty or over-max input is refused; an empty line is an empty passphrase.
 */
static int l_read(lua_State *L)
{
	size_t size = (size_t)luaL_optinteger(L, 2, 0);
	size_t max = (size_t)luaL_optinteger(L, 3, 8192 * 1024);
	lua_Integer offset = luaL_optinteger(L, 4, 0);
	int newline = lua_isnil(L, 5) ? -1 : lua_toboolean(L, 5);
	int fd, own = 0, r, err;
	const char *name;
	struct key *k;
	lua_settop(L, 5);
	k = key_push(L, "read");	/* at 6 */
	if (lua_type(L, 1) == LUA_TNUMBER) {
		fd = (int)luaL_checkinteger(L, 1);
		name = lua_pushfstring(L, "fd %d", fd);
	} else {
		name = luaL_checkstring(L, 1);
		if (strcmp(name, "-") == 0)
			fd = STDIN_FILENO;
		else if ((fd = open(name, O_RDONLY | O_NOCTTY | O_CLOEXEC)) < 0)
			return raise_error(L, "key.read", name, errno, "cannot open");
		else
			own = 1;
	}
	if (isatty(fd) && offset) {
		r = -1;
		errno = ESPIPE;
	} else if (isatty(fd))
		r = tty_line(k, fd, NULL, size ? size : max);
	else
		r = skip_bytes(fd, (off_t)offset) < 0 ? -1
		    : read_bytes(k, fd, size ? size : max + 1,
				 /* a file we opened may be fd 0 when stdin is closed: still a file */
				 newline < 0 ? !own && fd == STDIN_FILENO : newline);
	err = errno;
	if (own)
		close(fd);
	if (r < 0)
		return read_failed(L, k, "key.read", name, err, max);
	/* an empty line is an empty passphrase, as cryptsetup takes it; no input at all is refused */
	if (k->size == 0 && r != 1) {
		key_release(k);
		return raise_error(L, "key.read", name, EINVAL, "nothing to read (empty input refused)");
	}
	if (!size && k->size > max)
		return read_failed(L, k, "key.read", name, EMSGSIZE, max);
	if (size && k->size != size) {
		int got = (int)k->size;
		key_release(k);
		return raise_error(L, "key.read", name, EINVAL, "wanted %d bytes, the input has %d", (int)size, got);
	}
	lua_settop(L, 6);
	return 1;
}

void keyinput_open(lua_State *L)
{
	static const luaL_Reg core[] = {
		{"key_prompt", l_prompt},
		{"key_read", l_read},
		{NULL, NULL}
	};
	luaL_setfuncs(L, core, 0);
}
