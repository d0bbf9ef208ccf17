package = "lua-devmapper"
version = "scm-1"
-- where the project is published; until then, luarocks make in a checkout (see the README)
source = {url = "git+https://github.com/lua-devmapper/lua-devmapper.git"}
description = {
  summary = "Script Linux device-mapper from Lua: devices, tables, loops, keys, snapshots",
  license = "MIT",
}
dependencies = {"lua >= 5.4, < 5.5"}
external_dependencies = {
  DEVMAPPER = {header = "libdevmapper.h", library = "devmapper"},
  OPENSSL = {header = "openssl/evp.h", library = "crypto"},
  CRYPTSETUP = {header = "libcryptsetup.h", library = "cryptsetup"},
}
-- The Makefile builds the C module and dmlua (the interpreter with the
-- module built in) and installs them where LuaRocks says.
build = {
  type = "make",
  build_target = "rock",
  build_variables = {CFLAGS = "$(CFLAGS)"},
  install_target = "install-rock",
  install_variables = {LUADIR = "$(LUADIR)", LIBDIR = "$(LIBDIR)", BINDIR = "$(BINDIR)"},
}
