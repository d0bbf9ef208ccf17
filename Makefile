# lua-devmapper: build, dmlua, test, demo, install.
PKGS    = lua5.4 devmapper openssl libcryptsetup
CFLAGS ?= -O2 -g
override CFLAGS += -std=gnu11 -pthread -Wall -Wextra -fPIC $(shell pkg-config --cflags $(PKGS))
LDLIBS  = $(shell pkg-config --libs $(PKGS)) -lm -ldl -pthread
CORE    = csrc/core.c csrc/dm.c csrc/loop.c csrc/blkdev.c csrc/secure.c csrc/kdf.c \
          csrc/keyinput.c csrc/keyring.c csrc/preflight.c \
          csrc/critical.c csrc/lock.c csrc/spawn.c csrc/luks.c csrc/verity.c csrc/progress.c
LUASRC  = $(wildcard lua/devmapper/*.lua lua/devmapper/targets/*.lua)
PREFIX ?= /usr/local
LUAVER  = 5.4
BUSTED  = build/dmlua /usr/bin/busted
# Where the kernel has device-mapper and we are root, the kernel lane can run
# here (make test SANDBOX=no); by default it runs in the sandbox VM.
SANDBOX ?= yes
# In the sandbox the kernel lane runs twice: without udev, then with
# systemd-udevd running in the VM as on a real machine. The table corpus
# (#corpus: the kernel's verdict on each table's grammar, which udev does
# not change) runs in the first only.
ifeq ($(SANDBOX),no)
KERNEL_LANES = "kernel lane (this machine)" "$(BUSTED) --tags=kernel spec"
else
KERNEL_LANES = "kernel lane (sandbox VM, no udev)" "build/dmlua --sandbox /usr/bin/busted --tags=kernel spec" \
               "kernel lane (sandbox VM, udev)" "build/dmlua --sandbox --udev /usr/bin/busted --tags=kernel --exclude-tags=corpus spec"
endif

# Debian packages needed to build, test and run the sandbox.
DEBS = gcc make pkg-config lua5.4 liblua5.4-dev libdevmapper-dev libssl-dev libcryptsetup-dev libreadline-dev \
       lua-busted qemu-system-x86 linux-image-amd64 busybox-static \
       dmsetup cryptsetup-bin keyutils gdb udev strace luarocks lua-ldoc

all: build/devmapper/core.so build/dmlua build/liblua-devmapper.so build/liblua-devmapper.a

build/devmapper/core.so: $(CORE) csrc/internal.h csrc/devmapper.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -shared -o $@ $(CORE) $(LDLIBS)

build/embedded.c: csrc/embed.lua $(LUASRC)
	@mkdir -p $(@D)
	lua5.4 csrc/embed.lua $(LUASRC) > $@

# dmlua's interactive mode edits lines and keeps history with readline, as lua5.4 does
DMLUA_FLAGS = -DDMLUA_READLINE -lreadline

build/dmlua: csrc/dmlua.c build/embedded.c $(CORE) csrc/internal.h csrc/devmapper.h
	$(CC) $(CFLAGS) -Icsrc -o $@ csrc/dmlua.c build/embedded.c $(CORE) $(LDLIBS) $(DMLUA_FLAGS) -Wl,-E

# For C programs that embed Lua: the core and the Lua modules in one library
# (shared and static), devmapper.h and a pkg-config file.
OBJS = $(patsubst csrc/%.c,build/obj/%.o,$(CORE)) build/obj/embedded.o
build/obj/%.o: csrc/%.c csrc/internal.h csrc/devmapper.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Icsrc -c -o $@ $<
build/obj/embedded.o: build/embedded.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Icsrc -c -o $@ $<
build/liblua-devmapper.so: $(OBJS)
	$(CC) -shared -Wl,-soname,liblua-devmapper.so.0 -o $@ $(OBJS) $(LDLIBS)
build/liblua-devmapper.a: $(OBJS)
	rm -f $@ && ar rcs $@ $(OBJS)
# the pkg-config file: relocatable (its prefix is where it lies), so that a
# tree installed with DESTDIR, or moved, builds as it is
define PC
prefix=$${pcfiledir}/../..
libdir=$${prefix}/lib
includedir=$${prefix}/include

Name: lua-devmapper
Description: Linux device-mapper for Lua 5.4, for C programs that embed Lua
Version: scm
Requires: lua5.4
Requires.private: devmapper openssl libcryptsetup
Cflags: -I$${includedir}/lua-devmapper
Libs: -L$${libdir} -llua-devmapper
Libs.private: -lm -ldl -pthread
endef
export PC

# The same interpreter built with AddressSanitizer and UBSan, for the fuzzer.
SANITIZE = -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
build/asan/dmlua: csrc/dmlua.c build/embedded.c $(CORE) csrc/internal.h csrc/devmapper.h
	@mkdir -p $(@D)
	$(CC) $(SANITIZE) -std=gnu11 -Wall -Wextra $(shell pkg-config --cflags $(PKGS)) -Icsrc -o $@ \
	  csrc/dmlua.c build/embedded.c $(CORE) $(LDLIBS) $(DMLUA_FLAGS) -Wl,-E

# The API reference (LDoc, config.ld): build/doc/index.html. make install
# builds it with the ldoc it finds (make doc installs lua-ldoc first).
DOCSRC = config.ld doc/ldoc_text.lua $(LUASRC) $(wildcard doc/api/*.lua)
build/doc/index.html: $(DOCSRC)
	@rm -rf build/doc
	LUA_PATH="doc/?.lua;;" ldoc .
doc: deps build/doc/index.html

# Installs whatever Debian package is missing (needs root and apt-get).
deps:
	@missing=$$(for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing: $$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

# The lanes: host specs (no kernel), then the #kernel specs. Every lane
# always runs; the target fails if any did.
test: deps all
	@rc=0; \
	echo "== host lane"; $(BUSTED) --exclude-tags=kernel spec || rc=1; \
	set -- $(KERNEL_LANES); \
	while [ $$# -gt 0 ]; do echo "== $$1"; sh -c "$$2" || rc=1; shift 2; done; \
	exit $$rc

test-host: all
	$(BUSTED) --exclude-tags=kernel spec

# The fuzzer over everything that reads user text: a million inputs under
# AddressSanitizer and UBSan (FUZZ_N and FUZZ_SEED to change them).
FUZZ_N ?= 1000000
fuzz: deps all build/asan/dmlua
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  build/asan/dmlua spec/fuzz/run.lua $(FUZZ_N) $(FUZZ_SEED)

demo: deps all
	build/dmlua --sandbox examples/demo.lua

build/bench-floor: bench/floor.c
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)

# N devices per batch, ROUNDS interleaved rounds, stacks of SCALE members
# (a VM with room for a thousand dm-crypt devices).
N ?= 100
ROUNDS ?= 5
SCALE ?= 10,100,1000
bench: deps all build/bench-floor
	DMLUA_SANDBOX_MEMORY=4G build/dmlua --sandbox bench/run.lua $(N) $(ROUNDS) $(SCALE)

install: all build/doc/index.html
	install -D -m 755 build/dmlua $(DESTDIR)$(PREFIX)/bin/dmlua
	install -D -m 755 build/devmapper/core.so $(DESTDIR)$(PREFIX)/lib/lua/$(LUAVER)/devmapper/core.so
	install -d $(DESTDIR)$(PREFIX)/share/lua/$(LUAVER)/devmapper/targets
	install -m 644 $(wildcard lua/devmapper/*.lua) $(DESTDIR)$(PREFIX)/share/lua/$(LUAVER)/devmapper/
	install -m 644 $(wildcard lua/devmapper/targets/*.lua) $(DESTDIR)$(PREFIX)/share/lua/$(LUAVER)/devmapper/targets/
	install -D -m 755 build/liblua-devmapper.so $(DESTDIR)$(PREFIX)/lib/liblua-devmapper.so.0
	ln -sf liblua-devmapper.so.0 $(DESTDIR)$(PREFIX)/lib/liblua-devmapper.so
	install -D -m 644 build/liblua-devmapper.a $(DESTDIR)$(PREFIX)/lib/liblua-devmapper.a
	install -D -m 644 csrc/devmapper.h $(DESTDIR)$(PREFIX)/include/lua-devmapper/devmapper.h
	install -d $(DESTDIR)$(PREFIX)/lib/pkgconfig
	printf '%s\n' "$$PC" > $(DESTDIR)$(PREFIX)/lib/pkgconfig/lua-devmapper.pc
	install -D -m 644 doc/dmlua.1 $(DESTDIR)$(PREFIX)/share/man/man1/dmlua.1
	install -D -m 644 doc/devmapper.3 $(DESTDIR)$(PREFIX)/share/man/man3/devmapper.3
	install -d $(DESTDIR)$(PREFIX)/share/doc/lua-devmapper/modules
	install -m 644 build/doc/*.html build/doc/*.css $(DESTDIR)$(PREFIX)/share/doc/lua-devmapper/
	install -m 644 build/doc/modules/*.html $(DESTDIR)$(PREFIX)/share/doc/lua-devmapper/modules/

# LuaRocks (build type "make"): `luarocks make` builds these and installs
# them into the rock's LUADIR, LIBDIR and BINDIR.
rock: build/devmapper/core.so build/dmlua
install-rock: rock
	install -D -m 755 build/dmlua $(BINDIR)/dmlua
	install -D -m 755 build/devmapper/core.so $(LIBDIR)/devmapper/core.so
	install -d $(LUADIR)/devmapper/targets
	install -m 644 lua/devmapper/*.lua $(LUADIR)/devmapper/
	install -m 644 lua/devmapper/targets/*.lua $(LUADIR)/devmapper/targets/

clean:
	rm -rf build

.PHONY: all deps doc test test-host fuzz demo bench install rock install-rock clean
